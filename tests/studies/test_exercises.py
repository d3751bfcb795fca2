"""Exercises: answers are checked against the live computation (not stored numbers), a wrong
answer is marked wrong, bad exercise files and bad answers give one clear message, attempts are
saved as runs and read back per exercise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hooklab.data import datasets
from hooklab.models import zoo
from hooklab.store.runs import TraceStore
from hooklab.studies import exercises as E
from hooklab.studies.exercises import checking as C


@pytest.fixture(scope="module")
def ex_set():
    return E.load_set()


def test_default_set_covers_the_seed_lessons_in_both_languages(ex_set):
    assert [e.kind for e in ex_set.exercises] == ["tensor_grad", "norm_ratio", "cam_peak",
                                                  "backward_len"]
    assert all(e.question and e.question_zh for e in ex_set.exercises)
    assert ex_set.title_zh


@pytest.mark.parametrize("k", [0.5, 0.25, 1.5, 0.0])
def test_tensor_grad_against_autograd(ex_set, k):
    ex = ex_set.get("tensor-k")
    x = torch.tensor([2.0], requires_grad=True)
    y = x ** 2
    h = y.register_hook(lambda g: g * k)
    try:
        (y ** 3).backward()
    finally:
        h.remove()
    live = float(x.grad)
    assert E.truth(ex, k=k) == pytest.approx(live)
    assert E.check(ex, live, k=k).correct
    wrong = E.check(ex, live + 5.0, k=k)
    assert not wrong.correct and wrong.truth == pytest.approx(live)
    assert f"{k:g}" in wrong.explanation


def test_norm_ratio_against_two_recordings(ex_set):
    ex = ex_set.get("halve-conv2")
    net = zoo.get_model("simple_cnn", weights="shapes")
    x = datasets.shapes_sample(102)[0][None]

    def out_grads(scale):
        acts = {}
        hs = [getattr(net, n).register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o))
              for n in ("conv1", "conv2", "conv3")]
        try:
            out = net(x)
            if scale != 1.0:
                acts["conv2"].register_hook(lambda g: g * scale)
            loss = out[0, out[0].argmax()]
            names = ["conv1", "conv2", "conv3"]
            grads = torch.autograd.grad(loss, [acts[n] for n in names])
        finally:
            for h in hs:
                h.remove()
        return dict(zip(names, grads, strict=True))
    plain, halved = out_grads(1.0), out_grads(0.5)
    # conv2's own hook sees the plain gradient; what flows on is the edited one (0.5x)
    expect = {"conv1": float(halved["conv1"].norm() / plain["conv1"].norm()),
              "conv2": 0.5, "conv3": float(halved["conv3"].norm() / plain["conv3"].norm())}
    live = E.truth(ex)
    assert live == pytest.approx(expect, rel=1e-4)
    assert E.check(ex, expect).correct
    wrong = E.check(ex, {"conv1": 1.0, "conv2": 0.5, "conv3": 1.0})  # "only conv2 changes"
    assert not wrong.correct and wrong.parts == {"conv1": False, "conv2": True, "conv3": True}


def test_cam_peak_against_the_cam(ex_set):
    from hooklab.cam.engine import compute

    ex = ex_set.get("cam-peak")
    net = zoo.get_model("simple_cnn", weights="shapes")
    m = compute(net, datasets.shapes_sample(102)[0][None], "gradcam", layer="conv3").maps[0]
    m = m.numpy()
    peak = np.unravel_index(int(m.argmax()), m.shape)
    low = np.unravel_index(int(m.argmin()), m.shape)
    assert E.truth(ex) == [int(peak[0]), int(peak[1])]
    right = E.check(ex, [int(peak[0]), int(peak[1])])
    assert right.correct and right.params["value"] == pytest.approx(1.0)
    assert not E.check(ex, [int(low[0]), int(low[1])]).correct


def test_backward_len_against_the_hooks(ex_set):
    import warnings

    ex = ex_set.get("grad-input-len")
    seen = {}
    for kind in ("backward", "full_backward"):
        model = zoo.seed_model(42)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reg = getattr(model.conv, f"register_{kind}_hook")
            h = reg(lambda m, gi, go, kind=kind: seen.__setitem__(kind, len(gi)))
            try:
                model(torch.randn(1, 1, 4, 4, requires_grad=True)).sum().backward()
            finally:
                h.remove()
    live = E.truth(ex)
    assert live["backward"] == seen["backward"] == 3
    assert live["full_backward"] == seen["full_backward"] == 1
    assert E.check(ex, live).correct
    wrong = E.check(ex, {**live, "backward": 1})
    assert not wrong.correct and wrong.parts["backward"] is False


GOOD = """
format = 1
id = "lab1"
title = "Lab 1"
[[exercises]]
id = "a"
kind = "tensor_grad"
question = "x.grad?"
k = 2
choose_k = false
"""


def test_an_instructor_file_is_read(tmp_path):
    p = tmp_path / "lab1.toml"
    p.write_text(GOOD, encoding="utf-8")
    s = E.load_set(p)
    assert s.id == "lab1" and s.get("a").params["k"] == 2
    assert E.check(s.get("a"), 384.0, k=99).correct  # choose_k = false: the file's k counts


@pytest.mark.parametrize(("text", "message"), [
    ("format = 1\nid = 'x'\n[[exercises]\n", "not valid TOML"),
    ("format = 2\nid = 'x'\n", "format 2 is not supported"),
    ("format = 1\n", "needs an id"),
    ("format = 1\nid = 'x'\n", "no exercises"),
    (GOOD.replace('kind = "tensor_grad"', 'kind = "magic"'), "kind 'magic' is not one of"),
    (GOOD.replace("k = 2", "k = 'two'"), "k must be a number"),
    (GOOD.replace("k = 2", "kk = 2"), "unknown field(s) kk"),
    (GOOD.replace('question = "x.grad?"', ""), "needs a question"),
    (GOOD + GOOD[GOOD.index("[[exercises]]"):], "used twice: a"),
])
def test_bad_files_give_one_clear_message(text, message):
    with pytest.raises(E.ExerciseError) as info:
        E.parse_set(text, "lab.toml")
    assert message in str(info.value) and str(info.value).startswith("lab.toml")
    assert "\n" not in str(info.value)


def test_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(E.ExerciseError, match="cannot read"):
        E.load_set(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe id = 1")
    with pytest.raises(E.ExerciseError, match="not UTF-8"):
        E.load_set(bad)


@pytest.mark.parametrize(("eid", "answer", "message"), [
    ("tensor-k", "ninety", "not a number"),
    ("tensor-k", float("nan"), "not a finite number"),
    ("halve-conv2", {"conv1": 0.5}, "no answer for conv2, conv3"),
    ("cam-peak", [99, 0], "outside the 32x32"),
    ("cam-peak", 5, "a pixel"),
])
def test_bad_answers_give_one_clear_message(ex_set, eid, answer, message):
    with pytest.raises(E.ExerciseError, match=message):
        E.check(ex_set.get(eid), answer)


def test_attempts_saved_and_grouped_per_exercise(tmp_path, ex_set):
    store = TraceStore(tmp_path / "runs")
    ex = ex_set.get("tensor-k")
    ids = [E.save_attempt(store, ex_set, E.check(ex, 96.0), "ana"),
           E.save_attempt(store, ex_set, E.check(ex, 192.0), "bo"),
           E.save_attempt(store, ex_set, E.check(ex_set.get("grad-input-len"),
                                                  C.grad_input_lengths()), "ana")]
    assert store.manifest(ids[0])["author"] == "ana"
    answers = E.class_answers(store)
    assert sorted(answers["run_id"]) == sorted(ids)
    mine = answers[answers["student"] == "bo"].iloc[0]
    assert mine["exercise"] == "tensor-k" and not mine["correct"] and mine["answer"] == "192.0"
    summary = E.answer_summary(answers).set_index("exercise")
    assert summary.loc["tensor-k", "attempts"] == 2 and summary.loc["tensor-k", "correct"] == 1
    assert summary.loc["grad-input-len", "correct_share"] == 1.0
    with pytest.raises(E.ExerciseError, match="name"):
        E.save_attempt(store, ex_set, E.check(ex, 96.0), "  ")
