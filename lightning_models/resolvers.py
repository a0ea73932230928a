"""The config resolvers of ``conf/hydra/`` and ``conf/callbacks/``, registered when this module
is imported (train.py imports it before Hydra composes; the data configs' resolvers come with
``datamodules``)."""

from __future__ import annotations

import os
from typing import Any

from omegaconf import OmegaConf

from lightning_models.checks import is_whole
from lightning_models.console import progress_bar_target


def slurm_tasks(devices: Any) -> int:
    """SLURM tasks per node for ``trainer.devices``: one per device (SLURM starts the DDP
    processes), one where the trainer picks its devices itself (``auto``)."""
    return devices if is_whole(devices) else 1


def slurm_gpus(accelerator: Any, devices: Any) -> int | None:
    """GPUs per node to ask SLURM for: the trainer's devices when they are GPUs, else none (the
    default trainer and trainer=cpu run on the node's CPUs)."""
    return slurm_tasks(devices) if str(accelerator) in ("gpu", "cuda") else None


# Run and sweep folders are named by start time (to the microsecond) and process id
# (conf/hydra/default.yaml), so runs started at the same moment never share a folder. Cached, as
# Hydra caches `now`: a job that a joblib or submitit worker runs (another process) resolves the
# sweep folder from the launching process's cache, so all jobs of a sweep land in one folder.
OmegaConf.register_new_resolver("lab.pid", os.getpid, replace=True, use_cache=True)
OmegaConf.register_new_resolver("lab.slurm_tasks", slurm_tasks, replace=True)
OmegaConf.register_new_resolver("lab.slurm_gpus", slurm_gpus, replace=True)
# Rich's bar or log lines, by what this process's stdout is (conf/callbacks/progress_bar.yaml).
OmegaConf.register_new_resolver("lab.progress_bar", progress_bar_target, replace=True)
