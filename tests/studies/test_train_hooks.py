"""train() with the activation penalty (a forward hook on the CAM layer): no hook is left on the
model when on_step raises at step 0 (before any optimiser step) or later, nor after a normal run."""

from __future__ import annotations

import pytest

from hooklab.recording.inventory import hooks_on
from hooklab.studies.train import TrainConfig, train

SMALL = dict(n_train=64, n_test=0, steps=3, batch_size=16, act_penalty=0.5)


@pytest.mark.parametrize("fail_at", [0, 2])
def test_no_hook_left_when_on_step_raises(fail_at):
    seen = []

    def on_step(step, model):
        seen.append(model)
        assert len(hooks_on(model)) == 1  # the penalty hook is there while training
        if step == fail_at:
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        train(TrainConfig(**SMALL), on_step=on_step)
    assert hooks_on(seen[-1]).empty


def test_no_hook_left_after_a_normal_run():
    model, history = train(TrainConfig(**SMALL))
    assert len(history) == 3 and hooks_on(model).empty
