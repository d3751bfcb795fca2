"""The seed's two models, copied literally from seed/000_26329528ebf1271c.txt (the lesson's code,
comments translated), so tests can pin hooklab's models to the lesson and not to themselves.

Do not "tidy" these classes: they are the reference. hooklab.models.zoo must match them parameter
for parameter (names, shapes, initial values after the same ``torch.manual_seed``) and output
for output.
"""

from __future__ import annotations

import torch.nn as nn  # noqa: PLR0402 - as the seed writes it
import torch.nn.functional as F


class SeedSimpleModel(nn.Module):
    """The seed's forward/backward hook example (SEED_NOTES §2), verbatim."""

    def __init__(self):
        super(SeedSimpleModel, self).__init__()  # noqa: UP008 - the seed's spelling
        # conv layer: 1 input channel, 2 output channels, 3x3 kernel, padding 1 keeps the size
        self.conv = nn.Conv2d(1, 2, kernel_size=3, padding=1)
        # ReLU activation
        self.relu = nn.ReLU()
        # fully connected layer: 2*4*4 input features, 10 classes
        self.fc = nn.Linear(2 * 4 * 4, 10)

    def forward(self, x):
        # convolution
        x = self.conv(x)
        # activation
        x = self.relu(x)
        # flatten for the fully connected layer
        x = x.view(-1, 2 * 4 * 4)
        # classification
        x = self.fc(x)
        return x


class SeedSimpleCNN(nn.Module):
    """The seed's CIFAR-10 CNN (SEED_NOTES §5), verbatim."""

    def __init__(self):
        super(SeedSimpleCNN, self).__init__()  # noqa: UP008 - the seed's spelling
        # first conv layer: 3 input channels (colour), 32 outputs, 3x3 kernel, padding 1
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, padding=1)
        # second conv layer: 32 inputs, 64 outputs, 3x3 kernel, padding 1
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        # third conv layer: 64 inputs, 128 outputs, 3x3 kernel, padding 1
        self.conv3 = nn.Conv2d(64, 128, kernel_size=3, padding=1)
        # max pooling 2x2, stride 2: halves the size
        self.pool = nn.MaxPool2d(2, 2)
        # first fully connected layer: 128 * 4 * 4 features (after the convs and pools) -> 512
        self.fc1 = nn.Linear(128 * 4 * 4, 512)
        # second fully connected layer: 512 -> 10 (the CIFAR-10 classes)
        self.fc2 = nn.Linear(512, 10)

    def forward(self, x):
        # conv1, ReLU, max pool: 16x16
        x = self.pool(F.relu(self.conv1(x)))
        # conv2, ReLU, max pool: 8x8
        x = self.pool(F.relu(self.conv2(x)))
        # conv3, ReLU, max pool: 4x4
        x = self.pool(F.relu(self.conv3(x)))
        # flatten the feature maps for the fully connected layers
        x = x.view(-1, 128 * 4 * 4)
        # fc1 followed by ReLU
        x = F.relu(self.fc1(x))
        # fc2 gives the class scores
        x = self.fc2(x)
        return x
