"""A small all-strided CNN for time-to-accuracy runs on a CPU (the lab's speed records).

LeNet-5's cost on a CPU is not its FLOPs (0.8 MFLOP forward per 28x28 image) but its full-size
activations: a 6-channel 28x28 map is convolved, normalised, activated and max-pooled at full
resolution, all memory-bound passes that a 6-channel convolution cannot amortise. Downsampling in
the very first convolution (stride 2, as in airbench's and ResNet's stems) shrinks every map after
it fourfold, so this net does more arithmetic per image than LeNet-5 (1.2 MFLOP forward at the
default widths) yet trains in about 0.6 of its time per image, with wider (16-64) channels that
the CPU's convolution kernels use well.

Layers: conv k x k, stride 2 (the stem) → BN → ReLU, then one 3x3 stride-2 conv → BN → ReLU per
further width, then one Linear layer on either the global max (``head="max"``: any image size,
the strongest response per channel wherever it lies, enough for digits) or the whole last map
flattened (``head="flatten"``: where on the image a feature lies, which garments need: on
FashionMNIST it measured 91.3% against 90.3% for max pooling, 7 epochs). Convolutions carry no
bias (BatchNorm follows each); PyTorch's default init.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lightning_models.checks import LabError
from lightning_models.nets._shapes import flat_features


class StridedConvNet(nn.Module):
    """Strided conv + BatchNorm + ReLU stages, global max pooling, Linear.

    24,314 parameters on 1x28x28 with 10 classes at the default widths (16, 32, 64) and
    ``head="max"``; 33,914 with ``head="flatten"`` (the last map is 64x4x4).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        widths: Sequence[int] = (16, 32, 64),
        stem_kernel: int = 5,
        head: str = "max",
    ):
        super().__init__()
        widths = [int(w) for w in widths]
        if not widths or min(widths) < 1:
            raise LabError(f"model.net.widths must be positive channel counts, got {widths}")
        if stem_kernel < 1 or stem_kernel % 2 == 0:
            raise LabError(f"model.net.stem_kernel must be odd and positive, got {stem_kernel}")
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c_out in enumerate(widths):
            k = stem_kernel if i == 0 else 3
            layers += [
                nn.Conv2d(c_in, c_out, k, stride=2, padding=k // 2, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        if head not in ("max", "flatten"):
            raise LabError(f"model.net.head must be max or flatten, got {head!r}")
        if head == "max":
            layers.append(nn.AdaptiveMaxPool2d(1))
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        flat = flat_features(self.features, in_channels, image_size, "strided_convnet")
        self.classifier = nn.Linear(flat, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))
