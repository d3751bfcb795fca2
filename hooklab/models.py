"""Model zoo: the seed's SimpleModel and SimpleCNN, addressed by name.

(Extended by the models issue: torchvision architectures, safe weight loading, layer listing.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hooklab.errors import HooklabError


class SimpleModel(nn.Module):
    """The seed's hook example: ``Conv2d(1, 2, 3, padding=1) -> ReLU -> view(-1, 32) -> Linear(32, 10)``.

    Input ``(N, 1, 4, 4)``.
    """

    input_shape = (1, 4, 4)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.relu(x)
        x = x.view(-1, 2 * 4 * 4)
        return self.fc(x)


class SimpleCNN(nn.Module):
    """The seed's CIFAR-10 CNN: three conv/ReLU/max-pool blocks (3→32→64→128), fc 2048→512→10.

    Input ``(N, 3, 32, 32)``. ReLU is functional, exactly as in the seed, so the conv3 output a
    forward hook sees is the pre-ReLU activation the seed's Grad-CAM uses.
    """

    input_shape = (3, 32, 32)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(128 * 4 * 4, 512)
        self.fc2 = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = self.pool(F.relu(self.conv3(x)))
        x = x.view(-1, 128 * 4 * 4)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def seed_model(seed: int = 42) -> SimpleModel:
    """SimpleModel built right after ``torch.manual_seed(seed)``, as in the seed."""
    torch.manual_seed(seed)
    return SimpleModel()


_SEED_ZOO = {"simple_model": SimpleModel, "simple_cnn": SimpleCNN}


def get_model(name: str, seed: int | None = 0) -> nn.Module:
    """Build a zoo model by name with deterministic random weights (``seed``)."""
    key = name.lower().replace("-", "_")
    if key not in _SEED_ZOO:
        raise HooklabError(f"unknown model {name!r}; known: {', '.join(_SEED_ZOO)}")
    if seed is not None:
        torch.manual_seed(seed)
    return _SEED_ZOO[key]().eval()


def input_shape(model: nn.Module) -> tuple[int, ...]:
    """(C, H, W) the model expects, when it declares one."""
    shape = getattr(model, "input_shape", None)
    return tuple(shape) if shape else (3, 224, 224)
