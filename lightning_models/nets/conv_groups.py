"""A fast CIFAR-10 CNN in the layout of the public speed records (airbench, hlb-CIFAR10).

Those records train a plain, shallow, wide CNN rather than a ResNet: a stem convolution, then
groups of two 3x3 convolutions with a 2x2 max pooling right after the first one (so the second
conv, its BatchNorm and its activation run on a quarter of the pixels), GELU activations, global
max pooling and one Linear layer whose outputs are scaled down (airbench multiplies its logits by
1/9: the net starts near uniform predictions and label-smoothed targets are not chased with huge
logits). Three groups take 32x32 images to 4x4 before the pooling.

Two stems: an ordinary learned 3x3 conv with BatchNorm (``stem="conv3x3"``), or airbench's
frozen patch whitening (``stem="whiten2x2"``): a 2x2 conv without padding whose filters are the
eigenvectors of the covariance of the training images' 2x2 patches, each scaled by one over the
square root of its eigenvalue and kept with its negative, then GELU. Its filters are set from the
first training batch of a run (:meth:`ConvGroupsNet.fit_to_batch`, which the classifier calls)
and never trained; only its bias is. It decorrelates the input so that the first learned layer
starts on whitened patches, and it is the cheaper stem on a CPU (no BatchNorm at full size).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from lightning_models.checks import LabError

STEMS = ("conv3x3", "whiten2x2")


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


class PatchWhitening(nn.Conv2d):
    """A 2x2 conv (no padding) from ``c_in`` to ``8 * c_in`` channels whose weights
    :meth:`fit` sets from images and which no optimizer changes (``requires_grad=False``); its
    bias trains. ``fitted`` is a buffer, so a checkpoint carries both the filters and the fact."""

    def __init__(self, c_in: int, eps: float = 5e-4):
        super().__init__(c_in, 2 * 4 * c_in, kernel_size=2, bias=True)
        self.weight.requires_grad_(False)
        self.eps = eps
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, x: torch.Tensor, mean: Callable[[torch.Tensor], torch.Tensor] | None = None):
        """Set the filters from ``x`` (normalised images ``(B, C, H, W)``); ``mean`` averages
        the patch covariance over processes (DDP), so that every process gets the same filters,
        those of the global batch."""
        c = x.shape[1]
        # (B, C, H-1, W-1, 2, 2) -> one row per patch, in the weight's (C, kh, kw) order
        patches = x.float().unfold(2, 2, 1).unfold(3, 2, 1)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * 4).double()
        covariance = patches.T @ patches / patches.shape[0]
        if mean is not None:
            covariance = mean(covariance)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + self.eps)[:, None]
        filters = filters.flip(0).reshape(c * 4, c, 2, 2)  # the largest eigenvalue first
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight.dtype))
        self.fitted.fill_(True)


class ConvGroupsNet(nn.Module):
    """Stem conv → BN → GELU, one :class:`ConvGroup` per width, global max pooling, Linear.

    574,880 parameters at the default widths (32, 64, 128, 128) with 3 channels and 10 classes.

    Args:
        widths: the stem's channels, then each group's; every group halves the resolution.
            The whitening stem has ``8 * in_channels`` (24 for colour images).
        logit_scale: the Linear layer's outputs are multiplied by it (airbench: 1/9).
        stem: ``"conv3x3"`` (learned, with BatchNorm) or ``"whiten2x2"`` (see the module
            docstring; its output is one pixel smaller than the image).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        widths: Sequence[int] = (32, 64, 128, 128),
        logit_scale: float = 1 / 9,
        stem: str = "conv3x3",
    ):
        super().__init__()
        widths = [int(w) for w in widths]
        if stem not in STEMS:
            raise LabError(f"model.net.stem={stem!r} is not a stem; use one of {', '.join(STEMS)}")
        if stem == "whiten2x2" and widths and widths[0] != 8 * in_channels:
            raise LabError(
                f"model.net.widths starts with {widths[0]}, but the whitening stem has "
                f"{8 * in_channels} channels (two filters per dimension of a 2x2 patch of "
                f"{in_channels} channel(s)); make the first width {8 * in_channels}"
            )
        if len(widths) < 2 or min(widths) < 1:
            raise LabError(
                "model.net.widths must be the stem's and at least one group's channel counts "
                f"(positive), got {widths}"
            )
        if image_size - (stem == "whiten2x2") < 2 ** (len(widths) - 1):
            raise LabError(
                f"model.net.widths has {len(widths) - 1} groups, each halving the image, too many "
                f"for {image_size}x{image_size} images with the {stem} stem; give fewer widths"
            )
        layers: list[nn.Module] = (
            [PatchWhitening(in_channels), nn.GELU()]
            if stem == "whiten2x2"
            else [
                nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.GELU(),
            ]
        )
        layers += [ConvGroup(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(widths[-1], num_classes, bias=False)
        self.logit_scale = float(logit_scale)

    def fit_to_batch(
        self, x: torch.Tensor, mean: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> None:
        """Fit the whitening stem to a training batch unless it is fitted already (a resumed
        run's checkpoint holds its filters); ``mean``: see :meth:`PatchWhitening.fit`."""
        stem = self.features[0]
        if isinstance(stem, PatchWhitening) and not bool(stem.fitted):
            stem.fit(x, mean)

    def forward(self, x):
        return self.classifier(self.features(x)) * self.logit_scale
