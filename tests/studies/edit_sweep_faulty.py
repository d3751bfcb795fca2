"""Models that fail on purpose, for the edit-sweep tests (imported through ``HOOKLAB_MODELS``,
also by Ray workers): the seed's SimpleCNN that, when built for seed 1, fails at its third
training forward: ``sweep_raising_cnn`` raises, ``sweep_dying_cnn`` ends its process (a worker
that dies mid-run; in the test process itself, whose pid is ``$HOOKLAB_TEST_DRIVER_PID``, it
raises instead). Built for any other seed they train normally."""

from __future__ import annotations

import os

import torch

from hooklab.models import registry
from hooklab.models.zoo import SimpleCNN

#: The seed whose trials fail, and the training forward (0-based) that fails.
FAILING_SEED, FAILING_FORWARD = 1, 2
DRIVER_PID_ENV = "HOOKLAB_TEST_DRIVER_PID"


class _Faulty(SimpleCNN):
    def __init__(self, die: bool) -> None:
        super().__init__(num_classes=6)
        self.fails = torch.initial_seed() == FAILING_SEED  # get_model seeds before building
        self.die = die
        self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fails and self.training and torch.is_grad_enabled():
            if self.forwards == FAILING_FORWARD:
                if self.die and str(os.getpid()) != os.environ.get(DRIVER_PID_ENV):
                    os._exit(3)
                raise RuntimeError("injected fault at the third training forward")
            self.forwards += 1
        return super().forward(x)


for _name, _die in (("sweep_raising_cnn", False), ("sweep_dying_cnn", True)):
    if registry.entry(_name) is None:
        registry.register(_name, (lambda d=_die: _Faulty(d)), input_shape=(3, 32, 32),
                          description="edit-sweep tests: fails for seed 1")
