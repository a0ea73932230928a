"""A fast CIFAR-10 CNN in the layout of the public speed records (airbench, hlb-CIFAR10).

Those records train a plain, shallow, wide CNN rather than a ResNet: a stem convolution, then
groups of two 3x3 convolutions with a 2x2 max pooling right after the first one (so the second
conv, its BatchNorm and its activation run on a quarter of the pixels), GELU activations, global
max pooling and one Linear layer whose outputs are scaled down (airbench multiplies its logits by
1/9: the net starts near uniform predictions and label-smoothed targets are not chased with huge
logits). Three groups take 32x32 images to 4x4 before the pooling.

Unlike airbench there is no frozen patch-whitening stem computed from the training images: the
stem here is an ordinary learned 3x3 conv, so the net is a plain ``nn.Module`` built from sizes
alone, like every other net of the lab.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lightning_models.checks import LabError


class ConvGroup(nn.Sequential):
    """conv3x3 → max pool 2x2 → BN → GELU → conv3x3 → BN → GELU."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(c_out),
            nn.GELU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.GELU(),
        )


class ConvGroupsNet(nn.Module):
    """Stem conv → BN → GELU, one :class:`ConvGroup` per width, global max pooling, Linear.

    574,880 parameters at the default widths (32, 64, 128, 128) with 3 channels and 10 classes.

    Args:
        widths: the stem's channels, then each group's; every group halves the resolution.
        logit_scale: the Linear layer's outputs are multiplied by it (airbench: 1/9).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        widths: Sequence[int] = (32, 64, 128, 128),
        logit_scale: float = 1 / 9,
    ):
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1:
            raise LabError(
                "model.net.widths must be the stem's and at least one group's channel counts "
                f"(positive), got {widths}"
            )
        if image_size < 2 ** (len(widths) - 1):
            raise LabError(
                f"model.net.widths has {len(widths) - 1} groups, each halving the image, too many "
                f"for {image_size}x{image_size} images; give fewer widths"
            )
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.GELU(),
        ]
        layers += [ConvGroup(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(widths[-1], num_classes, bias=False)
        self.logit_scale = float(logit_scale)

    def forward(self, x):
        return self.classifier(self.features(x)) * self.logit_scale
