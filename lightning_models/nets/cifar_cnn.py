"""Report 003's open-challenge CNN for CIFAR-10 (Part V, 75.62% test accuracy).

Conv(3→32, k3, pad 1) → ReLU → MaxPool2 → Conv(32→64, k3, pad 1) → ReLU → MaxPool2 →
Dropout2d(0.2) → flatten → Linear 64·8·8 → 512 → ReLU → Dropout(0.5) → Linear 512 → classes.

The report built it with ``nn.Sequential`` and no explicit initialisation, so PyTorch's default
init is kept; ``kaiming=True`` applies the Kaiming-normal init of the report's earlier nets.
The Linear width is written for 32x32 images, so only 3x32x32 input is accepted.
"""

from __future__ import annotations

from torch import nn

from lightning_models.nets._shapes import require_input
from lightning_models.nets.init import initialize


class CifarCNN(nn.Module):
    """Two conv/pool stages and a two-layer classifier; 2,122,186 parameters on 3x32x32."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        dropout2d: float = 0.2,
        dropout: float = 0.5,
        kaiming: bool = False,
    ):
        super().__init__()
        require_input("cifar_cnn", (3, 32), in_channels, image_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Dropout2d(dropout2d),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(64 * 8 * 8, 512),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(512, num_classes),
        )
        if kaiming:
            initialize(self, "kaiming_normal", ["Conv2d", "Linear"])

    def forward(self, x):
        return self.classifier(self.features(x))
