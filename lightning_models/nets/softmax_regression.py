"""Report 001's softmax regression written by hand: forward, backward and update, no autograd.

scores = x·W + b → softmax → cross-entropy; the gradient of the mean cross-entropy with respect to
the scores is (p − onehot)/N, so dW = xᵀ·dscores and db = Σ dscores; the update is W −= lr·dW,
b −= lr·db (report 001, section 2.1, steps 2–5). The softmax subtracts each row's maximum score
before exponentiating: the report's 28 May fix for the NaN that overflowing e^a produced.
The report names no initialisation and no regulariser; W starts small (std 0.01), b at zero.

The report updates after every single image. ``update_per_image`` does that inside one batch:
the images are taken one at a time in the batch's order, each with the very code a batch of one
runs, so a run over batches of 1,000 makes the same updates, bit for bit, as ``batch_size=1``
(the shuffled order of the lab's loaders does not depend on the batch size) while Lightning's
per-step work is paid once per 1,000 images instead of once per image.
"""

from __future__ import annotations

import torch
from torch import nn


class SoftmaxRegression(nn.Module):
    """A linear classifier whose parameters never require grad; 7,850 values on 1x28x28.

    ``manual_update = True`` tells the classifier to call :meth:`manual_step` instead of running
    an optimizer. ``update_per_image``: one update per image of the batch, in order (the report's
    recipe), instead of one on the batch's mean loss; a scheduler stepping per optimizer step
    then steps once per batch, not per image.
    """

    manual_update = True

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        init_std: float = 0.01,
        update_per_image: bool = False,
    ):
        super().__init__()
        self.update_per_image = update_per_image
        in_features = in_channels * image_size * image_size
        self.W = nn.Parameter(init_std * torch.randn(in_features, num_classes), requires_grad=False)
        self.b = nn.Parameter(torch.zeros(num_classes), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (logits) x·W + b for a batch of images."""
        return x.flatten(1) @ self.W + self.b

    @staticmethod
    def _shifted_exp(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scores minus their row's maximum, so that no exponent is positive or overflows; their
        exponentials; the row sums of those. A row is the last dimension: one image's scores are
        a vector."""
        shifted = scores - scores.amax(dim=-1, keepdim=True)
        exp = shifted.exp()
        return shifted, exp, exp.sum(dim=-1, keepdim=True)

    @staticmethod
    def softmax(scores: torch.Tensor) -> torch.Tensor:
        """Row-wise softmax with the max-subtraction trick: no exponent is positive or overflows."""
        _, exp, total = SoftmaxRegression._shifted_exp(scores)
        return exp / total

    @torch.no_grad()
    def loss_and_gradients(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean cross-entropy of a batch and its gradients: ``(loss, dW, db, scores)``."""
        return self._loss_and_gradients(x.flatten(1), y)

    def _loss_and_gradients(self, x: torch.Tensor, y: torch.Tensor):
        n = x.shape[0]
        scores = x @ self.W + self.b
        # the shifted scores and the sum of exponentials also give log p_y (the log of a p
        # rounded to zero would be -inf)
        shifted, exp, total = self._shifted_exp(scores)
        probs = exp / total
        log_p_y = shifted.gather(1, y[:, None]) - total.log()
        loss = -log_p_y.mean()
        onehot = torch.zeros_like(probs).scatter_(1, y[:, None], 1.0)
        dscores = (probs - onehot) / n
        dW = x.T @ dscores
        db = dscores.sum(dim=0)
        return loss, dW, db, scores

    def _update(self, x: torch.Tensor, y: torch.Tensor, lr: float):
        loss, dW, db, scores = self._loss_and_gradients(x, y)
        self.W.sub_(lr * dW)
        self.b.sub_(lr * db)
        return loss, scores

    def _update_one(self, x: torch.Tensor, y: int, lr: float):
        """The same steps for one image (a vector x and its label), in a third of the tensor
        operations: scores b + Wᵀx, p = softmax, loss −log p_y, W −= lr·x(p − onehot)ᵀ."""
        scores = torch.addmv(self.b, self.W.t(), x)
        shifted, exp, total = self._shifted_exp(scores)
        loss = total.log()[0] - shifted[y]
        dscores = exp.div_(total)
        dscores[y] -= 1.0
        self.W.addr_(x, dscores, alpha=-lr)
        self.b.add_(dscores, alpha=-lr)
        return loss, scores

    @torch.no_grad()
    def manual_step(
        self, x: torch.Tensor, y: torch.Tensor, lr: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One gradient-descent step on a batch (or one per image with ``update_per_image``), in
        place; returns the batch's mean loss and its scores, each image's taken before its own
        update. A batch of one image takes the per-image code, so both ways agree bit for bit."""
        x = x.flatten(1)
        if not self.update_per_image and x.shape[0] > 1:
            return self._update(x, y, lr)
        steps = [
            self._update_one(image, label, lr) for image, label in zip(x, y.tolist(), strict=True)
        ]
        losses, scores = zip(*steps, strict=True)
        return torch.stack(losses).mean(), torch.stack(scores)
