"""The LeNet-5 family of reports 000 and 004.

* :class:`LeNet5` — the classic net (tanh, average pooling), report 000.
* :class:`LeNet5Modified` — report 000's best model: BatchNorm after each conv, ReLU, max
  pooling and dropout before the classifier.
* :class:`LeNet5ReLU` — report 004's net: ReLU and max pooling, with an optional log-softmax head
  so that it pairs with ``NLLLoss``.

All three take 1x28x28 MNIST as the reports did (the first conv pads by 2, standing in for the
original 32x32 input); for other sizes the flatten width follows the data instead of breaking.
"""

from __future__ import annotations

from torch import nn

from lightning_models.nets._shapes import flat_features
from lightning_models.nets.init import initialize


def _conv_stack(in_channels: int, act: type[nn.Module], pool: type[nn.Module], bn: bool):
    """conv5(pad 2) → [BN] → act → pool → conv5 → [BN] → act → pool → conv5 → [BN] → act."""
    layers: list[nn.Module] = []
    for c_in, c_out, pad, pooled in (
        (in_channels, 6, 2, True),
        (6, 16, 0, True),
        (16, 120, 0, False),
    ):
        layers.append(nn.Conv2d(c_in, c_out, kernel_size=5, padding=pad))
        if bn:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(act())
        if pooled:
            layers.append(pool(2, stride=2))
    layers.append(nn.Flatten())
    return nn.Sequential(*layers)


class _LeNet5Base(nn.Module):
    """Conv feature stack + two-layer classifier; subclasses pick activation, pooling, extras."""

    name = "lenet5"
    act: type[nn.Module] = nn.Tanh
    pool: type[nn.Module] = nn.AvgPool2d
    batch_norm = False
    dropout = 0.0

    def __init__(self, in_channels: int, image_size: int, num_classes: int):
        super().__init__()
        self.features = _conv_stack(in_channels, self.act, self.pool, self.batch_norm)
        flat = flat_features(self.features, in_channels, image_size, self.name)
        head: list[nn.Module] = [nn.Linear(flat, 84), self.act()]
        if self.dropout:
            head.append(nn.Dropout(self.dropout))
        head.append(nn.Linear(84, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x):
        return self.classifier(self.features(x))


class LeNet5(_LeNet5Base):
    """Classic LeNet-5 (tanh, average pooling), Xavier-normal Linear init; 61,706 parameters."""

    def __init__(self, in_channels: int, image_size: int, num_classes: int):
        super().__init__(in_channels, image_size, num_classes)
        initialize(self, "xavier_normal", ["Linear"])


class LeNet5Modified(_LeNet5Base):
    """Report 000's improved LeNet-5: BatchNorm2d, ReLU, max pooling, Dropout(0.2)."""

    name = "lenet5_modified"
    act = nn.ReLU
    pool = nn.MaxPool2d
    batch_norm = True

    def __init__(self, in_channels: int, image_size: int, num_classes: int, dropout: float = 0.2):
        self.dropout = dropout
        super().__init__(in_channels, image_size, num_classes)
        initialize(self, "xavier_normal", ["Linear"])


class LeNet5ReLU(_LeNet5Base):
    """Report 004's LeNet-5 with ReLU and max pooling; PyTorch's default init.

    ``log_softmax=True`` ends the net with ``LogSoftmax`` so it pairs with ``NLLLoss`` as in the
    report; with cross-entropy the head is not needed (and would be harmless: log-softmax is
    idempotent).
    """

    name = "lenet5_relu"
    act = nn.ReLU
    pool = nn.MaxPool2d

    def __init__(
        self, in_channels: int, image_size: int, num_classes: int, log_softmax: bool = True
    ):
        super().__init__(in_channels, image_size, num_classes)
        self.outputs_log_probs = log_softmax
        if log_softmax:
            self.classifier.append(nn.LogSoftmax(dim=1))
