"""Train, then test, one image classifier as composed by Hydra from ``conf/``.

    python train.py model=lenet5_modified data=fashion trainer.max_epochs=20
    python train.py -m optimizer.lr=1e-1,1e-2,1e-3

Everything the run needs (datamodule, LightningModule, callbacks, loggers, Trainer) is built from
the config here and nowhere else; the returned value is the ``optimized_metric`` for sweepers.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

import datamodules  # noqa: F401  (registers the config resolvers the data configs use)
from lightning_models.errors import DivergedError, LabError, build
from lightning_models.resume import (
    LAST,
    check_resumable,
    find_last_checkpoint,
    load_checkpoint,
    lr_note,
    run_dir_of,
)
from lightning_models.run_config import config_of_checkpoint
from lightning_models.validation import build_data_and_model, check_config

log = logging.getLogger("train")

# Run and sweep folders are named by start time (to the microsecond) and process id
# (conf/hydra/default.yaml), so runs started at the same moment never share a folder.
OmegaConf.register_new_resolver("lab.pid", os.getpid, replace=True)


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a callbacks/logger group that has a ``_target_``."""
    if not group:
        return []
    return [build(c) for c in group.values() if isinstance(c, DictConfig) and "_target_" in c]


def hparams_to_log(cfg: DictConfig) -> dict[str, Any]:
    """What TensorBoard's HParams tab compares: the choices and values that define a run."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return {
        "model": choices.get("model", cfg.model.net._target_.rsplit(".", 1)[-1]),
        "data": choices.get("data", cfg.data._target_.rsplit(".", 1)[-1]),
        "experiment": choices.get("experiment") or "none",
        "seed": cfg.seed,
        "optimizer": OmegaConf.to_container(cfg.optimizer, resolve=True),
        "scheduler": OmegaConf.to_container(cfg.scheduler, resolve=True)
        if cfg.scheduler
        else "none",
        "loss": cfg.loss._target_.rsplit(".", 1)[-1],
        "batch_size": cfg.data.batch_size,
        "max_epochs": cfg.trainer.max_epochs,
    }


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test as ``cfg`` says; return the final metrics (``val/…`` and ``test/…``).

    With ``train=false`` and a ``ckpt_path``, only test that checkpoint, with the model and data
    config of the run that wrote it.
    """
    if not cfg.get("train") and cfg.get("ckpt_path"):
        cfg = config_of_checkpoint(cfg)
    check_config(cfg)
    if cfg.get("seed") is not None:  # seed 0 is a seed
        L.seed_everything(cfg.seed, workers=True)
    datamodule, model = build_data_and_model(cfg)
    if cfg.get("train") and cfg.get("ckpt_path"):
        prepare_resume(cfg, model)

    trainer_overrides: dict[str, Any] = {}
    if not datamodule.has_validation:
        # No val/acc to select on: keep the latest checkpoint, skip the validation loop.
        trainer_overrides = {"limit_val_batches": 0, "num_sanity_val_steps": 0}
        if cfg.get("callbacks") and "model_checkpoint" in cfg.callbacks:
            with open_dict(cfg):
                cfg.callbacks.model_checkpoint.monitor = None
    callbacks = instantiate_all(cfg.get("callbacks"))
    loggers = instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = build(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, **trainer_overrides
    )

    hparams = hparams_to_log(cfg)
    for logger in loggers:
        logger.log_hyperparams(hparams)  # hparams.yaml beside the event files, before any epoch

    started = time.perf_counter()
    metrics: dict[str, Any] = {}
    if cfg.get("train"):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update(_floats(trainer.callback_metrics))
    if cfg.get("test"):
        trainer.test(model, datamodule=datamodule, ckpt_path=_test_checkpoint(trainer, cfg))
        metrics.update(_floats(trainer.callback_metrics))
    metrics["time/total_s"] = time.perf_counter() - started
    metrics["epochs"] = trainer.current_epoch
    metrics["status"] = "diverged" if _collapsed(model) else "ok"

    for logger in loggers:
        # Final figures under their own tags, so the HParams tab lines up runs of a sweep.
        logger.log_hyperparams(
            hparams,
            {f"hparams/{k.replace('/', '_')}": v for k, v in metrics.items() if k in _HP_METRICS},
        )
        logger.save()
    _write_metrics(metrics, cfg)
    _print_summary(trainer, metrics, cfg)
    return metrics


_HP_METRICS = ("test/acc", "test/loss", "val/acc_best")


def resolve_ckpt_path(cfg: DictConfig) -> Path:
    """The checkpoint ``cfg.ckpt_path`` names: a file, or for ``last`` the newest ``last.ckpt``
    of a run started with this invocation's overrides (``ckpt_path`` aside)."""
    if str(cfg.ckpt_path) != LAST:
        return Path(str(cfg.ckpt_path)).expanduser()
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return find_last_checkpoint(Path(cfg.paths.log_dir) / cfg.task_name / "runs", overrides)


def prepare_resume(cfg: DictConfig, model: L.LightningModule) -> None:
    """Point ``cfg`` at the checkpoint to resume and at the run dir that wrote it.

    The resumed fit continues in that run dir (checkpoints, TensorBoard, metrics.json), so one
    run stays one folder; this invocation's Hydra dir keeps only its .hydra and log. TensorBoard
    drops what the killed process logged after the checkpoint (``purge_step``), so no step
    appears twice. Another architecture stops here with a sentence; another learning rate is
    reported, and the checkpoint's wins (its optimizer state is restored).
    """
    ckpt = resolve_ckpt_path(cfg)
    checkpoint = load_checkpoint(ckpt)
    check_resumable(checkpoint, model, ckpt)
    note = lr_note(checkpoint, cfg.optimizer.get("lr"))
    if note:
        log.warning("%s", note)
    run_dir = run_dir_of(ckpt)
    with open_dict(cfg):
        cfg.ckpt_path = str(ckpt)
        if run_dir is not None:
            cfg.paths.output_dir = str(run_dir)
        for logger in (cfg.get("logger") or {}).values():
            if isinstance(logger, DictConfig) and "TensorBoardLogger" in logger.get("_target_", ""):
                logger.purge_step = int(checkpoint.get("global_step", 0))
    log.info(
        "Resuming from %s (epoch %s, step %s); the run continues in %s",
        ckpt,
        checkpoint.get("epoch"),
        checkpoint.get("global_step"),
        cfg.paths.output_dir,
    )


def _collapsed(model: L.LightningModule) -> bool:
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


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def _test_checkpoint(trainer: L.Trainer, cfg: DictConfig) -> str | None:
    """The best checkpoint of this fit; else ``ckpt_path`` (test only); else None (in memory)."""
    ckpt = trainer.checkpoint_callback
    if cfg.get("train") and ckpt is not None and ckpt.best_model_path:
        return ckpt.best_model_path
    if not cfg.get("train") and cfg.get("ckpt_path"):
        return cfg.ckpt_path
    log.warning("No checkpoint to test: testing the weights in memory.")
    return None


@rank_zero_only
def _write_metrics(metrics: dict[str, Any], cfg: DictConfig) -> None:
    """Final figures as JSON in the run dir, for scripts and tables that compare runs."""
    path = Path(cfg.paths.output_dir) / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def _print_summary(trainer: L.Trainer, metrics: dict[str, Any], cfg: DictConfig) -> None:
    ckpt = trainer.checkpoint_callback
    lines = ["", "== summary =="]
    for key in ("test/acc", "test/loss", "val/acc_best"):
        if key in metrics:
            lines.append(f"{key:<14} {metrics[key]:.4f}")
    lines.append(f"{'status':<14} {metrics['status']}")
    lines.append(f"{'epochs':<14} {metrics['epochs']}")
    lines.append(f"{'wall time':<14} {metrics['time/total_s']:.1f} s")
    lines.append(f"{'run dir':<14} {cfg.paths.output_dir}")
    if ckpt is not None and ckpt.best_model_path:
        lines.append(f"{'best ckpt':<14} {ckpt.best_model_path}")
    lines.append(f"{'tensorboard':<14} tensorboard --logdir {Path(cfg.paths.output_dir)}")
    print("\n".join(lines), flush=True)


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except Exception as err:
        # Every job leaves its status for the sweep table: diverged (non-finite loss) or failed.
        status = "diverged" if isinstance(err, DivergedError) else "failed"
        _write_metrics({"status": status, "error": str(err)}, cfg)
        single_run = HydraConfig.get().mode == RunMode.RUN
        if isinstance(err, LabError):
            log.error("%s", err)
            if single_run:
                sys.exit(1)  # one sentence, no stack trace
        elif single_run:
            raise
        else:
            log.exception("Job failed")
        # In a multirun the other jobs go on; the table shows this one's status.
        return float("nan")
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
