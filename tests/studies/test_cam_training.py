"""hooklab.studies.cam_training: checkpoints are the training's own weights at those steps
(equal to a training stopped there), cached and read back, CAMs per checkpoint equal the
engine's, the bias experiment's shortcut emerges, bad steps are one clear error."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hooklab.cam import engine
from hooklab.studies import bias
from hooklab.studies import cam_training as CT
from hooklab.studies import train as T
from hooklab.studies.train import TrainConfig, TrainingError
from tests.conftest import total_hooks

TINY = TrainConfig(steps=6, n_train=128, batch_size=32, n_test=0, record_every=0)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(T.CACHE_ENV, str(tmp_path / "cache"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_on_step_sees_every_step_and_changes_nothing():
    seen: dict[int, dict] = {}
    model, _ = T.train(TINY, on_step=lambda s, m: seen.__setitem__(
        s, {k: v.clone() for k, v in m.state_dict().items()}))
    assert sorted(seen) == list(range(TINY.steps + 1))
    assert _same(seen[TINY.steps], model.state_dict())
    plain, _ = T.train(TINY)
    assert _same(plain.state_dict(), model.state_dict())  # reading the weights is passive
    assert not _same(seen[0], seen[TINY.steps])


def test_checkpoints_are_the_weights_of_a_training_stopped_there():
    ck = CT.train_checkpoints(TINY, steps=[0, 3, 6])
    assert ck.steps == (0, 3, 6)
    stopped, _ = T.train(dataclasses.replace(TINY, steps=3))
    assert _same(ck.model(3).state_dict(), stopped.state_dict())
    final, _ = T.train(TINY)
    assert _same(ck.model(6).state_dict(), final.state_dict())
    init = T._build_model(TINY)  # the initial weights the trainer starts from
    assert _same(ck.model(0).state_dict(), init.state_dict())
    for s in ck.steps:  # the activation penalty's training hook is not carried along
        assert total_hooks(ck.model(s)) == 0 and not ck.model(s).training


def test_checkpoints_are_cached_and_read_back(monkeypatch):
    ck = CT.train_checkpoints(TINY, steps=[0, 6])
    assert ck.cached and ck.cached == str(CT.checkpoints_path(TINY, (0, 6)))

    def no_training(*_a, **_k):
        raise AssertionError("trained again instead of reading the cache")

    monkeypatch.setattr(T, "train", no_training)
    again = CT.train_checkpoints(TINY, steps=[6, 0])
    assert again.cached == ck.cached
    for s in (0, 6):
        assert _same(again.model(s).state_dict(), ck.model(s).state_dict())


def test_a_damaged_cache_file_is_retrained(caplog):
    ck = CT.train_checkpoints(TINY, steps=[0, 6])
    with open(ck.cached, "wb") as fh:
        fh.write(b"not a safetensors file")
    again = CT.train_checkpoints(TINY, steps=[0, 6])
    assert _same(again.model(6).state_dict(), ck.model(6).state_dict())
    assert "unreadable checkpoint file" in caplog.text


def test_cams_per_checkpoint_equal_the_engine(no_leak):
    ck = CT.train_checkpoints(TINY, steps=[0, 6])
    x = torch.rand(3, 3, 32, 32)
    cams = CT.cams_over_training(ck, x, method="hirescam", layer="conv2", target=[1, 2, 3])
    assert cams.maps.shape == (2, 3, 32, 32) and cams.steps == (0, 6)
    assert cams.layer == "conv2" and cams.method == "hirescam"
    for k, s in enumerate(ck.steps):
        model = ck.model(s)
        with no_leak(model):
            want = engine.compute(model, x, "hirescam", layer="conv2", target=[1, 2, 3])
        assert torch.allclose(cams.maps[k], want.maps)
        assert cams.targets[k].tolist() == [1, 2, 3]
        probs = torch.softmax(want.logits, 1)[torch.arange(3), torch.tensor([1, 2, 3])]
        assert torch.allclose(cams.probs[k], probs)
        assert cams.preds[k].tolist() == want.logits.argmax(1).tolist()


def test_default_steps_start_at_zero_and_end_at_the_last_step():
    assert CT.checkpoint_steps(150) == [0, 1, 2, 5, 12, 28, 65, 150]
    steps = CT.checkpoint_steps(7, n=20)
    assert steps[0] == 0 and steps[-1] == 7 and steps == sorted(set(steps))


@pytest.mark.parametrize("steps, match", [([0, 7], "0..6"), ([-1], "0..6"), ([], "no checkpoint"),
                                          (["a"], "integers")])
def test_bad_steps_are_one_clear_error(steps, match):
    with pytest.raises(TrainingError, match=match):
        CT.train_checkpoints(TINY, steps=steps)


def test_a_step_not_kept_is_a_clear_error():
    ck = CT.train_checkpoints(TINY, steps=[0, 6])
    with pytest.raises(TrainingError, match="kept: 0, 6"):
        ck.model(3)


def test_the_shortcut_emerges_in_the_bias_experiment():
    """Biased arm (marker names the class w.p. 0.95): at initialisation the maxima are spread
    (about a quarter on the marker, no preference to follow it); after 20 steps the model
    follows the marker and its maps point at it. Wide margins (seen: 0.29 -> 0.9 on the
    marker, follows 0.19 -> 0.8 at step 10 of the full training)."""
    def small(config, steps, progress):
        fast = dataclasses.replace(config, n_train=1024, steps=20, n_test=0)
        return CT.train_checkpoints(fast, steps, progress)

    cams, test, idx = CT.bias_over_training(steps=[0, 20], n_images=4, n_test=200,
                                            checkpoints=small)
    scores = cams.scores.set_index("step")
    assert list(scores.index) == [0, 20]
    assert scores.loc[20, "on_cue"] > scores.loc[0, "on_cue"] + 0.3
    assert scores.loc[20, "follows_cue"] > 0.6 > scores.loc[0, "follows_cue"]
    sums = scores[["on_cue", "on_object", "elsewhere"]].sum(axis=1)
    assert sums.round(6).tolist() == [1.0, 1.0]
    assert cams.maps.shape == (2, 4, 32, 32)
    assert (test.cue_labels[idx] != test.labels[idx]).all()  # shown images: marker misleads
    # each step's scores are evaluate_arm's on the same test split
    arm = bias.evaluate_arm("biased", small(bias.arm_config("biased"), [0, 20], None).model(20),
                            test, method="hirescam")
    assert scores.loc[20, "on_cue"] == pytest.approx(arm.on_cue)
