"""Faults injected through the real config, to test how the lab reacts to them."""

from __future__ import annotations

import torch
from torch import nn


class NaNLossAfter(nn.CrossEntropyLoss):
    """Cross-entropy that returns NaN from the ``after_steps``-th training step on (0-based).

    Only training-mode calls count (the loss module follows the classifier's train/eval mode), so
    validation and test see the real loss.
    """

    def __init__(self, after_steps: int, **kwargs):
        super().__init__(**kwargs)
        self.after_steps = after_steps
        self.calls = 0

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = super().forward(input, target)
        if self.training:
            self.calls += 1
            if self.calls > self.after_steps:
                return loss * float("nan")
        return loss
