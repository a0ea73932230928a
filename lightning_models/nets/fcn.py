"""Fully connected network of report 000: flatten → Linear 512 → BatchNorm1d → ReLU → Linear."""

from __future__ import annotations

from torch import nn

from lightning_models.nets.init import initialize


class FCN(nn.Module):
    """One hidden layer of ``hidden`` units with BatchNorm; 408,074 parameters on 1x28x28."""

    def __init__(self, in_channels: int, image_size: int, num_classes: int, hidden: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * image_size * image_size, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        initialize(self, "xavier_normal", ["Linear"])

    def forward(self, x):
        return self.net(x)
