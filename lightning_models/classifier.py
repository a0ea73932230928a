"""The one LightningModule of the lab: any ``nn.Module`` classifier + optimizer + scheduler.

Every ``model=`` config builds an :class:`ImageClassifier` around a different network, so training,
evaluation, metrics and logging live here once. The optimizer and the scheduler come in as partials
(Hydra ``_partial_: true``) because they need the parameters, which exist only after construction.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import OneCycleLR
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from lightning_models.checks import DivergedError, LabError, check_bool, check_int

STAGES = ("train", "val", "test")
# Values that nn.Module.__setattr__ stores as plain attributes unless the name is a parameter,
# buffer or submodule of that name (see ImageClassifier.__setattr__).
_PLAIN_VALUES = frozenset({str, int, float, bool, type(None)})

# The lab logs epoch values that are already the same on every DDP process (_log_epoch):
# Lightning's advice to add sync_dist=True would only start another collective.
warnings.filterwarnings(
    "ignore",
    message=r"It is recommended to use `self\.log\('(train|val|test|time)/",
    category=PossibleUserWarning,
)
# Hand-written nets (manual optimisation) are checkpointed after the step's update, with the
# loop's counters saying that step is done: the state a resumed run must start from. Lightning's
# 16-line warning offers to save the state before the update instead (of a `layer` attribute).
warnings.filterwarnings(
    "ignore", message=r"Using ModelCheckpoint with manual optimization and every_n_train_steps"
)


class ImageClassifier(L.LightningModule):
    """Trains ``net`` to classify images into ``num_classes`` classes.

    Args:
        net: the architecture; returns logits, or log-probabilities when it sets
            ``outputs_log_probs = True`` (then pair it with ``NLLLoss``).
        optimizer: partial that takes the parameters and returns a ``torch.optim.Optimizer``.
        scheduler: ``None``, or Lightning's lr-scheduler config as a mapping: ``scheduler`` (a
            partial taking the optimizer) plus optional ``interval`` (``step`` or ``epoch``),
            ``frequency`` and ``monitor``.
        loss: the criterion; cross-entropy when omitted.
        num_classes: number of classes, for the accuracy metrics.
        init: ``None`` (or an empty config) keeps the net's own initialisation; else a callable
            that re-initialises it, e.g. :func:`lightning_models.nets.init.initialize` as a partial.
        defer_finite_check: check the training loss for NaN/inf every ``log_every_n_steps``
            steps instead of every step (no host sync per step); ``None``: on accelerators only.
        tta_flip: flip test-time augmentation: validation and test predict from the mean of the
            net's outputs on each image and on its horizontal mirror (``model.tta_flip``).
        tta_shift: shift test-time augmentation (airbench's): validation and test also average
            over each image (and mirror) translated by this many pixels down-right and up-left,
            edges reflected (``model.tta_shift``; 0: off); 6 views with ``tta_flip``.
        compile: ``torch.compile`` the net when a Trainer runs the model (:meth:`configure_model`).
        channels_last: keep the net's weights and its input batches in channels-last memory
            order (``model.channels_last``), which the CPU's and GPU's convolution kernels run
            faster for wide convolutions; the state dict's values are the same either way.

    Training labels may be class indices or, from mixup and cutmix (``data.mix``), class
    probabilities ``(B, num_classes)``, which the loss then takes as they are.

    Logs ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``val/acc_best``, ``test/loss``
    and ``test/acc``, each once per epoch.

    Two optional hooks on ``net``: ``regularization(batch_size)`` returns a penalty added to the
    training loss (logged as ``train/l2``); ``manual_update = True`` with
    ``manual_step(x, y, lr) -> (loss, scores)`` makes the net do its own forward, gradient and
    update, Lightning's manual optimisation driving it. A third, ``fit_to_batch(x, mean)``, sets
    weights from data (the whitening stem of ``conv_groups``): it gets the first training batch
    of every fit (a resumed net has nothing left to fit) and, under DDP, ``mean``, which averages
    a tensor over the processes (None in one process).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Mapping[str, Any] | None = None,
        loss: nn.Module | None = None,
        num_classes: int = 10,
        init: Callable[[nn.Module], Any] | None = None,
        defer_finite_check: bool | None = None,
        tta_flip: bool = False,
        tta_shift: int = 0,
        compile: bool = False,
        channels_last: bool = False,
    ):
        super().__init__()
        check_bool("model.tta_flip", tta_flip)
        check_int("model.tta_shift", tta_shift, minimum=0)
        check_bool("model.compile", compile)
        check_bool("model.channels_last", channels_last)
        self.channels_last = channels_last
        self.compile_net = compile
        self._net_compiled = False
        # The lr finder (lightning_models/tools/lr_find.py) raises the lr until the loss
        # diverges, on purpose: it turns the stop at a non-finite loss off.
        self.stop_on_divergence = True
        self.tta_flip = tta_flip
        self.tta_shift = int(tta_shift)
        # Only plain values go into the checkpoint's hparams: the network and loss live in the
        # state dict, and pickled partials would stop torch.load(weights_only=True) reading it.
        self.save_hyperparameters(
            logger=False, ignore=["net", "loss", "optimizer", "scheduler", "init"]
        )
        self.optimizer_factory = optimizer
        # The `none` scheduler and `default` init groups compose to empty configs.
        self.scheduler_config = scheduler or None
        if init:
            init(net)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        # Nets that update themselves by hand (report 001's softmax regression) set manual_update.
        self.automatic_optimization = not getattr(net, "manual_update", False)
        self.criterion = loss if loss is not None else nn.CrossEntropyLoss()
        _check_loss_matches_head(self.criterion, net)
        _check_scheduler(self.scheduler_config)

        # Per step, each stage only adds its loss and correct predictions to sums on the device
        # (_EpochSums: two in-place adds); at the end of the epoch they go into these torchmetrics
        # means, which sync over DDP processes, are logged and reset. Updating a torchmetrics
        # Metric every step costs about 0.1 ms of a 7 ms LeNet-5 step on the CPU (measured).
        # ModuleDict keys must not shadow nn.Module attributes ("train"), hence the suffixes.
        self.metrics = nn.ModuleDict()
        for s in STAGES:
            for name in ("acc", "loss"):
                self.metrics[f"{s}_{name}"] = MeanMetric(nan_strategy="disable")
        self._sums = {s: _EpochSums() for s in STAGES}
        self._regularized = hasattr(net, "regularization")
        self._fits_to_data = hasattr(net, "fit_to_batch")
        self._fit_pending = False  # set for each fit: its first training batch goes to the net
        self.val_acc_best = MaxMetric()
        self.test_confusion = MulticlassConfusionMatrix(
            num_classes=num_classes, validate_args=False
        )
        # On an accelerator: the first step whose loss was not finite, and that loss, kept on
        # the device (-1: none yet) so that the check does not wait for the device every step.
        self.defer_finite_check = defer_finite_check
        self._bad_step: torch.Tensor | None = None
        self._bad_loss: torch.Tensor | None = None
        # rows: true class, columns: predicted class; set at the end of `test`
        self.test_confusion_matrix: torch.Tensor | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets the module's _current_fx_name before and after each of the ~20 hook
        # calls of a training step. nn.Module.__setattr__ checks such a value against Parameter,
        # Module and Buffer first (isinstance through their metaclasses): about 0.1 ms a step,
        # a sixth of the lab's overhead over a bare loop on a LeNet-5 step (profiled). A plain
        # value under a name that is no parameter, buffer or submodule ends up stored the same
        # way by object.__setattr__; everything else takes nn.Module's path.
        d = self.__dict__
        if (
            type(value) in _PLAIN_VALUES
            and "_modules" in d
            and name not in d["_parameters"]
            and name not in d["_buffers"]
            and name not in d["_modules"]
        ):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self._layout(x))

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        # A channels-last net still runs NCHW-contiguous input in the slower order.
        if self.channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def configure_model(self) -> None:
        # Lightning calls this hook for every fit, validate and test, so a model built only to
        # load a checkpoint (predict, export) is never compiled. nn.Module.compile compiles the
        # net in place: its state-dict keys stay as they are (no `_orig_mod.`), so checkpoints of
        # compiled and plain runs are the same.
        if self.compile_net and not self._net_compiled:
            self.net.compile()
            self._net_compiled = True

    def _log_epoch(self, stage: str) -> dict[str, torch.Tensor]:
        """Log the epoch's mean loss and accuracy over its images, and return them.

        The Metric objects are computed here (under DDP a collective, run by every process at
        this same hook) and logged as plain values, the same on every process. Logged as Metric
        objects (or with ``sync_dist``), Lightning would compute them when they are first read,
        and the progress bar reads them on process 0 alone: a collective the other processes
        never join, which aborted gloo runs and hangs NCCL ones.
        """
        self._sums[stage].move_to(self.metrics[f"{stage}_loss"], self.metrics[f"{stage}_acc"])
        values = {}
        for name in ("loss", "acc"):
            metric = self.metrics[f"{stage}_{name}"]
            values[name] = metric.compute()
            metric.reset()
            self.log(f"{stage}/{name}", values[name], prog_bar=True)
        return values

    def _eval_step(self, batch, stage: str) -> dict[str, torch.Tensor]:
        x, y = batch
        out = self._predict(x)
        preds = out.argmax(dim=1)
        self._sums[stage].add(self.criterion(out, y), preds, y)
        if stage == "test":
            self.test_confusion(preds, y)
        # Callbacks (test figures) read the predictions instead of running the net again.
        return {"preds": preds}

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        """The net's outputs, or with test-time augmentation their mean over the views (logits
        or log-probabilities: whatever the loss takes)."""
        views = [x, x.flip(-1)] if self.tta_flip else [x]
        if self.tta_shift:
            s = self.tta_shift
            padded = [F.pad(v, (s, s, s, s), mode="reflect") for v in views]
            h, w = x.shape[-2:]
            views += [p[..., :h, :w] for p in padded]  # content moved down and right
            views += [p[..., 2 * s :, 2 * s :] for p in padded]  # up and left
        outs = [self.net(self._layout(v)) for v in views]
        return outs[0] if len(outs) == 1 else torch.stack(outs).mean(dim=0)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if not self.automatic_optimization:
            loss, out = self._hand_written_step(x, y)
        else:
            out = self.net(self._layout(x))
            loss = self.criterion(out, y)
            self._stop_if_not_finite(loss)
            if self._regularized:
                # e.g. report 002's L2 on chosen layers only, which weight_decay cannot express
                penalty = self.net.regularization(x.shape[0])
                # no sync_dist (see _log_epoch): the weights, hence the penalty, are the same
                # on every DDP process
                self.log("train/l2", penalty, on_step=False, on_epoch=True)
                loss = loss + penalty
        # Mixed batches (data.mix) have class probabilities for labels: the loss takes them as
        # they are, and train accuracy counts the class with the largest share as the label.
        labels = y.argmax(dim=1) if y.ndim == 2 else y
        self._sums["train"].add(loss, out.argmax(dim=1), labels)
        return loss

    def _hand_written_step(self, x: torch.Tensor, y: torch.Tensor):
        """One update by the net's own forward, gradient and update code (no autograd).

        The optimizer only carries the learning rate, so that schedulers work as for any model.
        """
        optimizer = self.optimizers()
        loss, out = self.net.manual_step(x, y, lr=optimizer.param_groups[0]["lr"])
        self._stop_if_not_finite(loss)
        # The net's parameters have no gradients, so this changes no weight; it advances
        # Lightning's step counter (global_step, logging, checkpoint intervals).
        optimizer.step()
        scheduler = self.lr_schedulers()
        interval = (self.scheduler_config or {}).get("interval", "epoch")
        if scheduler is not None and (interval == "step" or self.trainer.is_last_batch):
            scheduler.step()
        return loss, out

    def _stop_if_not_finite(self, loss: torch.Tensor) -> None:
        """Stop before a NaN/inf loss reaches a checkpoint, naming the step where it appeared.

        On the CPU the loss is already computed when this runs, so the check is free and the run
        stops at that very step, before the update. On an accelerator, reading the loss would
        stall the pipeline every step; there the first bad step is noted on the device and read
        every ``log_every_n_steps`` steps, at the end of each epoch and before any checkpoint.
        Under DDP every process stops together (one waiting alone would hang the others).
        """
        if not self.stop_on_divergence:
            return
        defer = self.defer_finite_check
        if not (loss.device.type != "cpu" if defer is None else defer):
            # loss.item() is free on the CPU and cheaper than torch.isfinite (a tensor op)
            if self._on_any_process(not math.isfinite(loss.item())):
                self._raise_diverged(loss.detach(), self.global_step)
            return
        if self._bad_step is None:
            self._bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._bad_loss = torch.zeros((), dtype=loss.dtype, device=loss.device)
        first = (self._bad_step < 0) & ~torch.isfinite(loss.detach())
        self._bad_step = torch.where(first, self.global_step, self._bad_step)
        self._bad_loss = torch.where(first, loss.detach(), self._bad_loss)
        if (self.global_step + 1) % max(self.trainer.log_every_n_steps, 1) == 0:
            self._raise_if_diverged()

    def _raise_if_diverged(self) -> None:
        """The deferred check of an accelerator run (one host sync)."""
        bad = self._bad_step is not None and int(self._bad_step) >= 0
        if self._on_any_process(bad):
            self._raise_diverged(self._bad_loss, int(self._bad_step) if bad else None)

    def _on_any_process(self, decision: bool) -> bool:
        trainer = self._trainer  # None for a bare step outside a Trainer
        if trainer is not None and trainer.world_size > 1:
            return trainer.strategy.reduce_boolean_decision(bool(decision), all=False)
        return bool(decision)

    def _raise_diverged(self, loss: torch.Tensor, step: int | None) -> None:
        lrs = sorted({g["lr"] for opt in self.trainer.optimizers for g in opt.param_groups})
        where = (
            f"the loss became {float(loss)} at step {step}"
            if step is not None and not torch.isfinite(loss)
            else f"the loss became non-finite on another DDP process by step {self.global_step}"
        )
        raise DivergedError(
            f"training diverged: {where} (epoch {self.current_epoch}); the learning rate "
            f"({', '.join(map(str, lrs))}) is the likely cause: lower optimizer.lr, or add a "
            "scheduler or warm-up"
        )

    def on_train_epoch_end(self) -> None:
        self._raise_if_diverged()
        self._log_epoch("train")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Raised before the file is written: no checkpoint ever holds diverged weights.
        self._raise_if_diverged()

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        self.test_confusion_matrix = self.test_confusion.compute().cpu()

    def validation_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "test")

    def on_train_start(self) -> None:
        # The sanity check ran validation on an untrained net: that must not count as the best.
        self.val_acc_best.reset()
        self._fit_pending = self._fits_to_data

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if not self._fit_pending:
            return
        self._fit_pending = False
        mean = None
        if self.trainer.world_size > 1:  # every process fits to the global batch
            mean = partial(self.trainer.strategy.reduce, reduce_op="mean")
        self.net.fit_to_batch(self._layout(batch[0]), mean)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._sums["val"].reset()
            return
        acc = self._log_epoch("val")["acc"]
        self.val_acc_best(acc)
        # The same value on every process, from synced metrics (no sync_dist: see _log_epoch).
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def configure_optimizers(self):
        return self.optimizers_for(lambda: self.trainer.estimated_stepping_batches)

    def optimizers_for(self, total_steps: Callable[[], int | float]):
        """The optimizer on this model's parameters and the scheduler on that optimizer, as
        ``configure_optimizers`` returns them; ``total_steps`` gives a one-cycle schedule its
        length when the config does not (the checks before a run pass a stand-in)."""
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_config is None:
            return optimizer
        lr_scheduler = dict(self.scheduler_config)
        make = lr_scheduler["scheduler"]
        if getattr(make, "func", None) is OneCycleLR and not {"total_steps", "epochs"} & set(
            make.keywords
        ):
            # One cycle spans the whole run, which only the trainer knows.
            make = partial(make, total_steps=total_steps())
        lr_scheduler["scheduler"] = make(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": lr_scheduler}


class _EpochSums:
    """One stage's sums over an epoch, kept on the device: loss times images, correct
    predictions, images (a host int: batch shapes are known without a sync)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss: torch.Tensor | None = None
        self.correct: torch.Tensor | None = None
        self.images = 0

    def add(self, loss: torch.Tensor, preds: torch.Tensor, y: torch.Tensor) -> None:
        n = y.shape[0]
        if self.loss is None:
            self.loss = torch.zeros((), dtype=torch.float32, device=loss.device)
            self.correct = torch.zeros((), dtype=torch.int64, device=loss.device)
        self.loss.add_(loss.detach(), alpha=n)
        self.correct.add_((preds == y).sum())
        self.images += n

    def move_to(self, loss_mean: MeanMetric, acc_mean: MeanMetric) -> None:
        """Adds the epoch's mean loss and accuracy to the metrics, weighted by its images (so
        that DDP processes with different shares average right), and starts over."""
        if self.images:
            loss_mean.update(self.loss / self.images, weight=self.images)
            acc_mean.update(self.correct / self.images, weight=self.images)
        self.reset()


def _check_loss_matches_head(criterion: nn.Module, net: nn.Module) -> None:
    """NLLLoss on raw logits trains, but towards the wrong objective: refuse it."""
    if isinstance(criterion, nn.NLLLoss) and not getattr(net, "outputs_log_probs", False):
        raise LabError(
            f"loss NLLLoss expects log-probabilities, but {type(net).__name__} returns raw logits; "
            "use loss cross_entropy, or a model with a log-softmax head (e.g. model=lenet5_relu)"
        )


def _check_scheduler(scheduler: Mapping[str, Any] | None) -> None:
    if scheduler is None:
        return
    if "scheduler" not in scheduler:
        raise LabError(
            "scheduler must hold a 'scheduler' entry (a partial torch LR scheduler) beside "
            f"'interval'; got keys {sorted(scheduler)}"
        )
    interval = scheduler.get("interval", "epoch")
    if interval not in ("step", "epoch"):
        raise LabError(f"scheduler.interval={interval!r} is not allowed; use 'step' or 'epoch'")
