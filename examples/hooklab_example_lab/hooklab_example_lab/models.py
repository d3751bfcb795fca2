"""The lab's own architecture, registered with hooklab when this module is imported.

``lab_resnet`` is a small residual CNN (not in hooklab's zoo) for 32×32 RGB images of the six
shapes classes. Its weights ship beside this file (``lab_resnet.safetensors``, ~110 KB, made by
``make_weights.py`` from a fixed seed on hooklab's shapes training split); hooklab loads them with
its safe loader (safetensors: no code runs).

Import it to register (``HOOKLAB_MODELS=hooklab_example_lab.models``, ``--models ...``), or install
the package: its ``hooklab.models`` entry point names this module.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import hooklab

#: The shipped weights (trained by ``make_weights.py``).
WEIGHTS = Path(__file__).resolve().parent / "lab_resnet.safetensors"
#: The six classes of hooklab's shapes data set, in its order.
CLASSES = ("circle", "square", "triangle", "cross", "star", "diamond")
#: Pixels in [0, 1] are normalised as (p - 0.5) / 0.5 per channel.
NORMALISE = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class ResidualBlock(nn.Module):
    """``relu(x + conv2(relu(conv1(x))))`` at constant width and resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(x + self.conv2(self.relu1(self.conv1(x))))


@hooklab.models.register("lab_resnet", input_shape=(3, 32, 32), class_names=CLASSES,
                         normalise=NORMALISE, weights=WEIGHTS, cam_layer="block2",
                         description="example lab: residual CNN, 3x32x32, trained on shapes")
class LabResNet(nn.Module):
    """stem (3→16, 32×32) → pool → residual block (16×16) → strided conv (32, 8×8) → residual
    block → global average pool → linear (6 classes)."""

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.block1 = ResidualBlock(16)
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.relu_down = nn.ReLU()
        self.block2 = ResidualBlock(32)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(self.pool(self.relu(self.stem(x))))
        x = self.block2(self.relu_down(self.down(x)))
        return self.fc(torch.flatten(self.gap(x), 1))
