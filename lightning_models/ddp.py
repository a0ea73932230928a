"""DDP on one machine: the run's processes, started by torch's elastic launcher.

Lightning's ``ddp`` strategy would start ranks 1.. by running the command line again (the same
arguments plus ``hydra.run.dir=<rank 0's run dir>``). That reproduces a single run, but not a
sweep job: with ``-m`` each copy runs the whole sweep again into new folders, and in a joblib or
submitit worker the command line is the worker's. ``ddp_spawn`` avoids that but trains in
processes whose results Lightning only partly hands back (no epoch count, no test confusion
matrix, no exception type).

So every DDP run on one machine, single or in a sweep, is started here by torch's elastic
launcher (the engine of ``torchrun``): each process runs the job's entry point on this job's
config in this job's Hydra context, and Lightning finds the processes started (its TorchElastic
environment) and starts none. Rank 0 writes the run folder (checkpoints, TensorBoard,
metrics.json), exactly as a single process would; the others write nothing. Processes started by
SLURM (``hydra/launcher=slurm``, one task per device) or torchrun are Lightning's own business.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import configure_log, setup_globals
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record

from lightning_models.checks import LabError
from lightning_models.report import single_run, write_metrics

log = logging.getLogger("ddp")


def processes_to_start(trainer: L.Trainer) -> int:
    """How many DDP processes this job starts itself: 0 when Lightning needs none started (one
    device, or processes already started by SLURM, torchrun or this module)."""
    strategy = trainer.strategy
    environment = getattr(strategy, "cluster_environment", None)
    if strategy.launcher is None or environment is None:
        return 0
    if environment.creates_processes_externally or trainer.num_devices < 2:
        return 0
    if trainer.num_nodes > 1:
        raise LabError(
            f"trainer.num_nodes={trainer.num_nodes} needs one process per device started on "
            "every node: run the sweep with hydra/launcher=slurm (one task per device), or "
            "trainer.num_nodes=1"
        )
    return trainer.num_devices


def start_processes(cfg: DictConfig, processes: int, entry: str) -> float | None:
    """Run this job as ``processes`` DDP processes, each calling ``entry`` (``module:function``,
    importable in a fresh interpreter) with ``cfg``; return rank 0's result."""
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
    try:
        with _standard_start_method():
            results = elastic_launch(launch, _process)(entry, cfg, hydra_config, threads)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        message = f"DDP process {rank} failed (exit code {failure.exitcode})"
        if isinstance(failure.message, str) and failure.error_file_data:
            message += f": {failure.message}"
        if not (Path(cfg.paths.output_dir) / "metrics.json").is_file():
            write_metrics({"status": "failed", "error": message}, cfg)  # rank 0 could not
        log.error("%s", message)
        if single_run():
            sys.exit(1)
        return None
    return results[0]


@record  # a process's exception reaches the parent's error with its traceback
def _process(entry: str, cfg: DictConfig, hydra_config: dict[str, Any] | None,
             threads: int | None) -> Any:  # fmt: skip
    """One process of :func:`start_processes`: this job's Hydra context, then ``entry``."""
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
    module, function = entry.split(":")
    return getattr(importlib.import_module(module), function)(cfg)


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
