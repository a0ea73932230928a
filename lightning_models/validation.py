"""Bad input caught early: the checks every run passes before anything is trained or written.

``check_config`` rejects impossible values; ``check_run_can_be_built`` builds every part of the
run from the config (data found, verified and split; model; loss; optimizer; scheduler;
callbacks; loggers; Trainer; the checkpoint to resume) and tries the run's folder, turning
whatever a library refuses into one sentence naming the config key (``errors.reported_as``).
``ValidateBeforeRun`` (a Hydra callback, registered in ``conf/hydra/default.yaml``) runs both
before Hydra creates the run's folder, so a single run with bad input leaves nothing behind;
before a sweep's first job it runs ``check_sweep`` (what the launcher or the Optuna search
needs). ``build_callbacks``, ``build_loggers`` and ``build_trainer`` are also what train.py
builds the run with.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.experimental.callback import Callback
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from lightning_models.errors import LabError, build, reported_as
from lightning_models.resume import LAST, check_resumable, find_last_checkpoint, load_checkpoint


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
    with reported_as(f"data={_choice('data', cfg.data)}", "check the values under data."):
        datamodule: L.LightningDataModule = build(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")
    with reported_as(f"model={_choice('model', cfg.model.net)}", "check the values under model."):
        model = build(cfg.model)
    return datamodule, model


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The run's callbacks (the progress bar left out when trainer.enable_progress_bar=false:
    it is a callback here, for its refresh rate, which Lightning refuses beside the switch)."""
    callbacks = [
        c
        for name, node in _targets(cfg.get("callbacks"))
        if (c := _built(node, f"callbacks.{name}", f"fix it, or leave it out: ~callbacks.{name}"))
    ]
    if cfg.trainer.get("enable_progress_bar") is False:
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return callbacks


def build_loggers(cfg: DictConfig) -> list[Any]:
    return [
        _built(node, f"logger.{name}", "fix it, or choose another: logger=tensorboard")
        for name, node in _targets(cfg.get("logger"))
    ]


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list, **overrides: Any) -> L.Trainer:
    with reported_as("trainer", "check the values under trainer. (conf/trainer/)"):
        return build(cfg.trainer, callbacks=callbacks, logger=loggers or False, **overrides)


def check_run_can_be_built(cfg: DictConfig) -> None:
    """Build every part of the run from ``cfg`` once, before its folder exists: data, model,
    loss (on a pair of logits), optimizer on the model's parameters, scheduler on it,
    callbacks, loggers and the Trainer, and read the checkpoint to resume; check that the run's
    folder can be written. Whatever a library refuses is one sentence naming the key."""
    ckpt = cfg.get("ckpt_path")
    if ckpt is not None:  # `last` with nothing to resume says so before anything is built
        ckpt = _resolve_last(cfg) if str(ckpt) == LAST else Path(str(ckpt)).expanduser()
    _, model = build_data_and_model(cfg)
    with reported_as(f"loss={_choice('loss', cfg.loss)}", "check the values under loss."):
        classes = int(model.hparams.get("num_classes", 10))
        model.criterion(torch.zeros(2, classes), torch.zeros(2, dtype=torch.long))
    optimizer = f"optimizer={_choice('optimizer', cfg.optimizer)}"
    with reported_as(optimizer, "check the values under optimizer."):
        model.optimizer_factory(params=model.parameters())
    with reported_as(f"scheduler={_choice('scheduler', cfg.scheduler)}", "check scheduler."):
        model.optimizers_for(lambda: 1)
    callbacks, loggers = build_callbacks(cfg), build_loggers(cfg)
    with lightning_quiet():  # the run's own Trainer says what devices it found
        build_trainer(cfg, callbacks, loggers)
    if ckpt is not None:
        check_resumable(load_checkpoint(ckpt), model, ckpt)
    run_dir = OmegaConf.select(cfg, "hydra.run.dir", default=None) or cfg.paths.log_dir
    check_writable(Path(str(run_dir)), f"paths.log_dir={cfg.paths.log_dir}")


@contextlib.contextmanager
def lightning_quiet() -> Iterator[None]:
    """Lightning's info lines (devices found, tips) only from the Trainer that runs, once."""
    loggers = [logging.getLogger(name) for name in ("lightning", "lightning.pytorch")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def check_writable(folder: Path, what: str) -> None:
    """A LabError when ``folder`` could not be made and written (tried, not judged by mode
    bits, which root ignores): nearest existing parent not a folder, read-only, no space."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    with reported_as(what, "give a folder that can be written"):
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file, not a folder")
        tempfile.TemporaryDirectory(dir=existing).cleanup()


def _targets(group: DictConfig | None) -> list[tuple[str, DictConfig]]:
    return [
        (str(name), node)
        for name, node in (group or {}).items()
        if isinstance(node, DictConfig) and "_target_" in node
    ]


def _built(node: DictConfig, key: str, fix: str) -> Any:
    with reported_as(key, fix):
        return build(node)


def _choice(group: str, node: Any) -> str:
    """The group's choice as typed (``loss=cross_entropy_smoothed``), else its target's name."""
    from hydra.core.hydra_config import HydraConfig

    root = node._get_root() if isinstance(node, DictConfig) else None
    choice = OmegaConf.select(root, f"hydra.runtime.choices.{group}") if root else None
    if not choice and HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
    if choice:
        return str(choice)
    target = node.get("_target_", "") if isinstance(node, DictConfig) else ""
    return str(target).rsplit(".", 1)[-1] or "?"


def _resolve_last(cfg: DictConfig) -> Path:
    overrides = list(cfg.hydra.overrides.task) if "hydra" in cfg else []
    return find_last_checkpoint(Path(cfg.paths.log_dir) / cfg.task_name / "runs", overrides)


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
    # The parts are built as the run will build them, so `${paths.output_dir}` (Hydra's
    # runtime.output_dir, set when Hydra makes the folder) must resolve: to the folder the run
    # will have. Nothing is created there; Hydra sets its own config again for the run.
    from hydra.core.hydra_config import HydraConfig

    planned = copy.deepcopy(config)
    with open_dict(planned):
        planned.hydra.runtime.output_dir = str(Path(str(planned.hydra.run.dir)).absolute())
    HydraConfig.instance().set_config(planned)
    check_run_can_be_built(planned)


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
