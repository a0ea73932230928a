"""The process settings the lab makes before training (lightning_models/runtime.py)."""

from __future__ import annotations

import os
import sys

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.profilers import SimpleProfiler

from lightning_models import runtime
from tests.helpers import compose_train


def test_gpu_probe_is_dropped_only_without_a_gpu(monkeypatch):
    monkeypatch.setenv(runtime.NVML_CHECK, "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert not runtime.no_gpu_probe_per_step()
    assert runtime.NVML_CHECK in os.environ  # a GPU machine keeps Lightning's way
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert runtime.no_gpu_probe_per_step()
    assert runtime.NVML_CHECK not in os.environ


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_keeps_freed_memory():
    assert runtime.keep_freed_memory()


def test_no_profiler_is_the_default_and_a_real_profiler_is_one_override_away():
    trainer_cfg = compose_train(["trainer.accelerator=cpu"]).trainer
    assert trainer_cfg.profiler._target_ == "lightning_models.runtime.NoProfiler"
    simple = compose_train(["trainer.profiler=simple"]).trainer
    trainer = instantiate(simple, enable_progress_bar=False, logger=False)
    assert isinstance(trainer.profiler, SimpleProfiler)


def test_no_profiler_hands_back_one_empty_context():
    profiler = runtime.NoProfiler()
    first, second = profiler.profile("a"), profiler.profile("b")
    assert first is second
    with first, second:  # nests and re-enters
        pass
    trainer = L.Trainer(profiler=profiler, logger=False, enable_progress_bar=False)
    assert trainer.profiler is profiler
