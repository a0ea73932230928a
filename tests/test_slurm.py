"""Sweeps on a real SLURM cluster through ``hydra/launcher=slurm``: what the launcher asks SLURM
for, and a sweep of the default trainer on CPU whose first job is preempted and resumes.

The cluster is the one-node cluster ``.ci/slurm-up`` starts (Debian's slurm-wlm and munge,
slurmctld and slurmd on localhost); where none answers, the cluster tests are skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import train  # noqa: F401  (registers the resolvers the launcher config uses)
from tests.helpers import (
    FAST,
    ROOT,
    compose_train,
    job_dirs,
    metrics_of,
    scalars,
    table_rows,
    the_sweep,
)


def cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        states = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10
        ).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(s.rstrip("*") in ("idle", "mixed", "allocated") for s in states)


needs_cluster = pytest.mark.skipif(
    not cluster_up(), reason="no SLURM cluster answers sinfo (.ci/slurm-up starts one)"
)


@pytest.mark.parametrize(
    ("trainer", "expected"),
    [
        ([], (None, 1, 1)),  # the default trainer: devices auto, on the node's CPUs
        (["trainer=cpu"], (None, 1, 1)),
        (["trainer=ddp_cpu"], (None, 2, 1)),  # one task per DDP process, no GPU
        (["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"], (4, 4, 2)),
        (["trainer=gpu", "trainer.devices=1"], (1, 1, 1)),
    ],
)
def test_slurm_launcher_asks_for_what_the_trainer_uses(trainer, expected):
    launcher = compose_train(["hydra/launcher=slurm", *trainer]).hydra.launcher
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == expected


@pytest.mark.slow
@needs_cluster
def test_slurm_sweep_of_the_default_trainer_with_a_preempted_job_that_resumes(data_dir, tmp_path):
    env = {**os.environ, "LAB_DATA_DIR": str(data_dir), "LAB_LOG_DIR": str(tmp_path)}
    settings = [
        o
        for o in FAST
        if not o.startswith(("trainer.max_epochs", "trainer.limit_train", "trainer.accelerator"))
        and not o.startswith("trainer.devices")
    ]
    epochs = 30
    args = [
        "-m",
        "hydra/launcher=slurm",
        "model=fcn,lenet5",
        "data=fashion",
        *settings,
        f"trainer.max_epochs={epochs}",
        "trainer.limit_train_batches=6",
        "torch_threads=1",
        "callbacks.step_checkpoint.every_n_train_steps=2",
        # what this one-node cluster has: 2 cores, 24 GB
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
        "hydra.launcher.timeout_min=20",
    ]
    sweep_run = subprocess.Popen(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        # Preempt job 0 as submitit's own test does (SIGTERM, then submitit's USR2), once it
        # has a checkpoint and is still training.
        last = wait_for(lambda: next(tmp_path.glob("train/multiruns/*/0/checkpoints/last.ckpt")))
        sweep = last.parents[2]
        (job_id,) = [p.name for p in (sweep / ".submitit").iterdir() if p.name.endswith("_0")]
        assert not (sweep / "0" / "metrics.json").exists(), "job 0 ended before its preemption"
        for signal_name in ("SIGTERM", "USR2"):
            subprocess.run(["scancel", job_id, "--signal", signal_name], check=True)
        output, _ = sweep_run.communicate(timeout=900)
    finally:
        if sweep_run.poll() is None:
            sweep_run.kill()
            subprocess.run(["scancel", "--name", "train"], check=False)
    assert sweep_run.returncode == 0, output[-3000:]

    assert the_sweep(tmp_path) == sweep
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == ["0", "1"]
    statuses = [(metrics_of(j)["status"], metrics_of(j)["epochs"]) for j in jobs]
    assert statuses == [("ok", epochs)] * 2
    log = (jobs[0] / "train.log").read_text()
    assert "Requeued job: resuming from its own" in log and log.count("Resuming from") == 1
    # The resumed job continued its TensorBoard run: each epoch's train/loss once, none missing.
    steps = [s for s, _ in scalars(jobs[0])["train/loss"]]
    assert steps == [6 * epoch + 5 for epoch in range(epochs)]
    assert [r[-1] for r in table_rows(sweep)[1:]] == ["ok", "ok"]
    submitit_logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.*"))
    assert "Calling checkpoint method" in submitit_logs
    # SLURM itself ran job 0 twice
    job = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True)
    assert "Restarts=1" in job.stdout, job.stdout + job.stderr


def wait_for(find, timeout: float = 300.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return find()
        except StopIteration:
            time.sleep(0.2)
    raise AssertionError("timed out")
