"""Shape helpers shared by the architectures: sizes flow from the data, never typed twice."""

from __future__ import annotations

import torch
from torch import nn

from lightning_models.checks import LabError


class InputShapeError(LabError):
    """A network cannot take the input shape its dataset provides."""


def _probe(features: nn.Module, in_channels: int, image_size: int) -> int | None:
    """Values per image that ``features`` yields, or None when the image is too small for it."""
    try:
        with torch.no_grad():
            return features(torch.zeros(1, in_channels, image_size, image_size))[0].numel()
    except RuntimeError:
        return None


def flat_features(features: nn.Module, in_channels: int, image_size: int, model: str) -> int:
    """Number of values ``features`` produces for one ``in_channels x image_size²`` image.

    Probing with a dummy image (in eval mode, so BatchNorm accepts a batch of one) keeps the
    arithmetic in one place instead of repeating conv/pool formulas in every model. An image too
    small for the stack of convolutions and pools is reported in a sentence naming the model, the
    smallest size it takes and the size it got.
    """
    was_training = features.training
    features.eval()
    try:
        flat = _probe(features, in_channels, image_size)
        if flat is None:
            smallest = next(
                s for s in range(image_size + 1, 1025) if _probe(features, in_channels, s)
            )
            needed, given = (
                f"{in_channels}x{smallest}x{smallest}",
                f"{in_channels}x{image_size}x{image_size}",
            )
            raise InputShapeError(
                f"model {model} needs input images of at least {needed}, but the data gives "
                f"{given}; set data.image_size={smallest} or larger, or pick another model"
            )
    finally:
        features.train(was_training)
    return flat


def require_input(model: str, needed: tuple[int, int], in_channels: int, image_size: int) -> None:
    """Refuse any input but ``needed = (channels, size)`` in a sentence naming what to set."""
    channels, size = needed
    if (in_channels, image_size) != (channels, size):
        raise InputShapeError(
            f"model {model} takes only {channels}x{size}x{size} input images, but the data gives "
            f"{in_channels}x{image_size}x{image_size}; set data.in_channels={channels} "
            f"data.image_size={size}, or pick another model"
        )
