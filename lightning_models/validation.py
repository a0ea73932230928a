"""Bad input caught early: the checks every run passes before anything is trained or written.

``check_config`` rejects impossible values; ``build_data_and_model`` finds and verifies the data,
splits it and builds the model, so a missing or damaged file, an impossible split or a model that
cannot take the data's shape stops the run before a checkpoint or an event file exists.
``ValidateBeforeRun`` (a Hydra callback, registered in ``conf/hydra/default.yaml``) runs both before
Hydra creates the run's folder, so a single run with bad input leaves nothing behind; before a
sweep's first job it runs ``check_sweep`` (what the launcher or the Optuna search needs).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.experimental.callback import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

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
    existing = cfg.get("existing_run", "fresh")
    if existing not in ("fresh", "continue"):
        raise LabError(f"existing_run={existing!r} is not allowed; use fresh or continue")
    epochs = cfg.trainer.get("max_epochs")
    if epochs is not None and not (isinstance(epochs, int) and (epochs >= 1 or epochs == -1)):
        raise LabError(
            f"trainer.max_epochs={epochs!r} is not allowed; use a whole number of at least 1 "
            "(or -1 for no limit)"
        )
    threads = cfg.get("torch_threads")
    if threads is not None and not (_is_whole(threads) and threads >= 1):
        raise LabError(
            f"torch_threads={threads!r} is not allowed; use a whole number of at least 1, or null "
            "for torch's default"
        )
    check_devices(cfg.trainer)


def check_devices(trainer: DictConfig) -> None:
    """A GPU run on a machine without (enough) GPUs stops with a sentence naming what to use
    instead, before Lightning's own error deep in the Trainer."""
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator not in ("gpu", "cuda"):
        return
    devices = trainer.get("devices", "auto")
    wanted = len(devices) if OmegaConf.is_list(devices) else devices
    wanted = wanted if _is_whole(wanted) and wanted >= 1 else 1  # auto, -1: every GPU there is
    found = torch.cuda.device_count()  # NVML: does not initialise CUDA
    if found >= wanted:
        return
    if "ddp" in str(trainer.get("strategy", "")):
        instead = "trainer=ddp_cpu (DDP on 2 CPU processes, the same code path)"
    else:
        instead = "trainer=cpu, or trainer=default (Lightning picks what there is)"
    need = f"{wanted} CUDA GPUs" if wanted > 1 else "a CUDA GPU"
    raise LabError(
        f"trainer.accelerator={accelerator} with trainer.devices={devices} needs {need}, but "
        f"this machine has {found or 'none'}; use {instead}"
    )


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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


def check_sweep(config: DictConfig) -> None:
    """What a whole sweep needs, checked before its first job: a SLURM launcher needs a number
    of devices to ask for, and an Optuna search a metric that every trial reports."""
    launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
    if launcher.endswith("SlurmLauncher"):
        gpus = str(config.trainer.get("accelerator")) in ("gpu", "cuda")
        for key in ("devices", "num_nodes") if gpus else ("num_nodes",):
            value = config.trainer.get(key, 1)
            if not (_is_whole(value) and value >= 1):
                raise LabError(
                    f"hydra/launcher=slurm asks SLURM for trainer.{key} (GPUs and tasks per "
                    f"node, nodes), which is {value!r}; give a number, e.g. trainer=ddp "
                    "trainer.devices=4"
                )
    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
    metric = str(config.get("optimized_metric"))
    if "optuna" in sweeper.lower() and metric.startswith("val/") and not config.data.val_size:
        raise LabError(
            f"the search optimises optimized_metric={metric}, but data.val_size=0 leaves no "
            "validation set; give data.val_size a count or a fraction (the test set must not "
            "choose the hyperparameters)"
        )


def _exit_on_lab_error(check: Callable[[DictConfig], None], config: DictConfig) -> None:
    try:
        check(config)
    except LabError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)


def _single_run_checks(config: DictConfig) -> None:
    check_config(config)
    _check_something_to_resume(config)
    build_data_and_model(config)


class ValidateBeforeRun(Callback):
    """Runs the checks of a single run before Hydra writes its folder, and a sweep's own checks
    before its first job; a LabError ends the process there with the sentence and exit status 1.

    A sweep's jobs differ, so each job checks its own config and records a failure in its folder
    while the others go on. Evaluating a checkpoint (``train=false``) rebuilds another config and
    is checked by the job itself. Under DDP only rank 0 checks (processes started by SLURM or
    torchrun each run Hydra; the lab's own DDP processes do not).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("train", True) and rank_zero_only.rank == 0:
            _exit_on_lab_error(_single_run_checks, config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_on_lab_error(check_sweep, config)
