"""Report 002's final deep MLP for CIFAR-10, with its L2 penalty on the first Linear layers.

flatten → 1024 → 512 → 64 → 64 → 32 → 16 → classes; every hidden Linear is followed by
BatchNorm1d and ReLU, then dropout 0.6 after hidden layers 1–2, 0.4 after 3–4, 0.25 after 5 and
none after 6 ("레이어6 에서는 뉴런수가 적어 dropout을 적용시키지 않았음"). The report added
λ/(2·batch)·Σ‖W‖² over the weights of its first three Linear layers to the loss, λ = 0.006;
:meth:`MLPDeep.regularization` returns that term and the classifier adds it (logged as train/l2).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from lightning_models.checks import LabError


class MLPDeep(nn.Module):
    """Seven Linear layers ``fc1``..``fc7`` (BatchNorm + ReLU + dropout between); 3,714,746
    parameters on 3x32x32 with 10 classes.

    Args:
        hidden: widths of the hidden layers (report 002: 1024, 512, 64, 64, 32, 16).
        dropout: one dropout rate per hidden layer, applied after its ReLU; 0 means none.
        l2_lambda: λ of the penalty λ/(2·batch)·Σ‖W‖² (report 002: 0.006).
        l2_layers: names of the Linear layers whose weights (not biases) it covers.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        hidden: Sequence[int] = (1024, 512, 64, 64, 32, 16),
        dropout: Sequence[float] = (0.6, 0.6, 0.4, 0.4, 0.25, 0.0),
        l2_lambda: float = 0.006,
        l2_layers: Sequence[str] = ("fc1", "fc2", "fc3"),
    ):
        super().__init__()
        hidden, dropout, l2_layers = list(hidden), list(dropout), list(l2_layers)
        if len(dropout) != len(hidden):
            raise LabError(
                f"model mlp_deep needs one dropout rate per hidden layer ({len(hidden)}), "
                f"but got {len(dropout)}: dropout={dropout}; use 0 for no dropout after a layer"
            )
        self.linear_names = [f"fc{i}" for i in range(1, len(hidden) + 2)]
        unknown = [name for name in l2_layers if name not in self.linear_names]
        if unknown:
            raise LabError(
                f"model mlp_deep has no layer {', '.join(map(repr, unknown))} for l2_layers; "
                f"valid names are {', '.join(self.linear_names)}"
            )
        if l2_lambda < 0:
            raise LabError(f"l2_lambda must be 0 or positive, but got {l2_lambda}")
        self.l2_lambda = float(l2_lambda)
        self.l2_layers = l2_layers

        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        width = in_channels * image_size * image_size
        for i, (out, p) in enumerate(zip(hidden, dropout, strict=True), start=1):
            layers[f"fc{i}"] = nn.Linear(width, out)
            layers[f"bn{i}"] = nn.BatchNorm1d(out)
            layers[f"relu{i}"] = nn.ReLU()
            if p:
                layers[f"drop{i}"] = nn.Dropout(p)
            width = out
        layers[f"fc{len(hidden) + 1}"] = nn.Linear(width, num_classes)
        self.net = nn.Sequential(layers)

    def forward(self, x):
        return self.net(x)

    def regularization(self, batch_size: int) -> torch.Tensor:
        """λ/(2·batch_size)·Σ‖W‖² over the weights of ``l2_layers``, as report 002 added it."""
        total = self.net.fc1.weight.new_zeros(())
        for name in self.l2_layers:
            total = total + getattr(self.net, name).weight.pow(2).sum()
        return self.l2_lambda / (2 * batch_size) * total
