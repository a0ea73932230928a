"""Bad input caught early: the checks every run passes before anything is trained or written.

``check_config`` rejects impossible values; ``build_data_and_model`` finds and verifies the data,
splits it and builds the model, so a missing or damaged file, an impossible split or a model that
cannot take the data's shape stops the run before a checkpoint or an event file exists.
``ValidateBeforeRun`` (a Hydra callback, registered in ``conf/hydra/default.yaml``) runs both before
Hydra creates the run's folder, so a single run with bad input leaves nothing behind.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lightning_models.errors import LabError, build
from lightning_models.resume import LAST, find_last_checkpoint


def check_config(cfg: DictConfig) -> None:
    """Reject values that can only fail later, before anything is built or trained."""
    lr = cfg.optimizer.get("lr")
    if lr is not None and not (_is_number(lr) and lr > 0):
        raise LabError(f"optimizer.lr={lr!r} is not allowed; use a positive number such as 1e-3")
    wd = cfg.optimizer.get("weight_decay")
    if wd is not None and not (_is_number(wd) and wd >= 0):
        raise LabError(f"optimizer.weight_decay={wd!r} is not allowed; use 0 or a positive number")
    ckpt = cfg.get("ckpt_path")
    # `last` is resolved by train.py (lightning_models/resume.py) to a run's last.ckpt.
    if ckpt is not None and str(ckpt) != LAST and not Path(str(ckpt)).expanduser().is_file():
        raise LabError(
            f"ckpt_path={ckpt} is not a file; give the path of a .ckpt (a run's checkpoints/)"
        )
    epochs = cfg.trainer.get("max_epochs")
    if epochs is not None and not (isinstance(epochs, int) and (epochs >= 1 or epochs == -1)):
        raise LabError(
            f"trainer.max_epochs={epochs!r} is not allowed; use a whole number of at least 1 "
            "(or -1 for no limit)"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def build_data_and_model(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule]:
    """The run's datamodule, its data found, verified and split, and its model."""
    datamodule: L.LightningDataModule = build(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule, build(cfg.model)


def _check_something_to_resume(config: DictConfig) -> None:
    """``ckpt_path=last`` with no run of the same overrides to resume fails before a folder is
    made (train.py resolves it again, for runs started without this callback)."""
    if str(config.get("ckpt_path")) != LAST:
        return
    overrides = list(config.hydra.overrides.task) if "hydra" in config else []
    find_last_checkpoint(Path(config.paths.log_dir) / config.task_name / "runs", overrides)


class ValidateBeforeRun(Callback):
    """Runs the checks of a single run before Hydra writes its folder; a LabError ends the
    process there with the sentence and exit status 1.

    Only for ``python train.py ...`` without ``-m``: a sweep's jobs differ, so each job checks
    its own config and records a failure in its folder while the others go on. Evaluating a
    checkpoint (``train=false``) rebuilds another config and is checked by the job itself.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.get("train", True):
            return
        try:
            check_config(config)
            _check_something_to_resume(config)
            build_data_and_model(config)
        except LabError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(1)
