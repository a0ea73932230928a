"""What a run shows on its console: the composed config as a tree before it starts
(:func:`print_config_tree`, also saved as ``config_tree.log`` in the run folder), and its
progress as rich's bar in a terminal or as plain log lines where the output is a file or a pipe
(:func:`progress_bar_target`, :class:`LogLines`), so that ``train.log``, a sweep's job logs and a
cluster job's output hold lines to read, not carriage-return redraws."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("progress")

# The parts of a run in the order a reader looks for them; the others follow in config order.
TREE_ORDER = ("data", "model", "optimizer", "scheduler", "loss", "init", "trainer", "callbacks")
TREE_FILE = "config_tree.log"
RICH_BAR = "lightning.pytorch.callbacks.RichProgressBar"
LOG_LINES = "lightning_models.console.LogLines"


def progress_bar_target(stream: Any = None) -> str:
    """The progress bar class for this process's output (``${lab.progress_bar:}`` in
    ``conf/callbacks/progress_bar.yaml``): rich's bar when stdout is a terminal, else log lines."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return RICH_BAR if isatty is not None and isatty() else LOG_LINES


def config_tree(cfg: DictConfig, order: Sequence[str] = TREE_ORDER):
    """The run's config as a rich Tree: one branch per top-level key, its YAML beneath."""
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    for key in keys:
        node = cfg[key]
        branch = tree.add(str(key), guide_style="dim")
        text = OmegaConf.to_yaml(node, resolve=False) if OmegaConf.is_config(node) else str(node)
        branch.add(Syntax(text.rstrip("\n"), "yaml", theme="ansi_dark", background_color="default"))
    return tree


@rank_zero_only
def print_config_tree(cfg: DictConfig, folder: Path | str | None = None) -> None:
    """Print ``cfg`` as a tree (colours in a terminal) and, with ``folder``, save it there as
    plain text (:data:`TREE_FILE`). Interpolations are shown as written (``${data.num_classes}``):
    the tree says where each value comes from; ``.hydra/config.yaml`` keeps the same config."""
    from rich.console import Console

    tree = config_tree(cfg)
    Console().print(tree)
    if folder is not None:
        path = Path(folder) / TREE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            Console(file=f, width=100, color_system=None, force_terminal=False).print(tree)


class LogLines(ProgressBar):
    """Progress as log lines: a few a training epoch (every ``refresh_rate`` batches at the
    most, and ten an epoch at the most, so a long epoch still gets a handful) and one at its
    end with the epoch's metrics and images per second; one when testing ends. Lightning's
    ``ProgressBar`` base supplies the counts and metrics a bar shows."""

    LINES_PER_EPOCH = 10

    def __init__(self, refresh_rate: int = 20) -> None:
        super().__init__()
        if refresh_rate < 0:
            raise ValueError(f"refresh_rate must be >= 0, got {refresh_rate}")
        self._refresh_rate = refresh_rate
        self._enabled = True
        self._epoch_started = 0.0
        self._last_line = 0
        self._ended: tuple[str, float] | None = None

    # Lightning's ProgressBar API: the bar can be switched off (trainer.enable_progress_bar).
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self._refresh_rate > 0

    def _every(self) -> int:
        total = self.total_train_batches
        tenth = int(total) // self.LINES_PER_EPOCH if total and total != float("inf") else 0
        return max(self._refresh_rate, tenth, 1)

    def _metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str:
        shown = self.get_metrics(trainer, pl_module)
        shown.pop("v_num", None)
        return "  ".join(f"{k} {_short(v)}" for k, v in shown.items())

    def _epoch(self, trainer: L.Trainer) -> str:
        last = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        return f"epoch {trainer.current_epoch + 1}/{last}"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_of_epoch_line(trainer, pl_module)
        self._epoch_started = time.perf_counter()
        self._last_line = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        done = batch_idx + 1
        if not self.is_enabled or done - self._last_line < self._every():
            return
        if done >= self.total_train_batches:  # the epoch's own line says it
            return
        self._last_line = done
        rate = done / max(time.perf_counter() - self._epoch_started, 1e-9)
        log.info(
            "%s  batch %d/%d  %.1f it/s  %s",
            self._epoch(trainer),
            done,
            self.total_train_batches,
            rate,
            self._metrics(trainer, pl_module),
        )

    # Callbacks hear of an epoch's end before the module logs its training metrics there, so the
    # epoch's line is written when the next epoch starts, or when training ends.
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ended = (self._epoch(trainer), time.perf_counter() - self._epoch_started)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_of_epoch_line(trainer, pl_module)

    def _end_of_epoch_line(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._ended is not None and self.is_enabled:
            epoch, seconds = self._ended
            log.info("%s done in %.1f s  %s", epoch, seconds, self._metrics(trainer, pl_module))
        self._ended = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.is_enabled:
            log.info("test done: %d batches", sum(int(n) for n in trainer.num_test_batches))


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
