"""What a run reports: its hyperparameters, its final metrics (``metrics.json``, TensorBoard's
HParams tab), the summary it prints, and the status a job leaves for the sweep table.

Every job leaves a ``metrics.json`` in its folder whatever happens: ``status`` ``ok``,
``diverged`` (a non-finite loss, or a model that gives every image one class) or ``failed``
(with the error), so a sweep table shows each job.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lightning_models import tracking
from lightning_models.checks import DivergedError, LabError, is_finite_number

log = logging.getLogger("train")

FINAL = ("test/acc", "test/loss", "val/acc_best")  # the figures of the summary and HParams tab
# The parts of a run built from a `_target_`: named in a column of their own, their values beside.
PARTS = ("optimizer", "scheduler", "loss", "init")


def hparams_of(cfg: DictConfig) -> dict[str, Any]:
    """What TensorBoard's HParams tab compares (and MLflow's params, W&B's config): the choices
    and values that define a run. The optimizer, scheduler, loss and init by name (``optimizer:
    adam``, the choice as typed; the class without Hydra) with their values beside
    (``optimizer/lr``), without Hydra's ``_target_`` and ``_partial_``."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    hparams = {
        "model": choices.get("model", cfg.model.net._target_.rsplit(".", 1)[-1]),
        "data": choices.get("data", cfg.data._target_.rsplit(".", 1)[-1]),
        "experiment": choices.get("experiment") or "none",
        "seed": cfg.seed,
    }
    for part in PARTS:
        hparams.update(described(part, cfg.get(part), choices.get(part)))
    hparams["batch_size"] = cfg.data.batch_size
    hparams["max_epochs"] = cfg.trainer.max_epochs
    return hparams


def described(group: str, node: Any, chosen: str | None = None) -> dict[str, Any]:
    """``{group: name, "group/key": value, ...}`` of one part: ``chosen`` or its class's name
    ("none" for an empty group), and its values. An object nested in it (Lightning's scheduler
    config holds its scheduler under ``scheduler:``) puts its values beside the outer ones."""
    values: dict[str, Any] = {}
    targets: list[str] = []

    def walk(prefix: str, mapping: dict) -> None:
        for key, value in mapping.items():
            if key == "_target_":
                targets.append(str(value))
            elif key == "_partial_":
                continue
            elif isinstance(value, dict):
                walk(prefix if "_target_" in value else f"{prefix}{key}/", value)
            else:
                values.setdefault(f"{group}/{prefix}{key}", value)

    walk("", OmegaConf.to_container(node, resolve=True) if node else {})
    name = chosen or (targets[0].rsplit(".", 1)[-1] if targets else "none")
    return {group: name, **values}


def log_hparams(loggers: list[Any], cfg: DictConfig) -> None:
    """hparams.yaml beside the event files, before any epoch."""
    hparams = hparams_of(cfg)
    for logger in loggers:
        logger.log_hyperparams(tracking.hparams_to_log(logger, hparams))


def floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def finish(
    trainer: L.Trainer, loggers: list[Any], cfg: DictConfig, metrics: dict[str, Any]
) -> None:
    """The final figures to TensorBoard's HParams tab (under their own tags, so the tab lines up
    the runs of a sweep), metrics.json, and the printed summary."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):  # the CSV logger takes no metrics here
            final = {f"hparams/{k.replace('/', '_')}": metrics[k] for k in FINAL if k in metrics}
            logger.log_hyperparams(hparams_of(cfg), final)
        logger.save()
    write_metrics(metrics, cfg)
    print_summary(trainer, metrics, cfg)
    tracking.end_wandb_run(failed=False)


def collapsed(model: L.LightningModule) -> bool:
    """True when the tested model gives (nearly) every image the same class, although the test
    set has several: training broke down (report 004's Adam lr 0.1 run ended at 11.35%, the share
    of the digit 1 in MNIST's test set)."""
    matrix = getattr(model, "test_confusion_matrix", None)
    if matrix is None or matrix.sum() == 0 or (matrix.sum(dim=1) > 0).sum() < 2:
        return False
    top_share = float(matrix.sum(dim=0).max() / matrix.sum())
    if top_share < 0.99:
        return False
    log.warning(
        "The model predicts one class for %.1f%% of the test images: training diverged or "
        "collapsed (status 'diverged'); a lower learning rate usually helps.",
        100 * top_share,
    )
    return True


@rank_zero_only
def write_metrics(metrics: dict[str, Any], cfg: DictConfig) -> None:
    """Final figures as JSON in the run dir, for scripts and tables that compare runs."""
    path = Path(cfg.paths.output_dir) / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


@rank_zero_only
def print_summary(trainer: L.Trainer, metrics: dict[str, Any], cfg: DictConfig) -> None:
    ckpt = trainer.checkpoint_callback
    lines = ["", "== summary =="]
    lines += [f"{key:<14} {metrics[key]:.4f}" for key in FINAL if key in metrics]
    lines.append(f"{'status':<14} {metrics['status']}")
    lines.append(f"{'epochs':<14} {metrics['epochs']}")
    lines.append(f"{'wall time':<14} {metrics['time/total_s']:.1f} s")
    lines.append(f"{'run dir':<14} {cfg.paths.output_dir}")
    if ckpt is not None and ckpt.best_model_path:
        lines.append(f"{'best ckpt':<14} {ckpt.best_model_path}")
    lines.append(f"{'tensorboard':<14} tensorboard --logdir {Path(cfg.paths.output_dir)}")
    lines += tracking.where_to_look(trainer.loggers)
    print("\n".join(lines), flush=True)


def objective(metrics: dict[str, Any], cfg: DictConfig) -> float | None:
    """``optimized_metric`` for sweepers, or None when the run has no finite value of it.

    hydra-optuna-sweeper records None as a failed trial and goes on, whereas a NaN stops the
    whole study (optuna 2 refuses it, and the sweeper then fails to mark the trial failed).
    """
    value = metrics.get(cfg.get("optimized_metric"))
    return float(value) if is_finite_number(value) else None


def single_run() -> bool:
    """Whether this process runs one job of ``python train.py`` (not a multirun's)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN


def job_failed(err: Exception, cfg: DictConfig) -> None:
    """Record a job's failure as its status; a single run's LabError ends the process with its
    sentence (exit 1), any other error of a single run is raised on. In a multirun the other
    jobs go on and the table shows this one's status. An open W&B run ends as failed, so that
    the next job of the process gets its own (lightning_models/tracking.py)."""
    tracking.end_wandb_run(failed=True)
    status = "diverged" if isinstance(err, DivergedError) else "failed"
    write_metrics({"status": status, "error": str(err)}, cfg)
    if isinstance(err, LabError):
        log.error("%s", err)
        if single_run():
            sys.exit(1)  # one sentence, no stack trace
    elif single_run():
        raise err
    else:
        log.exception("Job failed", exc_info=err)
