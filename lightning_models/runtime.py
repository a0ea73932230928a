"""Process-wide settings that make training steps cheaper, applied before a run starts
(:func:`prepare_process`: ``train.py`` for every run, the speed benchmark for every path)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

import torch
from lightning.pytorch.profilers import PassThroughProfiler

NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def no_gpu_probe_per_step() -> bool:
    """On a machine without a CUDA GPU, stop torch from looking for one at every optimizer step.

    Importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` (asking for GPUs must not
    initialise CUDA before DDP forks). Until CUDA is initialised, torch then answers
    ``torch.cuda.is_available()`` by loading NVML anew, and every ``Optimizer.step`` asks it
    (``_accelerator_graph_capture_health_check``): 39 µs per step instead of 2 µs (measured on
    the 2-core CPU machine, CUDA build of torch). Where NVML finds no GPU there is no CUDA for a
    fork to break, so the variable goes and torch's own cached count answers. Returns whether it
    did so; a machine with a GPU keeps the variable.
    """
    if os.environ.get(NVML_CHECK) != "1" or torch.cuda.device_count() > 0:
        return False
    del os.environ[NVML_CHECK]
    return True


# mallopt() parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 2**20  # the largest glibc accepts on 64-bit systems


def keep_freed_memory() -> bool:
    """On Linux (glibc), keep the memory that freed tensors leave for the next ones.

    Every training step allocates and frees the same activation and gradient buffers. glibc's
    malloc serves large blocks with fresh ``mmap``s and hands freed memory at the top of its heap
    back to the system, adapting both thresholds as it goes; depending on the order of the first
    allocations, a process then page-faults through every step's buffers, or not. Measured on the
    2-core machine: the same LeNet-5 loop ran at 3.8 s/epoch in some processes and 4.8-5.5 in
    others (0.3 against 1.8 million minor page faults); with blocks up to 32 MB from the heap and
    no trimming, every process ran at 3.8-3.95 s/epoch. (PyTorch's CPU performance guide suggests
    jemalloc or tcmalloc for the same reason.) The process keeps its peak memory until it ends.
    Returns whether glibc took the settings; elsewhere (macOS, musl) nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
            and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
        )
    except (OSError, AttributeError):  # not glibc
        return False


def prepare_process() -> None:
    """All of this module's process settings: no GPU probe per step, freed memory kept."""
    no_gpu_probe_per_step()
    keep_freed_memory()


class NoProfiler(PassThroughProfiler):
    """Lightning's default (no) profiler, without its cost per hook call.

    Lightning wraps every hook it calls (each callback's, the module's, the strategy's: about 90
    per training step with the lab's callbacks) in ``profiler.profile(name)``; the default
    profiler's is a generator-based context manager made anew each time. This one hands back the
    same empty context every time: 14.5 instead of 23 µs to call one hook on ten callbacks
    (measured on the 2-core CPU machine). ``trainer.profiler=simple`` (or ``advanced``,
    ``pytorch``) profiles for real.
    """

    _nothing = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return self._nothing
