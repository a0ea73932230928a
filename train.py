"""Train, then test, one image classifier as composed by Hydra from ``conf/``.

    python train.py model=lenet5_modified data=fashion trainer.max_epochs=20
    python train.py -m optimizer.lr=1e-1,1e-2,1e-3
    python train.py trainer=ddp_cpu                      # one run on 2 processes (DDP)

Everything the run needs (datamodule, LightningModule, callbacks, loggers, Trainer) is built from
the config here and nowhere else; the returned value is the ``optimized_metric`` for sweepers.
A DDP run on one machine is started here as one process per device (:func:`start_ddp_processes`
says why not by Lightning); a job that submitit requeued resumes from its own last checkpoint.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import configure_log, setup_globals
from hydra.types import RunMode
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record

import datamodules  # noqa: F401  (registers the config resolvers the data configs use)
from lightning_models.errors import DivergedError, LabError, build
from lightning_models.loggers import CSVLogger
from lightning_models.resume import (
    LAST,
    LAST_FILE,
    RequeueBetweenBatches,
    check_resumable,
    find_last_checkpoint,
    load_checkpoint,
    lr_note,
    run_dir_of,
)
from lightning_models.run_config import config_of_checkpoint
from lightning_models.runtime import prepare_process
from lightning_models.validation import (
    build_callbacks,
    build_data_and_model,
    build_loggers,
    build_trainer,
    check_config,
    check_devices,
    lightning_quiet,
)

log = logging.getLogger("train")

# Run and sweep folders are named by start time (to the microsecond) and process id
# (conf/hydra/default.yaml), so runs started at the same moment never share a folder. Cached, as
# Hydra caches `now`: a job that a joblib or submitit worker runs (another process) resolves the
# sweep folder from the launching process's cache, so all jobs of a sweep land in one folder.
OmegaConf.register_new_resolver("lab.pid", os.getpid, replace=True, use_cache=True)


def slurm_tasks(devices: Any) -> int:
    """SLURM tasks per node for ``trainer.devices``: one per device (SLURM starts the DDP
    processes), one where the trainer picks its devices itself (``auto``)."""
    return devices if isinstance(devices, int) and not isinstance(devices, bool) else 1


def slurm_gpus(accelerator: Any, devices: Any) -> int | None:
    """GPUs per node to ask SLURM for: the trainer's devices when they are GPUs, else none (the
    default trainer and trainer=cpu run on the node's CPUs)."""
    return slurm_tasks(devices) if str(accelerator) in ("gpu", "cuda") else None


OmegaConf.register_new_resolver("lab.slurm_tasks", slurm_tasks, replace=True)
OmegaConf.register_new_resolver("lab.slurm_gpus", slurm_gpus, replace=True)


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
    resume_if_requeued(cfg)
    check_config(cfg)
    if cfg.get("torch_threads"):
        torch.set_num_threads(cfg.torch_threads)
    prepare_process()
    log.info("torch threads: %d (process %d)", torch.get_num_threads(), os.getpid())
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
    callbacks = build_callbacks(cfg)
    if _under_submitit():
        callbacks.append(RequeueBetweenBatches(_submitit_requeue_signal()))
    loggers = build_loggers(cfg)
    trainer = build_trainer(cfg, callbacks, loggers, **trainer_overrides)

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
        if isinstance(logger, TensorBoardLogger):  # the CSV logger takes no metrics here
            # Final figures under their own tags, so the HParams tab lines up runs of a sweep.
            final = {k: v for k, v in metrics.items() if k in _HP_METRICS}
            logger.log_hyperparams(
                hparams, {f"hparams/{k.replace('/', '_')}": v for k, v in final.items()}
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
    and the CSV logger drop what the killed process logged after the checkpoint
    (``purge_step``), so no step appears twice. Another architecture stops here with a sentence;
    another learning rate is reported, and the checkpoint's wins (its optimizer state is
    restored).
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
            if isinstance(logger, DictConfig) and _purges_steps(logger):
                logger.purge_step = int(checkpoint.get("global_step", 0))
    log.info(
        "Resuming from %s (epoch %s, step %s); the run continues in %s",
        ckpt,
        checkpoint.get("epoch"),
        checkpoint.get("global_step"),
        cfg.paths.output_dir,
    )


def _purges_steps(logger: DictConfig) -> bool:
    """Whether a logger config builds a logger that drops what a stopped run logged at or after
    a step (``purge_step``): TensorBoard's, or the lab's CSV logger, under any import path."""
    try:
        cls = hydra.utils.get_class(str(logger.get("_target_")))
    except (ImportError, ValueError):  # a bad target is reported when the loggers are built
        return False
    return issubclass(cls, TensorBoardLogger | CSVLogger)


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


@rank_zero_only
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


def objective(metrics: dict[str, Any], cfg: DictConfig) -> float | None:
    """``optimized_metric`` for sweepers, or None when the run has no finite value of it.

    hydra-optuna-sweeper records None as a failed trial and goes on, whereas a NaN stops the
    whole study (optuna 2 refuses it, and the sweeper then fails to mark the trial failed).
    """
    value = metrics.get(cfg.get("optimized_metric"))
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


# --- scaling out: DDP processes, requeued jobs ------------------------------------------------


def resume_if_requeued(cfg: DictConfig) -> None:
    """Point ``ckpt_path`` at this job's own ``checkpoints/last.ckpt`` when submitit runs the job
    again after a preemption or a timeout (``hydra/launcher=slurm``).

    submitit then calls the launcher's ``checkpoint()``, which resubmits the job with the same
    overrides and number, so it runs again in the same folder; a last.ckpt found there is its
    own, written before it was stopped. A fresh job's folder never holds one.

    ``existing_run=continue`` does the same outside submitit, for jobs started again in a fixed
    folder (``hydra.sweep.dir=...``, as :mod:`lightning_models.reproduce` does).
    """
    continuing = cfg.get("existing_run") == "continue"
    if not cfg.get("train") or cfg.get("ckpt_path") or not (_under_submitit() or continuing):
        return
    last = Path(cfg.paths.output_dir) / "checkpoints" / LAST_FILE
    if last.is_file():
        who = "Requeued job" if _under_submitit() else "existing_run=continue"
        log.warning("%s: resuming from its own %s", who, last)
        with open_dict(cfg):
            cfg.ckpt_path = str(last)


def finished_metrics(cfg: DictConfig) -> dict[str, Any] | None:
    """With ``existing_run=continue``, the metrics of a run that already finished in this job's
    folder (status ok or diverged; a failed one runs again), else None."""
    if cfg.get("existing_run") != "continue" or not cfg.get("train"):
        return None
    path = Path(cfg.paths.output_dir) / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return metrics if metrics.get("status") in ("ok", "diverged") else None


def _under_submitit() -> bool:
    return "SUBMITIT_FOLDER" in os.environ


def _submitit_requeue_signal() -> int:
    """The signal submitit's job handles as "preempted or timed out" (SIGUSR2 unless the
    SUBMITIT_PREEMPT_SIGNAL environment variable names another)."""
    from submitit import JobEnvironment

    return JobEnvironment._usr_sig()


def ddp_processes_to_start(cfg: DictConfig) -> int:
    """How many DDP processes this job starts itself: 0 when Lightning needs none started (one
    device, or processes already started by SLURM or torchrun)."""
    with lightning_quiet():
        trainer = build(
            cfg.trainer,
            logger=False,
            callbacks=[],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    if not isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher):
        return 0
    if trainer.num_nodes > 1:
        raise LabError(
            f"trainer.num_nodes={trainer.num_nodes} needs one process per device started on "
            "every node: run the sweep with hydra/launcher=slurm (one task per device), or "
            "trainer.num_nodes=1"
        )
    return trainer.num_devices if trainer.num_devices > 1 else 0


def start_ddp_processes(cfg: DictConfig, processes: int) -> float | None:
    """Run this job as ``processes`` DDP processes; return rank 0's objective.

    Lightning's ``ddp`` strategy would start ranks 1.. by running this command line again
    (lightning/fabric/strategies/launchers/subprocess_script.py, ``_hydra_subprocess_cmd``: the
    same arguments plus ``hydra.run.dir=<rank 0's run dir>``). That reproduces a single run, but
    not a sweep job: with ``-m`` each copy runs the whole sweep again into new folders, and in a
    joblib or submitit worker the command line is the worker's. ``ddp_spawn`` avoids that but
    trains in processes whose results Lightning only partly hands back (no epoch count, no test
    confusion matrix, no exception type).

    So every DDP run on one machine, single or in a sweep, is started here by torch's elastic
    launcher (the engine of ``torchrun``): each process runs :func:`run` on this job's config in
    this job's Hydra context, and Lightning finds the processes started (its TorchElastic
    environment) and starts none. Rank 0 writes the run folder (checkpoints, TensorBoard,
    metrics.json), exactly as a single process would; the others write nothing.
    """
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    launch = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=f"lab-{os.getpid()}-{time.time_ns()}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port, as torchrun --standalone
        max_restarts=0,
        monitor_interval=0.5,
        start_method="forkserver",  # forked from a fresh server: no CUDA or OpenMP state
    )
    # What the processes need of Hydra's config, as plain values: its structured classes may not
    # pickle by reference in a launcher's worker (joblib unpickles the plugins' configs by value).
    hydra_config = None
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        hydra_config = {
            key: OmegaConf.to_container(hydra[key], resolve=True)
            if OmegaConf.is_config(hydra[key])
            else hydra[key]
            for key in ("mode", "verbose", "runtime", "overrides", "job", "job_logging")
        }
    threads = None
    if not cfg.get("torch_threads") and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, _cores() // processes)  # the cores shared out, as torchrun does
    log.info("DDP: starting %d processes (torch.distributed elastic launcher)", processes)
    # The entry point by its module name, which spawned processes can import wherever this job
    # runs (in a joblib or submitit worker, __main__ is not this file).
    entry = importlib.import_module("train")._ddp_process
    try:
        with _standard_start_method():
            results = elastic_launch(launch, entry)(cfg, hydra_config, threads)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        message = f"DDP process {rank} failed (exit code {failure.exitcode})"
        if isinstance(failure.message, str) and failure.error_file_data:
            message += f": {failure.message}"
        if not (Path(cfg.paths.output_dir) / "metrics.json").is_file():
            _write_metrics({"status": "failed", "error": message}, cfg)  # rank 0 could not
        log.error("%s", message)
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN:
            sys.exit(1)
        return None
    return results[0]


@record  # a process's exception reaches the parent's error with its traceback
def _ddp_process(cfg: DictConfig, hydra_config: dict[str, Any] | None, threads: int | None):
    """One process of :func:`start_ddp_processes`: this job's Hydra context, then :func:`run`."""
    # The launcher sets RANK only now, after Lightning read the environment on import; Lightning
    # sets the same value once its strategy is set up, which is too late for the lines below.
    rank_zero_only.rank = int(os.environ["RANK"])
    if hydra_config is not None:
        setup_globals()  # Hydra's resolvers (hydra:, now:) in this fresh interpreter
        hydra_node = OmegaConf.structured(HydraConf)
        with open_dict(hydra_node):  # keys a plugin adds (e.g. hydra.env) too
            hydra_node.merge_with(hydra_config)
        HydraConfig.instance().set_config(OmegaConf.create({"hydra": hydra_node}))
        if rank_zero_only.rank == 0:  # rank 0 logs to the console and the run's log file
            configure_log(HydraConfig.get().job_logging, HydraConfig.get().verbose)
    if threads:
        torch.set_num_threads(threads)
    return run(cfg)


@contextlib.contextmanager
def _standard_start_method() -> Iterator[None]:
    """A joblib worker's multiprocessing start method is loky's, which the processes it starts
    look up and cannot find: the platform's default meanwhile."""
    current = multiprocessing.get_start_method(allow_none=True)
    if current is None or current in multiprocessing.get_all_start_methods():
        yield
        return
    multiprocessing.set_start_method(None, force=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(current, force=True)


def _cores() -> int:
    """CPU cores this process may use (a SLURM or taskset allocation, else the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# --- entry point ------------------------------------------------------------------------------


def run(cfg: DictConfig, launch: bool = False) -> float | None:
    """Train as ``cfg`` says and return :func:`objective`; with ``launch``, on the DDP processes
    the run needs (:func:`ddp_processes_to_start`).

    Whatever happens, the job leaves its status in metrics.json for the sweep table. A process
    of rank > 0 (DDP) logs warnings only; rank 0 writes the run folder.
    """
    if rank_zero_only.rank > 0:
        logging.getLogger().setLevel(logging.WARNING)
    done = finished_metrics(cfg)
    if done is not None:
        log.info("existing_run=continue: %s finished already; not run again", cfg.paths.output_dir)
        return objective(done, cfg)
    try:
        if launch:
            check_devices(cfg.trainer)  # before Lightning is asked how to start the processes
            processes = ddp_processes_to_start(cfg)
            if processes:
                return start_ddp_processes(cfg, processes)
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
        return None
    return objective(metrics, cfg)


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return run(cfg, launch=True)


if __name__ == "__main__":
    main()
