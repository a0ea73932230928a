"""Callbacks that fill TensorBoard with what a user looks at, without a line of their code.

- :class:`EpochTimer`: how long each epoch took and how many training images per second it ran.
- :class:`TensorBoardLayout`: a CUSTOM SCALARS page with train and val curves on one chart each,
  so overfitting shows at a glance.
- :class:`TestFigures`: after ``trainer.test``, the confusion matrix, per-class accuracy, macro
  F1 and grids of correctly and wrongly classified test images (to MLflow and W&B too, when the
  run logs there: :mod:`lightning_models.tracking`).
- :class:`TestLossEachEpoch`: the test set's loss after every training epoch, as report 002
  drew it (not a default: it only shows, nothing is chosen on it).

Each is a ``conf/callbacks/<name>.yaml`` entry; the drawing itself is in
:mod:`lightning_models.figures`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics.functional.classification import multiclass_confusion_matrix

from lightning_models import figures, tracking
from lightning_models.checks import check_int


def tensorboard_loggers(trainer: L.Trainer) -> list[TensorBoardLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def figure_loggers(trainer: L.Trainer) -> list[Any]:
    """The loggers that take pictures: TensorBoard, MLflow and W&B."""
    return tensorboard_loggers(trainer) + tracking.tracking_loggers(trainer.loggers)


def first_tensor(batch: Any) -> torch.Tensor | None:
    """The first tensor of a batch (tensor, tuple/list or mapping of them, nested)."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, list | tuple):
        for item in batch:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


# --- epoch timing ------------------------------------------------------------------------------


class EpochTimer(Callback):
    """Logs ``time/epoch_s`` and ``time/img_per_s`` once per training epoch.

    ``time/epoch_s`` is the epoch's wall time as the user waits for it, its validation included.
    ``time/img_per_s`` is training throughput: the epoch's training images over its wall time
    without validation, so a slow validation set does not make training look slow.

    Images are counted from the shape of each batch's first tensor, which needs no copy from the
    GPU; the clock is not synchronised with the GPU either, as the end of one epoch is the start
    of the next and the difference is a few queued kernels.
    """

    def __init__(self) -> None:
        self._started: float | None = None
        self._images = 0
        self._val_started: float | None = None
        self._val_s = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._images, self._val_s, self._val_started = 0, 0.0, None
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        images = first_tensor(batch)
        if images is not None and images.ndim > 0:
            self._images += images.shape[0]

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started is not None and not trainer.sanity_checking:
            self._val_started = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_started is not None:
            self._val_s += time.perf_counter() - self._val_started
            self._val_started = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started is None:
            return
        epoch_s = time.perf_counter() - self._started
        train_s = max(epoch_s - self._val_s, 1e-9)
        pl_module.log("time/epoch_s", epoch_s, on_step=False, on_epoch=True)
        # Under DDP each process counts its own share: the sum is the run's throughput. Summed
        # here, by every process at this hook, and logged as a plain value: with sync_dist,
        # Lightning would sum when the value is first read, and the progress bar reads it on
        # process 0 alone (a collective the other processes never join).
        rate = torch.tensor(self._images / train_s, device=pl_module.device)
        total = trainer.strategy.reduce(rate, reduce_op="sum")
        pl_module.log("time/img_per_s", total, on_step=False, on_epoch=True)
        self._started = None


# --- custom scalars layout ---------------------------------------------------------------------


class TestLossEachEpoch(Callback):
    """Logs ``test_curve/loss`` and ``test_curve/acc``, the test set's mean loss and accuracy,
    after every training epoch: report 002 drew its train and test losses side by side this
    way. Nothing is selected on these figures (checkpoints keep following ``val/acc``), and the
    net runs in eval mode without drawing random numbers, so training is the same with it as
    without. Under DDP each process evaluates its share and the sums are added up.
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if datamodule is None:
            return
        was_training = pl_module.training
        pl_module.eval()
        device = pl_module.device
        sums = torch.zeros(3, device=device)  # loss x images, correct, images
        with torch.no_grad():
            for x, y in datamodule.test_dataloader():
                x, y = x.to(device), y.to(device)
                out = pl_module(x)
                sums += torch.stack(
                    [
                        pl_module.criterion(out, y) * len(y),
                        (out.argmax(dim=1) == y).sum(),
                        torch.tensor(float(len(y)), device=device),
                    ]
                )
        pl_module.train(was_training)
        total = trainer.strategy.reduce(sums, reduce_op="sum")  # every process, at this hook
        images = max(float(total[2]), 1.0)
        pl_module.log("test_curve/loss", total[0] / images, on_step=False, on_epoch=True)
        pl_module.log("test_curve/acc", total[1] / images, on_step=False, on_epoch=True)


def overfitting_layout(category: str = "train vs val") -> dict[str, dict[str, list]]:
    """TensorBoard's custom-scalars layout: {category: {chart title: ["Multiline", [regex]]}}."""
    return {
        category: {
            "loss": ["Multiline", [r"^train/loss$", r"^val/loss$"]],
            "accuracy": ["Multiline", [r"^train/acc$", r"^val/acc$"]],
            "learning rate": ["Multiline", [r"^lr-.*"]],
        }
    }


class TensorBoardLayout(Callback):
    """Writes a CUSTOM SCALARS layout at fit start: train and val loss on one chart, train and
    val accuracy on another, the learning rate(s) on a third. TensorBoard's SCALARS tab shows
    every tag on its own chart, where the point at which val/loss turns up is easy to miss.

    Args:
        category: the heading of the charts in the CUSTOM SCALARS tab.
    """

    def __init__(self, category: str = "train vs val") -> None:
        self.category = category

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for logger in tensorboard_loggers(trainer):
            logger.experiment.add_custom_scalars(overfitting_layout(self.category))


# --- test figures ------------------------------------------------------------------------------


def tag_name(name: str) -> str:
    """A class name as one segment of a TensorBoard tag: "T-shirt/top" → "T_shirt_top"."""
    return re.sub(r"\W+", "_", name).strip("_")


def class_tags(names: Sequence[str]) -> list[str]:
    """Distinct tag segments for the class names (a name with no letters gets its index)."""
    tags: list[str] = []
    for i, name in enumerate(names):
        tag = tag_name(name) or str(i)
        tags.append(tag if tag not in tags else f"{tag}_{i}")
    return tags


ACCURACY_COLUMNS = ("class", "test images", "correct", "accuracy")


def accuracy_rows(names: Sequence[str], matrix: np.ndarray) -> list[list[Any]]:
    """Per class: its name, test images, correct ones and accuracy (None without test images)."""
    rows = []
    for name, row, hits in zip(names, matrix, np.diag(matrix), strict=True):
        total = int(row.sum())
        rows.append([name, total, int(hits), float(hits / total) if total else None])
    return rows


def accuracy_table(names: Sequence[str], matrix: np.ndarray) -> str:
    """Per-class accuracy as a markdown table (TensorBoard's TEXT tab renders it)."""
    lines = ["| " + " | ".join(ACCURACY_COLUMNS) + " |", "|---|---:|---:|---:|"]
    for name, total, hits, acc in accuracy_rows(names, matrix):
        shown = f"{100 * acc:.2f}%" if acc is not None else "–"
        lines.append(f"| {name.replace('|', '/')} | {total} | {hits} | {shown} |")
    return "\n".join(lines)


class TestFigures(Callback):
    """After ``trainer.test``, writes to every TensorBoard logger (and every MLflow and W&B
    logger: :func:`lightning_models.tracking.log_test_results`):

    - ``test/confusion_matrix``: the matrix as an image, class names on both axes, counts in the
      cells, shaded by each count's share of its true class;
    - ``test/acc_per_class/<class>`` scalars, and the same as a table in the TEXT tab
      (``test/acc_per_class``);
    - ``test/f1_macro``: F1 averaged over the classes, each weighing the same;
    - ``test/correct``: a random (seeded) sample of correctly classified images, with their class;
    - ``test/misclassified``: the wrongly classified images, "true → predicted" under each.

    Reads the predictions ``test_step`` returns (``{"preds": ...}``) instead of running the
    model again. Only the images the grids show are kept, on the CPU, so a large test set costs
    no memory. Without a logger that takes pictures it does nothing.

    Args:
        max_images: size of the sample of correct images (0: no such grid).
        max_misclassified: the misclassified images shown, the first ones in test order.
        seed: seeds the sample of correct images, so reruns show the same images.
        columns: images per row of the grids.
    """

    __test__ = False  # its name starts with "Test": keep pytest from collecting it as a test

    def __init__(
        self, max_images: int = 64, max_misclassified: int = 64, seed: int = 0, columns: int = 8
    ) -> None:
        for key, value, least in (
            ("max_images", max_images, 0),
            ("max_misclassified", max_misclassified, 0),
            ("columns", columns, 1),
        ):
            check_int(f"callbacks.test_figures.{key}", value, minimum=least)
        self.max_images = max_images
        self.max_misclassified = max_misclassified
        self.seed = seed
        self.columns = columns
        self._reset()

    def _reset(self) -> None:
        self._generator = torch.Generator().manual_seed(self.seed)
        self._preds: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        # The correct sample: each correct image draws a random key, the smallest keys stay
        # (bottom-k sampling: a uniform sample of a stream of unknown length, in fixed memory).
        self._keys = torch.empty(0)
        self._correct = torch.empty(0, dtype=torch.uint8)
        self._correct_labels = torch.empty(0, dtype=torch.long)
        self._wrong: list[torch.Tensor] = []
        self._wrong_labels: list[tuple[int, int]] = []
        self._warned = False

    # -- collecting ----------------------------------------------------------------------------

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not figure_loggers(trainer):
            return
        preds = outputs.get("preds") if isinstance(outputs, Mapping) else None
        if preds is None:
            if not self._warned:
                rank_zero_warn(
                    "TestFigures: test_step returned no {'preds': ...}; no test figures are drawn"
                )
                self._warned = True
            return
        images, targets = batch[0], batch[1]
        # Labels to the CPU each batch: a few bytes per image, and choosing which images to keep
        # needs them there anyway (testing is not timed, so the wait for the GPU costs little).
        preds, targets = preds.detach().cpu().long(), targets.detach().cpu().long()
        self._preds.append(preds)
        self._targets.append(targets)
        right = preds == targets
        normalize = getattr(getattr(trainer, "datamodule", None), "normalize", None)
        self._keep_correct(images, targets, right, normalize)
        self._keep_wrong(images, targets, preds, ~right, normalize)

    def _keep_correct(self, images, targets, right, normalize) -> None:
        if self.max_images == 0 or not right.any():
            return
        index = right.nonzero().flatten()
        keys = torch.cat([self._keys, torch.rand(len(index), generator=self._generator)])
        order = keys.argsort()[: self.max_images]
        old, new = order[order < len(self._keys)], order[order >= len(self._keys)]
        new_index = index[new - len(self._keys)]
        chosen = displayable(images[new_index.to(images.device)], normalize)
        self._keys = keys[torch.cat([old, new])]
        self._correct = torch.cat([self._correct[old], chosen]) if len(old) else chosen
        self._correct_labels = torch.cat([self._correct_labels[old], targets[new_index]])

    def _keep_wrong(self, images, targets, preds, wrong, normalize) -> None:
        room = self.max_misclassified - len(self._wrong_labels)
        if room <= 0 or not wrong.any():
            return
        index = wrong.nonzero().flatten()[:room]
        self._wrong.append(displayable(images[index.to(images.device)], normalize))
        self._wrong_labels += list(zip(targets[index].tolist(), preds[index].tolist(), strict=True))

    # -- writing -------------------------------------------------------------------------------

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = figure_loggers(trainer)
        if not loggers or not self._preds or not trainer.is_global_zero:
            return
        preds, targets = torch.cat(self._preds), torch.cat(self._targets)
        names = class_names(trainer, pl_module, preds, targets)
        # The module's matrix covers every DDP process; the images kept here are this one's.
        matrix = getattr(pl_module, "test_confusion_matrix", None)
        if matrix is None or matrix.shape[0] != len(names):
            matrix = multiclass_confusion_matrix(preds, targets, num_classes=len(names))
        matrix = matrix.numpy()
        f1 = macro_f1(matrix)
        pictures = {
            "test/confusion_matrix": figures.confusion_matrix_image(matrix, names),
            "test/correct": self._correct_grid(names),
            "test/misclassified": self._wrong_grid(names),
        }
        per_class = {
            f"test/acc_per_class/{tag}": hits / row.sum()
            for tag, row, hits in zip(class_tags(names), matrix, np.diag(matrix), strict=True)
            if row.sum() > 0
        }
        table = accuracy_table(names, matrix)
        step = trainer.global_step
        for logger in tensorboard_loggers(trainer):
            writer = logger.experiment
            for tag, picture in pictures.items():
                writer.add_image(tag, picture, step, dataformats="HWC")
            for tag, value in per_class.items():
                writer.add_scalar(tag, float(value), step)
            writer.add_scalar("test/f1_macro", f1, step)
            writer.add_text("test/acc_per_class", table, step)
            writer.flush()
        scalars = {**{tag: float(v) for tag, v in per_class.items()}, "test/f1_macro": f1}
        tables = {
            "test/acc_per_class": tracking.Table(
                ACCURACY_COLUMNS, accuracy_rows(names, matrix), table
            )
        }
        for logger in tracking.tracking_loggers(loggers):
            tracking.log_test_results(logger, step, pictures, scalars, tables)
        self._reset()  # the kept images are not needed any more

    def _correct_grid(self, names: Sequence[str]) -> np.ndarray:
        if not len(self._correct_labels):
            return figures.text_image("no correctly classified test images")
        # Grouped by class, so the grid reads as a gallery of each class.
        order = self._correct_labels.argsort(stable=True)
        captions = [caption(names[i]) for i in self._correct_labels[order].tolist()]
        return figures.labelled_grid(self._correct[order], captions, self.columns)

    def _wrong_grid(self, names: Sequence[str]) -> np.ndarray:
        if not self._wrong_labels:
            return figures.text_image("no misclassified test images")
        captions = [
            f"{caption(names[t])} {figures.ARROW} {caption(names[p])}"
            for t, p in self._wrong_labels
        ]
        return figures.labelled_grid(torch.cat(self._wrong), captions, self.columns)


def caption(name: str) -> str:
    """A class name that a grid caption keeps on one line."""
    return name.replace(" ", figures.GLUE)


def displayable(images: torch.Tensor, normalize: Any = None) -> torch.Tensor:
    """Model inputs back to what the eye should see: normalisation undone, clamped, as uint8
    ``N x C x H x W`` on the CPU (a quarter of the memory of floats)."""
    images = images.detach().float()
    if normalize is not None and hasattr(normalize, "mean") and hasattr(normalize, "std"):
        shape = (1, -1, 1, 1)
        mean = torch.as_tensor(normalize.mean, dtype=images.dtype, device=images.device)
        std = torch.as_tensor(normalize.std, dtype=images.dtype, device=images.device)
        images = images * std.view(shape) + mean.view(shape)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def macro_f1(matrix: np.ndarray) -> float:
    """Macro F1 of a confusion matrix (rows: true class), over the classes that occur in it as
    truth or prediction (torchmetrics' convention)."""
    tp = np.diag(matrix).astype(float)
    errors = matrix.sum(axis=0) + matrix.sum(axis=1) - 2 * tp  # false positives + negatives
    seen = (tp + errors) > 0
    return float((2 * tp[seen] / (2 * tp[seen] + errors[seen])).mean()) if seen.any() else 0.0


def class_names(
    trainer: L.Trainer, pl_module: L.LightningModule, preds: torch.Tensor, targets: torch.Tensor
) -> list[str]:
    """The datamodule's ``classes``; else "0".."n-1" for as many classes as the data or the
    model know. Numbers pad the list should a label exceed the names given."""
    datamodule = getattr(trainer, "datamodule", None)
    names = [str(c) for c in (getattr(datamodule, "classes", None) or [])]
    known = [
        len(names),
        getattr(datamodule, "num_classes", None),
        getattr(pl_module, "hparams", {}).get("num_classes"),
        int(max(preds.max(), targets.max())) + 1,
    ]
    n = max(k for k in known if isinstance(k, int))
    return names + [str(i) for i in range(len(names), n)]
