"""Report 001's LeNet-5 for any input size (MNIST 28x28, scene images 128x128).

5*5 conv → ReLU → MaxPool 2 → 5*5 conv → ReLU → MaxPool 2 → flatten → Linear 120 → ReLU →
Linear 84 → ReLU → Linear classes (report 001, section 2.2). The report's 28 May update added the
image size to the constructor "so that every image can be trained on"; here the flatten width is
probed from ``in_channels`` and ``image_size``, and an image too small for the two conv/pool stages
(under 16x16) is refused in one sentence. Convolutions are unpadded, channels 6 and 16 as in
LeNet-5; the report names no initialisation, so PyTorch's default is kept.
"""

from __future__ import annotations

from torch import nn

from lightning_models.nets._shapes import flat_features


class LeNet5Any(nn.Module):
    """LeNet-5 with ReLU and max pooling whose first Linear follows the image size.

    44,426 parameters on 1x28x28 with 10 classes; 1,629,151 on 3x128x128 with 15.
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = flat_features(self.features, in_channels, image_size, "lenet5_any")
        self.classifier = nn.Sequential(
            nn.Linear(flat, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
