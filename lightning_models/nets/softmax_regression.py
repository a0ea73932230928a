"""Report 001's softmax regression written by hand: forward, backward and update, no autograd.

scores = x·W + b → softmax → cross-entropy; the gradient of the mean cross-entropy with respect to
the scores is (p − onehot)/N, so dW = xᵀ·dscores and db = Σ dscores; the update is W −= lr·dW,
b −= lr·db (report 001, section 2.1, steps 2–5). The softmax subtracts each row's maximum score
before exponentiating: the report's 28 May fix for the NaN that overflowing e^a produced.
The report names no initialisation and no regulariser; W starts small (std 0.01), b at zero.
"""

from __future__ import annotations

import torch
from torch import nn


class SoftmaxRegression(nn.Module):
    """A linear classifier whose parameters never require grad; 7,850 values on 1x28x28.

    ``manual_update = True`` tells the classifier to call :meth:`manual_step` instead of running
    an optimizer.
    """

    manual_update = True

    def __init__(self, in_channels: int, image_size: int, num_classes: int, init_std: float = 0.01):
        super().__init__()
        in_features = in_channels * image_size * image_size
        self.W = nn.Parameter(init_std * torch.randn(in_features, num_classes), requires_grad=False)
        self.b = nn.Parameter(torch.zeros(num_classes), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (logits) x·W + b for a batch of images."""
        return x.flatten(1) @ self.W + self.b

    @staticmethod
    def softmax(scores: torch.Tensor) -> torch.Tensor:
        """Row-wise softmax with the max-subtraction trick: no exponent is positive or overflows."""
        shifted = scores - scores.max(dim=1, keepdim=True).values
        exp = shifted.exp()
        return exp / exp.sum(dim=1, keepdim=True)

    @torch.no_grad()
    def loss_and_gradients(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean cross-entropy of a batch and its gradients: ``(loss, dW, db, scores)``."""
        x = x.flatten(1)
        n = x.shape[0]
        scores = x @ self.W + self.b
        probs = self.softmax(scores)
        # log p_y from the shifted scores (log of a rounded-to-zero p would be -inf)
        shifted = scores - scores.max(dim=1, keepdim=True).values
        log_p_y = shifted.gather(1, y[:, None]) - shifted.exp().sum(dim=1, keepdim=True).log()
        loss = -log_p_y.mean()
        onehot = torch.zeros_like(probs).scatter_(1, y[:, None], 1.0)
        dscores = (probs - onehot) / n
        dW = x.T @ dscores
        db = dscores.sum(dim=0)
        return loss, dW, db, scores

    @torch.no_grad()
    def manual_step(
        self, x: torch.Tensor, y: torch.Tensor, lr: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One gradient-descent step on a batch, in place; returns the batch's loss and scores."""
        loss, dW, db, scores = self.loss_and_gradients(x, y)
        self.W.sub_(lr * dW)
        self.b.sub_(lr * db)
        return loss, scores
