"""Input checks: the one home of the lab's error type and of every check of what a user gives.

A mistake a user can fix (a bad config value, missing or damaged data, an impossible device) is a
:class:`LabError`: one sentence naming what was wrong (the config key and its value, or the file)
and what to do. ``train.py`` prints it and exits non-zero; in a multirun the job records it and the
sweep goes on. Every module checks its input with the helpers here (``check_int``,
``check_bool``, ``reported_as``), so one value is judged the same way wherever it is read.

:class:`ValidateBeforeRun` (a Hydra callback, ``conf/hydra/default.yaml``) runs the checks of a
single run, and builds the run (:func:`lightning_models.build.build_run`), before Hydra creates
the run's folder: a run with bad input leaves nothing behind. Before a sweep's first job it runs
:func:`check_sweep`.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import math
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("checks")


class LabError(ValueError):
    """A user-fixable problem, reported as one sentence instead of a stack trace."""


class DivergedError(LabError):
    """Training produced a non-finite loss; the run stopped before that step's update."""


# --- values ---------------------------------------------------------------------------------


def is_whole(value: Any) -> bool:
    """An int, not a bool (YAML's true is an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_fraction(value: Any) -> bool:
    """A share of a set (of images): a float strictly between 0 and 1."""
    return isinstance(value, float) and 0 < value < 1


def is_finite_number(value: Any) -> bool:
    return is_number(value) and math.isfinite(value)


def check_int(key: str, value: Any, minimum: int, or_fraction: bool = False) -> None:
    """Reject anything but a whole number >= ``minimum``, naming the config key."""
    if not (is_whole(value) and value >= minimum):
        allowed = f"a whole number of at least {minimum}"
        if or_fraction:
            allowed += " or a fraction between 0 and 1"
        raise LabError(f"{key}={value!r} is not allowed; use {allowed}")


def check_bool(key: str, value: Any) -> None:
    """Reject anything but true/false: a string such as 'no' would be truthy and switch it on."""
    if not isinstance(value, bool):
        raise LabError(f"{key}={value!r} is not allowed; use true or false")


@contextlib.contextmanager
def reported_as(what: str, fix: str) -> Iterator[None]:
    """Any exception raised inside becomes a LabError: one sentence naming ``what`` (the config
    key, its choice, or the file) with the library's own message, and ``fix``, what to do."""
    try:
        yield
    except LabError:
        raise
    except Exception as err:  # noqa: BLE001 - the point: any library's refusal, named
        raise LabError(f"{what} cannot be used: {library_message(err)}; {fix}") from err


def library_message(err: BaseException) -> str:
    """The innermost cause's message, on one line (Hydra wraps what a _target_ raises)."""
    while err.__cause__ is not None and isinstance(err, InstantiationException):
        err = err.__cause__
    text = " ".join(str(err).split()) or type(err).__name__
    return text.rstrip(".")


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


# --- the run's config -----------------------------------------------------------------------


def check_config(cfg: DictConfig) -> None:
    """Reject values that can only fail later, before anything is built or trained."""
    lr = cfg.optimizer.get("lr")
    if lr is not None and not (is_number(lr) and lr > 0):
        raise LabError(f"optimizer.lr={lr!r} is not allowed; use a positive number such as 1e-3")
    wd = cfg.optimizer.get("weight_decay")
    if wd is not None and not (is_number(wd) and wd >= 0):
        raise LabError(f"optimizer.weight_decay={wd!r} is not allowed; use 0 or a positive number")
    from lightning_models.checkpoints import LAST  # which imports this module

    ckpt = cfg.get("ckpt_path")
    if ckpt is not None and str(ckpt) != LAST and not Path(str(ckpt)).expanduser().is_file():
        raise LabError(
            f"ckpt_path={ckpt} is not a file; give the path of a .ckpt (a run's checkpoints/)"
        )
    existing = cfg.get("existing_run", "fresh")
    if existing not in ("fresh", "continue"):
        raise LabError(f"existing_run={existing!r} is not allowed; use fresh or continue")
    epochs = cfg.trainer.get("max_epochs")
    if epochs is not None and not (is_whole(epochs) and (epochs >= 1 or epochs == -1)):
        raise LabError(
            f"trainer.max_epochs={epochs!r} is not allowed; use a whole number of at least 1 "
            "(or -1 for no limit)"
        )
    threads = cfg.get("torch_threads")
    if threads is not None and not (is_whole(threads) and threads >= 1):
        raise LabError(
            f"torch_threads={threads!r} is not allowed; use a whole number of at least 1, or null "
            "for torch's default"
        )
    check_devices(cfg.trainer)
    check_logger_packages(cfg.get("logger"))
    clip = cfg.trainer.get("gradient_clip_val")
    # Lightning takes a negative value, and clipping to it flips every gradient's sign.
    if clip is not None and not (is_finite_number(clip) and clip >= 0):
        raise LabError(
            f"trainer.gradient_clip_val={clip!r} is not allowed; use a positive number (the "
            "largest gradient norm, or value with gradient_clip_algorithm=value), or null for none"
        )


def builds(node: Any, kind: type | Any) -> bool:
    """Whether a config node builds an instance of ``kind`` (under any import path)."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return False
    try:
        cls = hydra.utils.get_class(str(node._target_))
    except (ImportError, ValueError):  # a bad target is reported when the part is built
        return False
    return isinstance(cls, type) and issubclass(cls, kind)


def check_logger_packages(loggers: DictConfig | None) -> None:
    """``logger=mlflow`` or ``logger=wandb`` without its package (the optional extra
    ``tracking``) stops with a sentence saying what to install, before Lightning's
    ModuleNotFoundError deep in the build. Lightning's logger classes import without them."""
    from lightning.pytorch.loggers import MLFlowLogger, WandbLogger

    for name, node in (loggers or {}).items():
        for kind, package in ((MLFlowLogger, "mlflow"), (WandbLogger, "wandb")):
            if builds(node, kind) and importlib.util.find_spec(package) is None:
                raise LabError(
                    f"logger={name} needs the {package} package, which is not installed; "
                    'install the lab\'s tracking extra: pip install -e ".[tracking]"'
                )


def check_devices(trainer: DictConfig) -> None:
    """A GPU run on a machine without (enough) GPUs stops with a sentence naming what to use
    instead, before Lightning's own error deep in the Trainer."""
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator not in ("gpu", "cuda"):
        return
    devices = trainer.get("devices", "auto")
    wanted = len(devices) if OmegaConf.is_list(devices) else devices
    wanted = wanted if is_whole(wanted) and wanted >= 1 else 1  # auto, -1: every GPU there is
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


def check_run_parts(
    cfg: DictConfig, model: Any, datamodule: Any, callbacks: dict[str, Any]
) -> None:
    """Combinations of the built parts that would fail, or mislead, only once the run has
    started: weight averaging twice, SWA cut short by early stopping, early stopping on a
    validation metric without a validation set; gradient clipping or mixed batches (``data.mix``,
    trained on class probabilities) for a net updated by hand, or mixed batches with a loss that
    takes class indices only (nll, multi_margin). Flip test-time augmentation on data whose
    mirror is another class (digits) is warned about."""
    from lightning.pytorch.callbacks import EarlyStopping, StochasticWeightAveraging
    from lightning.pytorch.callbacks.weight_averaging import WeightAveraging

    averages = WeightAveraging | StochasticWeightAveraging
    averaging = [n for n, c in callbacks.items() if isinstance(c, averages)]
    if len(averaging) > 1:
        raise LabError(
            f"callbacks {' and '.join(averaging)} both average the weights; keep one, e.g. "
            f"~callbacks.{averaging[-1]}"
        )
    stopping = [(n, c) for n, c in callbacks.items() if isinstance(c, EarlyStopping)]
    swa = [n for n, c in callbacks.items() if isinstance(c, StochasticWeightAveraging)]
    if stopping and swa:
        raise LabError(
            f"callbacks.{swa[0]} averages the weights up to the last epoch, which "
            f"callbacks.{stopping[0][0]} may never reach; leave one out, e.g. "
            f"~callbacks.{stopping[0][0]}"
        )
    for name, callback in stopping:
        if str(callback.monitor).startswith("val/") and not datamodule.has_validation:
            raise LabError(
                f"callbacks.{name} stops on {callback.monitor}, but this run has no validation "
                f"set (data.val_size=0); give data.val_size a number of images, or leave it out: "
                f"~callbacks.{name}"
            )
    for name in swa:
        start = getattr(callbacks[name], "epoch_start", None)
        epochs = cfg.trainer.get("max_epochs")
        if isinstance(start, float) and epochs == -1:
            raise LabError(
                f"callbacks.{name}.swa_epoch_start={start} is a fraction of trainer.max_epochs, "
                "which is -1 (no limit); give the first averaging epoch as a whole number"
            )
        if is_whole(start) and is_whole(epochs) and start > epochs > 0:
            raise LabError(
                f"callbacks.{name}.swa_epoch_start={start} comes after the last epoch "
                f"(trainer.max_epochs={epochs}): nothing would be averaged; give an epoch up to "
                f"{epochs}, or a fraction such as 0.8"
            )
    mix = getattr(getattr(datamodule, "augmentation", None), "mix", None)
    by_hand = not getattr(model, "automatic_optimization", True)
    for key, value, why in (
        ("trainer.gradient_clip_val", cfg.trainer.get("gradient_clip_val"), "no gradients to clip"),
        ("data.mix", mix, "no way to learn from class probabilities"),
    ):
        if value and by_hand:
            raise LabError(
                f"{key}={value} cannot be used with model={choice('model', cfg.model.net)}: it "
                f"updates its weights by hand (manual_update) from class indices, with {why}; "
                f"use another model, or leave {key} at null"
            )
    if mix is not None:
        classes = int(model.hparams.get("num_classes", 10))
        soft = torch.full((2, classes), 1 / classes)
        loss = choice("loss", cfg.loss)
        try:
            copy.deepcopy(model.criterion)(torch.zeros(2, classes), soft)
        except Exception as err:  # noqa: BLE001 - any refusal of soft targets, named
            raise LabError(
                f"data.mix={mix} trains on class probabilities, which loss={loss} "
                f"({type(model.criterion).__name__}) cannot take; use loss=cross_entropy or "
                "cross_entropy_smoothed, or data.mix=null"
            ) from err
    if getattr(model, "tta_flip", False) and not getattr(datamodule, "mirror_keeps_label", True):
        log.warning(
            "model.tta_flip=true averages the predictions on each image and on its mirror, but "
            "a mirrored %s image is no image of its class; expect lower accuracy",
            getattr(datamodule, "name", "such"),
        )


def choice(group: str, node: Any) -> str:
    """The group's choice as typed (``loss=cross_entropy_smoothed``), else its target's name."""
    from hydra.core.hydra_config import HydraConfig

    found = HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None
    if found:
        return str(found)
    target = node.get("_target_", "") if isinstance(node, DictConfig) else ""
    return str(target).rsplit(".", 1)[-1] or "?"


def check_sweep(config: DictConfig) -> None:
    """What a whole sweep needs, checked before its first job: a SLURM launcher needs a number
    of devices to ask for, and an Optuna search a metric that every trial reports."""
    launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
    if launcher.endswith("SlurmLauncher"):
        gpus = str(config.trainer.get("accelerator")) in ("gpu", "cuda")
        for key in ("devices", "num_nodes") if gpus else ("num_nodes",):
            value = config.trainer.get(key, 1)
            if not (is_whole(value) and value >= 1):
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


# --- before Hydra makes the run's folder ----------------------------------------------------


def _exit_on_lab_error(check: Callable[[DictConfig], None], config: DictConfig) -> None:
    try:
        check(config)
    except LabError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)


def _single_run_checks(config: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from lightning_models.build import build_run, keep_for_the_run

    # The run is built as it will run, so `${paths.output_dir}` (Hydra's runtime.output_dir, set
    # when Hydra makes the folder) must resolve: to the folder the run will have. Nothing is
    # created there; Hydra sets its own config again for the run.
    # Resolved on Hydra's own config first: `now` and `lab.pid` are cached there, so the folder
    # Hydra makes next is this one (a copy would resolve the time anew).
    run_dir = str(Path(str(config.hydra.run.dir)).absolute())
    planned = copy.deepcopy(config)
    with open_dict(planned):
        planned.hydra.runtime.output_dir = run_dir
    HydraConfig.instance().set_config(planned)
    keep_for_the_run(config, build_run(planned))


class ValidateBeforeRun(Callback):
    """Checks and builds a single run before Hydra writes its folder (the run then uses what was
    built), and checks a sweep before its first job; a LabError ends the process there with the
    sentence and exit status 1.

    A sweep's jobs differ, so each job builds and checks its own config and records a failure in
    its folder while the others go on. Evaluating a checkpoint (``train=false``) rebuilds another
    config and is checked by the job itself. Under DDP only rank 0 checks (processes started by
    SLURM or torchrun each run Hydra; the lab's own DDP processes do not). A sweep's MLflow store
    is created here too, once, before its jobs (lightning_models/tracking.py).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("train", True) and rank_zero_only.rank == 0:
            _exit_on_lab_error(_single_run_checks, config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from lightning_models import tracking

        _exit_on_lab_error(check_sweep, config)
        tracking.prepare_mlflow_stores(config)  # before parallel jobs race to create them
