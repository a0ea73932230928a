"""How the config a run runs differs from the composed one: every edit of it, in one place.

The composed config (``.hydra/config.yaml`` of the run) says what the user asked for. A run
differs from it in these cases only, each decided here:

- **test only** (``train=false ckpt_path=...``): the model and data are those of the run that
  wrote the checkpoint, read from its ``.hydra/config.yaml``, whatever this command says; where
  to find data, where to write and on which device stay this invocation's.
- **resumed** (``ckpt_path=<file>`` or ``last``, a requeued job, ``existing_run=continue``):
  ``ckpt_path`` names the checkpoint (lightning_models/checkpoints.py chooses it), the run
  continues in the folder of the run that wrote it (checkpoints, TensorBoard, metrics.json: one
  run stays one folder; this invocation's folder keeps only its .hydra and log), and the
  TensorBoard and CSV loggers drop what the stopped process logged after the checkpoint
  (``purge_step``), so no step appears twice; an MLflow logger logs on into the run's MLflow run
  (lightning_models/tracking.py).
- **no validation set** (``data.val_size=0``, as in the reports): no validation loop and no
  sanity check; the best checkpoint is the latest (``callbacks.model_checkpoint.monitor=null``).
- **progress bar off** (``trainer.enable_progress_bar=false``): no progress bar callback (it is a
  callback here, for its refresh rate, which Lightning refuses beside the switch).

:func:`before_build` makes the first two choices (they decide what is built);
:func:`for_the_run` the others, once the data is known. ``paths.output_dir`` is then a plain
path, so the run's config resolves without Hydra.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from lightning_models import tracking
from lightning_models.checkpoints import (
    checkpoint_to_resume,
    lr_note,
    run_dir_of,
    saved_config_of,
)
from lightning_models.checks import LabError, builds
from lightning_models.loggers import CSVLogger

log = logging.getLogger("run_config")


def config_of_checkpoint(cfg: DictConfig) -> DictConfig:
    """The config the run of ``cfg.ckpt_path`` was trained with (for testing or predicting), with
    this invocation's paths, trainer, callbacks, loggers, stages and seed."""
    ckpt = Path(cfg.ckpt_path).expanduser()
    if not ckpt.is_file():
        raise LabError(
            f"ckpt_path={cfg.ckpt_path} is not a file; give a .ckpt of a run's checkpoints/"
        )
    saved = saved_config_of(ckpt)
    if not saved.is_file():
        raise LabError(
            f"no training config beside ckpt_path={cfg.ckpt_path} (looked for {saved}); evaluate a "
            "checkpoint inside its run dir, <run dir>/checkpoints/<name>.ckpt"
        )
    trained = OmegaConf.load(saved)
    for key in ("paths", "trainer", "callbacks", "logger", "train", "test", "ckpt_path", "seed"):
        trained[key] = cfg.get(key)
    return trained


def before_build(cfg: DictConfig) -> DictConfig:
    """The config with the checkpoint's model and data (test only) and with ``ckpt_path`` the
    checkpoint to resume (a plain path; absent for a fresh fit)."""
    if not cfg.get("train") and cfg.get("ckpt_path"):
        return config_of_checkpoint(cfg)
    cfg = copy.deepcopy(cfg)
    resume = checkpoint_to_resume(cfg)
    with open_dict(cfg):
        cfg.ckpt_path = str(resume) if resume is not None else None
    return cfg


def for_the_run(
    cfg: DictConfig, has_validation: bool, checkpoint: dict[str, Any] | None
) -> DictConfig:
    """The config the run's callbacks, loggers and Trainer are built from (module docstring):
    ``checkpoint`` is the one resumed (None for a fresh fit)."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(Path(cfg.paths.output_dir).absolute())
        if checkpoint is not None:
            _continue_in_its_run(cfg, checkpoint)
        if not has_validation:
            cfg.trainer.limit_val_batches = 0
            cfg.trainer.num_sanity_val_steps = 0
            if cfg.get("callbacks") and "model_checkpoint" in cfg.callbacks:
                cfg.callbacks.model_checkpoint.monitor = None
        if cfg.trainer.get("enable_progress_bar") is False and cfg.get("callbacks"):
            for name in [n for n, node in cfg.callbacks.items() if builds(node, ProgressBar)]:
                del cfg.callbacks[name]
        cfg.pop("hydra", None)  # the planned Hydra node of the pre-run check (checks.py)
    return cfg


def _continue_in_its_run(cfg: DictConfig, checkpoint: dict[str, Any]) -> None:
    ckpt = Path(cfg.ckpt_path)
    note = lr_note(checkpoint, cfg.optimizer.get("lr"))
    if note:
        log.warning("%s", note)
    run_dir = run_dir_of(ckpt)
    if run_dir is not None:
        cfg.paths.output_dir = str(run_dir.absolute())
    for logger in (cfg.get("logger") or {}).values():
        if builds(logger, TensorBoardLogger | CSVLogger):
            logger.purge_step = int(checkpoint.get("global_step", 0))
    tracking.continue_mlflow_runs((cfg.get("logger") or {}).values(), cfg.paths.output_dir)
    log.info(
        "Resuming from %s (epoch %s, step %s); the run continues in %s",
        ckpt,
        checkpoint.get("epoch"),
        checkpoint.get("global_step"),
        cfg.paths.output_dir,
    )
