"""Models that fail on purpose, for the edit-sweep tests (imported through ``HOOKLAB_MODELS``,
also by Ray workers): the seed's SimpleCNN that, when built for seed 1, fails at its third
training forward: ``sweep_raising_cnn`` raises, ``sweep_dying_cnn`` ends its process (a worker
that dies mid-run; in the test process itself, whose pid is ``$HOOKLAB_TEST_DRIVER_PID``, it
raises instead). Built for any other seed they train normally.

Importing this module registers nothing (a test module may import it at collection time without
changing the registry other tests see); :func:`register` registers both, and the module
:data:`MODULE` (``hooklab.testing.sweep_fault_models``, what ``HOOKLAB_MODELS`` names, also in
Ray workers) calls it when imported.

Example:
    >>> os.environ["HOOKLAB_MODELS"] = MODULE
    >>> sweep_edits([""], seeds=(0, 1), model="sweep_raising_cnn", in_process=True)
"""

from __future__ import annotations

import os

import torch

from hooklab.models import registry
from hooklab.models.zoo import SimpleCNN

__all__ = ["DRIVER_PID_ENV", "FAILING_FORWARD", "FAILING_SEED", "MODULE", "NAMES", "register"]

#: The seed whose trials fail, and the training forward (0-based) that fails.
FAILING_SEED, FAILING_FORWARD = 1, 2
#: The test process's pid: there ``sweep_dying_cnn`` raises instead of ending the process.
DRIVER_PID_ENV = "HOOKLAB_TEST_DRIVER_PID"
#: What ``HOOKLAB_MODELS`` / ``--models`` names to load these models.
MODULE = "hooklab.testing.sweep_fault_models"
#: The registered names and whether the model ends its process.
NAMES = {"sweep_raising_cnn": False, "sweep_dying_cnn": True}


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


def register() -> None:
    """Register the faulty models (those not registered yet)."""
    for name, die in NAMES.items():
        if registry.entry(name) is None:
            registry.register(name, (lambda d=die: _Faulty(d)), input_shape=(3, 32, 32),
                              description="edit-sweep tests: fails for seed 1")
