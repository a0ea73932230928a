"""The learning-rate range test (Lightning's ``Tuner.lr_find``) on the run train.py would make.

    python -m lightning_models.tools.lr_find model=lenet5 data=fashion
    python -m lightning_models.tools.lr_find model=cifar_cnn data=cifar10 lr_find.max_lr=0.1

The config is train.py's (``conf/lr_find.yaml`` extends ``conf/train.yaml``: every group and
override works as there), built by the same :func:`lightning_models.build.build_run` and checked
before any folder is made. From the model's initial weights, the learning rate grows from
``lr_find.min_lr`` to ``lr_find.max_lr`` over ``lr_find.num_training`` optimizer steps (the
configured scheduler is set aside) until the loss diverges; the suggestion is the rate of the
steepest fall of the (smoothed) loss against log10(lr) (:func:`steepest_fall`). Written to the
run folder, ``logs/lr_find/runs/<time>/``: ``lr_find.png`` (the curve, the suggestion marked) and
``lr_find.csv`` (learning rate, smoothed loss); the suggestion is printed, with the override
that uses it. Nothing is trained for good: no checkpoint, no logger.
"""

from __future__ import annotations

import csv
import logging
import math
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.experimental.callback import Callback
from hydra.utils import get_class
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig

import datamodules  # noqa: F401  (registers the config resolvers the data configs use)
from lightning_models.build import build_run, choice, prebuilt
from lightning_models.checks import LabError, check_int, is_finite_number
from lightning_models.tools import plots

log = logging.getLogger("lr_find")

PLOT = "lr_find.png"
TABLE = "lr_find.csv"


def check_settings(cfg: DictConfig) -> None:
    """Reject ``lr_find.*`` values and runs the range test cannot do, naming the key."""
    settings = cfg.lr_find
    low, high = settings.min_lr, settings.max_lr
    if not (is_finite_number(low) and low > 0):
        raise LabError(f"lr_find.min_lr={low!r} is not allowed; use a positive number, e.g. 1e-8")
    if not (is_finite_number(high) and high > low):
        raise LabError(
            f"lr_find.max_lr={high!r} is not allowed; use a number above lr_find.min_lr={low}"
        )
    # The suggestion leaves out the first 10 points and the last one, and needs 2 more.
    check_int("lr_find.num_training", settings.num_training, 13)
    if settings.mode not in ("exponential", "linear"):
        raise LabError(f"lr_find.mode={settings.mode!r} is not allowed; use exponential or linear")
    stop = settings.early_stop_threshold
    if stop is not None and not (is_finite_number(stop) and stop > 1):
        raise LabError(
            f"lr_find.early_stop_threshold={stop!r} is not allowed; use a number above 1 (stop "
            "when the loss exceeds this many times its lowest value) or null to run every step"
        )
    if cfg.get("ckpt_path"):
        raise LabError(
            f"ckpt_path={cfg.ckpt_path} cannot be used: the range test starts from the model's "
            "initial weights; leave ckpt_path out"
        )
    net = get_class(str(cfg.model.net._target_))
    if getattr(net, "manual_update", False):
        raise LabError(
            f"{net.__name__} updates its weights by hand (manual_update), where the learning rate "
            "of the range test cannot be swept; the lr finder needs a model trained by autograd"
        )


class CheckSettings(Callback):
    """A Hydra callback (``conf/lr_find.yaml``): :func:`check_settings` before Hydra makes the
    run folder, as ``checks.ValidateBeforeRun`` does for the rest of the config."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_settings(config)
        except LabError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(1)


def find_lr(cfg: DictConfig) -> tuple[float | None, Path]:
    """Run the range test of ``cfg`` and write its plot and table; the suggested learning rate
    (None when too few steps ran) and the folder written to."""
    run = prebuilt(cfg) or build_run(cfg)
    out = Path(run.cfg.paths.output_dir)
    settings = cfg.lr_find
    # The test raises the rate until the loss diverges, on purpose.
    run.model.stop_on_divergence = False
    finder = Tuner(run.trainer).lr_find(
        run.model,
        datamodule=run.datamodule,
        min_lr=float(settings.min_lr),
        max_lr=float(settings.max_lr),
        num_training=int(settings.num_training),
        mode=str(settings.mode),
        early_stop_threshold=settings.early_stop_threshold,
        update_attr=False,
    )
    if finder is None:  # Lightning skips the test under trainer.fast_dev_run
        raise LabError("trainer.fast_dev_run=true skips the range test; leave it out")
    lrs, losses = finder.results["lr"], finder.results["loss"]
    index = steepest_fall(lrs, losses, log_spaced=settings.mode == "exponential")
    suggestion = None if index is None else float(lrs[index])
    plots.pyplot()  # the Agg backend, before Lightning's plot imports pyplot
    figure = finder.plot(suggest=False)
    title = f"lr range test: model={choice('model', cfg.model.net)} data={choice('data', cfg.data)}"
    if index is not None:
        figure.axes[0].plot(lrs[index], losses[index], marker="o", markersize=10, color="red")
        title += f"; suggested lr {suggestion:.3g} (red)"
    plots.label_axes(figure.axes[0], "learning rate", "training loss (smoothed)", title)
    plots.save(figure, out / PLOT)
    with (out / TABLE).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["lr", "loss"])
        writer.writerows(zip(finder.results["lr"], finder.results["loss"], strict=True))
    return suggestion, out


def steepest_fall(
    lrs: list[float], losses: list[float], log_spaced: bool, skip_begin: int = 10, skip_end: int = 1
) -> int | None:
    """The index of the steepest fall of the loss, as ``_LRFinder.suggestion`` finds it (the
    first ``skip_begin`` and last ``skip_end`` points and non-finite losses left out), but with
    the slope taken against log10(lr) when the rates are log-spaced: Lightning 2.6 takes it
    against lr, where the smallest rates' tiny steps make any wiggle of the loss the steepest
    (Lightning-AI/pytorch-lightning#21141). None when fewer than 2 points remain."""
    rates = torch.tensor(lrs, dtype=torch.float64)
    loss = torch.tensor(losses, dtype=torch.float64)
    kept = torch.arange(len(loss))[skip_begin : len(loss) - skip_end]
    kept = kept[torch.isfinite(loss[kept])]
    if len(kept) < 2:
        return None
    x = rates[kept].log10() if log_spaced else rates[kept]
    slope = torch.gradient(loss[kept], spacing=[x])[0]
    return int(kept[slope.argmin()])


@hydra.main(config_path="../../conf", config_name="lr_find", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    try:
        suggestion, out = find_lr(cfg)
    except LabError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
    if suggestion is None or not math.isfinite(suggestion):
        print(
            f"no suggestion: too few finite losses (the loss diverged early, or the run has fewer "
            f"than {cfg.lr_find.num_training} training batches); plot: {out / PLOT}"
        )
        return None
    print(f"suggested learning rate: {suggestion:.3g}  (optimizer.lr={suggestion:.3g})")
    print(f"plot: {out / PLOT}  curve: {out / TABLE}")
    return suggestion


if __name__ == "__main__":
    main()
