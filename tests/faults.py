"""Faults injected through the real config, to test how the lab reacts to them."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
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


class KillAt(L.Callback):
    """SIGKILLs its own process at a known point of a fit, once: as a power cut would, with no
    chance to save anything.

    Exactly one of ``step`` (at the start of the training batch that would make global step
    ``step + 1``), ``validation_epoch`` (at the start of that epoch's validation, not the sanity
    check) or ``epoch_start`` (at the start of that training epoch, right after the previous
    epoch's checkpoint). ``once`` is a file created just before the kill; while it exists the
    callback does nothing, so the resumed run can keep the very same overrides. ``steps`` (a
    list) kills at each of those steps in turn, once each (``once`` then names one file per
    step, ``<once>.<step>``): a run resumed again and again with the same overrides. The loggers are
    flushed first (``flush``): the worst case for what was logged after the last checkpoint,
    which is then on disk; without, what they held back since the checkpoint is lost.
    """

    def __init__(
        self,
        once: str,
        step: int | None = None,
        validation_epoch: int | None = None,
        epoch_start: int | None = None,
        flush: bool = True,
        steps: list[int] | None = None,
    ):
        self.once = Path(once)
        self.steps = list(steps or [])
        self.flush = flush
        self.step = step
        self.validation_epoch = validation_epoch
        self.epoch_start = epoch_start

    def _kill(self, trainer: L.Trainer, once: Path | None = None) -> None:
        once = once or self.once
        if once.exists():
            return
        for logger in trainer.loggers if self.flush else ():
            logger.save()
        once.touch()
        os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.step is not None and trainer.global_step == self.step:
            self._kill(trainer)
        if trainer.global_step in self.steps:
            self._kill(trainer, self.once.with_name(f"{self.once.name}.{trainer.global_step}"))

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.current_epoch == self.validation_epoch:
            self._kill(trainer)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch_start:
            self._kill(trainer)


class SignalAt(Checkpoint):
    """Sends ``signum`` to its own process once, when training epoch ``epoch`` ends, at the worst
    moment for a preemption: right after that epoch's last.ckpt is written and before Lightning
    hands the epoch's train metrics to the loggers.

    A ``Checkpoint`` only so that Lightning calls it where it calls the checkpoint callbacks: after
    them (they come last, in their order) and after the LightningModule's ``on_train_epoch_end``.
    Only in a process with a Python handler for the signal (a submitit job's; the DDP processes
    the lab starts have the default, which would kill them). ``once`` as in :class:`KillAt`.
    """

    def __init__(self, once: str, epoch: int, signum: int = signal.SIGUSR2):
        self.once = Path(once)
        self.epoch = epoch
        self.signum = signum

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch != self.epoch or self.once.exists():
            return
        if callable(signal.getsignal(self.signum)):
            self.once.touch()
            os.kill(os.getpid(), self.signum)
