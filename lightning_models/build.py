"""Everything a run needs, built once from its config: :func:`build_run` returns a :class:`Run`.

The same call is the pre-run check: ``checks.ValidateBeforeRun`` builds the run before Hydra
makes its folder (so bad input leaves nothing behind) and hands the objects to the run
(:func:`keep_for_the_run`, :func:`prebuilt`), which then builds nothing again. Each part is built
inside ``checks.reported_as``: whatever a library refuses becomes one sentence naming the config
key it came from. Sizes flow from the data to the model through the config
(``${data.num_classes}``), so the datamodule is built first; the global seed is set before
either, so a run's initial weights depend on its seed alone.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lightning_models import run_config
from lightning_models.checkpoints import (
    RequeueBetweenBatches,
    check_resumable,
    load_checkpoint,
    requeue_signal,
    under_submitit,
)
from lightning_models.checks import (
    LabError,
    check_config,
    check_run_parts,
    check_writable,
    choice,
    reported_as,
)
from lightning_models.runtime import prepare_process

log = logging.getLogger("build")


@dataclass
class Run:
    """A run ready to fit and test: its config (as :mod:`run_config` made it) and its parts."""

    cfg: DictConfig
    datamodule: L.LightningDataModule
    model: L.LightningModule
    callbacks: list[L.Callback]
    loggers: list[Any]
    trainer: L.Trainer


def instantiate_node(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, but a LabError raised inside surfaces as itself.

    Hydra wraps whatever a ``_target_`` raises in an InstantiationException whose message is a
    repr of a repr; the user should read our sentence instead.
    """
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, LabError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None


def build_run(cfg: DictConfig) -> Run:
    """Check ``cfg``, set up the process, and build data, model, callbacks, loggers and Trainer.

    The loss is tried on a pair of logits, the optimizer on the model's parameters and the
    scheduler on it, the checkpoint to resume is read and compared with the model, and the run's
    folder is tried for writing: a mistake stops here, before anything is trained or written.
    """
    check_config(cfg)
    cfg = run_config.before_build(cfg)
    if cfg.get("torch_threads"):
        torch.set_num_threads(cfg.torch_threads)
    prepare_process()
    log.info("torch threads: %d (process %d)", torch.get_num_threads(), os.getpid())
    if cfg.get("seed") is not None:  # seed 0 is a seed
        L.seed_everything(cfg.seed, workers=True)

    with reported_as(f"data={choice('data', cfg.data)}", "check the values under data."):
        datamodule: L.LightningDataModule = instantiate_node(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")
    with reported_as(f"model={choice('model', cfg.model.net)}", "check the values under model."):
        model = instantiate_node(cfg.model)
    _try_loss_and_optimizer(cfg, model)
    checkpoint = None
    if cfg.get("train") and cfg.get("ckpt_path"):
        ckpt = Path(cfg.ckpt_path)
        checkpoint = load_checkpoint(ckpt)
        check_resumable(checkpoint, model, ckpt)

    cfg = run_config.for_the_run(cfg, datamodule.has_validation, checkpoint)
    check_writable(Path(cfg.paths.output_dir), f"paths.log_dir={cfg.paths.log_dir}")
    named = {
        name: instantiated(node, f"callbacks.{name}", f"fix it, or leave it out: ~callbacks.{name}")
        for name, node in _targets(cfg.get("callbacks"))
    }
    check_run_parts(cfg, model, datamodule, named)
    callbacks = list(named.values())
    if under_submitit():
        callbacks.append(RequeueBetweenBatches(requeue_signal()))
    loggers = [
        instantiated(node, f"logger.{name}", "fix it, or choose another: logger=tensorboard")
        for name, node in _targets(cfg.get("logger"))
    ]
    with reported_as("trainer", "check the values under trainer. (conf/trainer/)"):
        trainer = instantiate_node(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return Run(cfg, datamodule, model, callbacks, loggers, trainer)


def _try_loss_and_optimizer(cfg: DictConfig, model: L.LightningModule) -> None:
    with reported_as(f"loss={choice('loss', cfg.loss)}", "check the values under loss."):
        classes = int(model.hparams.get("num_classes", 10))
        # On a copy: a loss with state of its own stays as the run will first see it.
        copy.deepcopy(model.criterion)(torch.zeros(2, classes), torch.zeros(2, dtype=torch.long))
    optimizer = f"optimizer={choice('optimizer', cfg.optimizer)}"
    with reported_as(optimizer, "check the values under optimizer."):
        model.optimizer_factory(params=model.parameters())
    with reported_as(f"scheduler={choice('scheduler', cfg.scheduler)}", "check scheduler."):
        model.optimizers_for(lambda: 1)  # a one-cycle schedule's length: a stand-in


def instantiated(node: DictConfig, key: str, fix: str) -> Any:
    with reported_as(key, fix):
        return instantiate_node(node)


def _targets(group: DictConfig | None) -> list[tuple[str, DictConfig]]:
    return [
        (str(name), node)
        for name, node in (group or {}).items()
        if isinstance(node, DictConfig) and "_target_" in node
    ]


# --- built by the pre-run check, used by the run -------------------------------------------

_kept: tuple[str, Run] | None = None


def _key(cfg: DictConfig) -> str:
    plain = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.to_yaml(plain)


def keep_for_the_run(composed: DictConfig, run: Run) -> None:
    """Keep what the pre-run check built for the run of the same composed config."""
    global _kept
    _kept = (_key(composed), run)


def prebuilt(cfg: DictConfig) -> Run | None:
    """The run the pre-run check built from this same config, once; else None."""
    global _kept
    kept, _kept = _kept, None
    return kept[1] if kept is not None and kept[0] == _key(cfg) else None
