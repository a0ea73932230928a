"""Scaling out on existing engines: DDP on 2 CPU processes (one run, and a job of a sweep), the
joblib and submitit launchers (a preempted job requeued and resumed), an Optuna search; and the
pieces under them: each process's share of the in-memory data, requeue detection, early errors.

Real ``python train.py`` processes on the generated data sets; the DDP runs on the CPU use the
code path of ``trainer=ddp`` on GPUs (only the accelerator and the process group backend differ).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import open_dict

from datamodules.in_memory import BatchMaker, InMemoryImages, OrderedBatches, ShuffledBatches
from lightning_models.checkpoints import checkpoint_to_resume
from lightning_models.checks import LabError, check_config, check_sweep
from tests.helpers import (
    FAST,
    ROOT,
    compose_train,
    event_files,
    job_dirs,
    metrics_of,
    run_train,
    scalars,
    table_rows,
    the_sweep,
)
from train import train

# FAST without its one-CPU-device trainer, so that trainer=ddp_cpu keeps its 2 processes, and
# with the default callbacks, progress bar included: process 0's bar reads the epoch's metrics
# alone, which once started a collective the other process never joined (gloo aborted).
SMALL = [
    o
    for o in FAST
    if not o.startswith(("trainer.accelerator", "trainer.devices", "trainer.enable_progress_bar"))
    and o != "~callbacks.progress_bar"
]


# --- DDP -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ddp_cpu_run_matches_one_process_with_the_global_batch(data_dir, tmp_path, train_cfg):
    """trainer=ddp_cpu: 2 processes of 32 images per step train on exactly the images of one
    process with 64 (each process takes every other image of the same permutation), and their
    gradients are averaged, so only float rounding differs. Tolerance: test/acc within one test
    image of 128 (a rounding difference may tip one borderline prediction), test/loss within
    1e-4 relative; both were identical in every run so far."""
    log_dir = tmp_path / "logs"
    args = [
        "model=lenet5",
        "data=fashion",
        *SMALL,
        "trainer=ddp_cpu",
        "trainer.limit_train_batches=4",
    ]
    result = run_train(*args, data_dir=data_dir, log_dir=log_dir)
    assert result.returncode == 0, result.stderr[-3000:]

    (run,) = (log_dir / "train" / "runs").iterdir()  # one run folder for both processes
    assert sorted(p.name for p in (log_dir / "train").iterdir()) == ["runs"]
    ddp = metrics_of(run)
    assert ddp["status"] == "ok" and ddp["epochs"] == 1
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"epoch_000.ckpt", "last.ckpt"}
    # One set of event files: all written by one process (rank 0; the pid ends their names).
    pids = {p.name.split(".")[-2] for p in event_files(run)}
    assert len(pids) == 1, event_files(run)
    steps = [s for s, _ in scalars(run)["train/loss"]]
    assert steps == sorted(set(steps)) and len(steps) == 1  # one epoch, logged once
    assert scalars(run)["test/acc"][-1][1] == pytest.approx(ddp["test/acc"])
    log = (run / "train.log").read_text()
    assert log.count("DDP: starting 2 processes") == 1
    assert log.count("torch threads:") == 1  # rank 1 logs warnings only
    assert "data.fast: FashionMNIST images on cpu" in log  # the in-memory path, shared out
    # Rank 0 knows the run's Hydra choices (the HParams tab lines runs up by them).
    assert (run / "tensorboard" / "hparams.yaml").read_text().count("model: lenet5") == 1

    single = train(
        train_cfg(
            "model=lenet5",
            "data=fashion",
            "data.batch_size=64",
            "trainer.limit_train_batches=4",
            f"paths.output_dir={tmp_path / 'single'}",
        )
    )
    assert abs(ddp["test/acc"] - single["test/acc"]) <= 1 / 128
    assert ddp["test/loss"] == pytest.approx(single["test/loss"], rel=1e-4)
    assert ddp["val/acc_best"] == pytest.approx(single["val/acc_best"], abs=1 / 100)


@pytest.mark.slow
def test_ddp_cpu_whitening_stem_is_fitted_to_the_global_batch(data_dir, tmp_path, train_cfg):
    """conv_groups' whitening stem, which no gradient trains, is fitted to the first batch: under
    DDP each process averages its patch covariance with the other's, so both get the filters
    of one process with the global batch (the same images: see the test above)."""
    record = [
        "experiment=cifar10_record",
        "model.net.widths=[24,8,8]",
        "scheduler=none",
        "trainer.precision=32-true",
        "~callbacks.test_figures",
    ]
    log_dir = tmp_path / "logs"
    args = [*record, *SMALL, "trainer=ddp_cpu", "trainer.limit_train_batches=1"]
    result = run_train(*args, data_dir=data_dir, log_dir=log_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (log_dir / "train" / "runs").iterdir()
    single_dir = tmp_path / "single"
    single = [*record, "data.batch_size=64", "trainer.limit_train_batches=1"]
    train(train_cfg(*single, f"paths.output_dir={single_dir}"))

    def stem(folder: Path) -> torch.Tensor:
        state = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        assert bool(state["net.features.0.fitted"])
        return state["net.features.0.weight"]

    torch.testing.assert_close(stem(run), stem(single_dir), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_joblib_runs_the_jobs_in_parallel_into_their_own_folders(data_dir, tmp_path):
    result = run_train(
        "-m",
        "hydra/launcher=joblib",
        "model=fcn,lenet5",
        *FAST,
        data_dir=data_dir,
        log_dir=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = the_sweep(tmp_path)
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == ["0", "1"]
    rows = table_rows(sweep)
    assert [r[:2] for r in rows] == [["job", "model"], ["0", "fcn"], ["1", "lenet5"]]
    assert [r[-1] for r in rows[1:]] == ["ok", "ok"]
    table = [float(r[2]) / 100 for r in rows[1:]]  # in %, 2 decimals
    assert [metrics_of(j)["test/acc"] for j in jobs] == pytest.approx(table, abs=5e-5)
    # Run by joblib's workers, not by the process that launched the sweep (whose pid ends the
    # sweep folder's name). Whether two jobs this short overlap in time depends on how fast the
    # second worker starts, so that is not asserted; a real sweep's do (README, "Scaling out").
    launcher_pid = int(sweep.name.rsplit("_", 1)[1])
    # joblib gives each worker cores // n_jobs threads (n_jobs=-1: one job per core, so one)
    # unless OMP_NUM_THREADS says otherwise.
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    for job in jobs:
        log = (job / "train.log").read_text()
        found = re.search(r"torch threads: (\d+) \(process (\d+)\)", log)
        assert found and found[1] == threads and int(found[2]) != launcher_pid


# --- submitit: a DDP job in a sweep; a job preempted, requeued and resumed -------------------


@pytest.mark.slow
def test_submitit_local_sweep_with_a_ddp_job_and_a_preempted_job_that_resumes(data_dir, tmp_path):
    """Job 0 (one process) is preempted and resumes from its own last.ckpt; job 1 is a DDP job:
    Lightning's ddp would start its rank 1 by running the command line again, i.e. the submitit
    worker (or under -m a whole new sweep); the lab starts both processes itself, and the job
    writes only its own folder.

    The preemption is submitit's signal, sent at the worst moment (``tests.helpers.SignalAt``):
    epoch 1's last.ckpt is written and its train metrics are not yet logged. Acted on there, the
    resumed job would never log them; the lab acts on it at the next batch."""
    env = {**os.environ, "LAB_DATA_DIR": str(data_dir), "LAB_LOG_DIR": str(tmp_path)}
    settings = [o for o in SMALL if not o.startswith(("trainer.max_epochs", "trainer.limit_train"))]
    args = [
        "-m",
        "hydra/launcher=submitit_local",
        "trainer=cpu,ddp_cpu",
        *settings,
        "trainer.max_epochs=12",
        "trainer.limit_train_batches=6",
        "torch_threads=1",
        "callbacks.step_checkpoint.every_n_train_steps=2",
        "+callbacks.preempt={_target_:tests.helpers.SignalAt,once:${paths.output_dir}/preempted,"
        "epoch:1}",
    ]
    result = subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]

    sweep = the_sweep(tmp_path)
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == ["0", "1"] and (jobs[0] / "preempted").exists()
    assert [(metrics_of(j)["status"], metrics_of(j)["epochs"]) for j in jobs] == [("ok", 12)] * 2
    assert "DDP: starting 2 processes" in (jobs[1] / "train.log").read_text()
    assert len({p.name.split(".")[-2] for p in event_files(jobs[1])}) == 1  # rank 0's only
    log = (jobs[0] / "train.log").read_text()
    assert "Requeued job: resuming from its own" in log and str(jobs[0] / "checkpoints") in log
    assert "acted on at the next batch boundary" in log
    assert log.count("Resuming from") == 1 and "(epoch 1, step 12)" in log  # epoch 1's end
    # The resumed job continued its TensorBoard run: each epoch's train/loss once, epoch 1's too.
    steps = [s for s, _ in scalars(jobs[0])["train/loss"]]
    assert steps == [6 * epoch + 5 for epoch in range(12)]
    assert [r[-1] for r in table_rows(sweep)[1:]] == ["ok", "ok"]
    submitit_logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.*"))
    assert "this job is preempted" in submitit_logs and "Calling checkpoint method" in submitit_logs


# --- Optuna ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_optuna_search_reports_its_best_trial(data_dir, tmp_path):
    pytest.importorskip(
        "optuna", reason="the sweeps extra is not installed: pip install -e .[sweeps]"
    )
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install -e .[sweeps]")
    result = run_train(
        "-m",
        "hparams_search=fashion_optuna",
        "hydra.sweeper.n_trials=4",
        "data.batch_size=choice(0,64)",  # 0 is refused: some trials fail, the search goes on
        *(o for o in FAST if not o.startswith("data.batch_size")),
        data_dir=data_dir,
        log_dir=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = the_sweep(tmp_path)
    jobs = job_dirs(sweep)
    assert len(jobs) == 4
    statuses = [metrics_of(j)["status"] for j in jobs]
    assert "failed" in statuses and "ok" in statuses
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    ok = [j for j in jobs if metrics_of(j)["status"] == "ok"]
    top = max(ok, key=lambda j: metrics_of(j)["val/acc_best"])
    assert best["best_value"] == pytest.approx(metrics_of(top)["val/acc_best"])
    overrides = yaml.safe_load((top / ".hydra" / "overrides.yaml").read_text())
    chosen = dict(o.split("=", 1) for o in overrides)
    assert {k: float(chosen[k]) for k in best["best_params"]} == pytest.approx(best["best_params"])
    assert len(table_rows(sweep)) == 5


# --- the pieces ------------------------------------------------------------------------------


def images(n: int) -> InMemoryImages:
    data = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return InMemoryImages(data, torch.arange(n))


def test_processes_share_out_one_permutation_disjointly_in_equal_batches():
    make = BatchMaker([0.0], [1 / 255], 1, max_shift=1, mirror=True)
    # 23 images on 2 processes: 11 each, the permutation's last one left out, 3 batches each.
    odd = [ShuffledBatches(images(23), 4, make, seed=3, rank=r, world_size=2) for r in (0, 1)]
    assert [len(s) for s in odd] == [3, 3]
    labels = [torch.cat([y for _, y in s]).tolist() for s in odd]
    assert [len(ls) for ls in labels] == [11, 11] and not set(labels[0]) & set(labels[1])
    # Global step k (batch k of both processes) is batch k of one process with the global batch
    # size, augmentation included, in every epoch.
    one = ShuffledBatches(images(24), 8, make, seed=3)
    shares = [ShuffledBatches(images(24), 4, make, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for epoch in (0, 1):
        for loader in (one, *shares):
            loader.set_epoch(epoch)
        steps = list(zip(one, *shares, strict=True))
        assert len(steps) == 3
        for (x, y), (x0, y0), (x1, y1) in steps:
            assert sorted(y.tolist()) == sorted(y0.tolist() + y1.tolist())
            both = torch.cat([x0, x1])[torch.cat([y0, y1]).argsort()]
            assert torch.equal(both, x[y.argsort()])
    state = shares[1].state_dict()
    assert state["world_size"] == 2
    with pytest.raises(LabError, match="saved training on 2 process"):
        ShuffledBatches(images(24), 4, make, seed=3).load_state_dict(state)


def test_evaluation_rows_are_shared_out_none_dropped():
    make = BatchMaker([0.0], [1 / 255], 1)
    shares = [OrderedBatches(images(7), 2, make, rank=r, world_size=2) for r in (0, 1)]
    seen = [y.tolist() for s in shares for _, y in s]
    assert sorted(sum(seen, [])) == list(range(7)) and [len(s) for s in shares] == [2, 2]


def test_ddp_on_gpus_without_a_gpu_says_to_use_ddp_cpu():
    if torch.cuda.device_count():
        pytest.skip("this machine has a GPU")
    with pytest.raises(LabError, match=r"has none; use trainer=ddp_cpu"):
        check_config(compose_train(["trainer=ddp"]))
    check_config(compose_train(["trainer=ddp_cpu"]))


def test_slurm_launcher_asks_for_the_trainers_devices_and_requeues():
    cfg = compose_train(
        ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 4, 2)
    assert launcher.max_num_timeout > 0 and launcher.signal_delay_s > 0
    check_sweep(cfg)
    with pytest.raises(LabError, match="trainer.devices"):
        check_sweep(compose_train(["hydra/launcher=slurm", "trainer=ddp"]))  # GPUs: auto
    check_sweep(compose_train(["hydra/launcher=slurm"]))  # the default trainer: one CPU task


def test_a_search_on_the_validation_set_needs_one():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install -e .[sweeps]")
    with pytest.raises(LabError, match="data.val_size=0 leaves no validation set"):
        check_sweep(compose_train(["hparams_search=fashion_optuna", "data.val_size=0"]))


def test_only_a_requeued_submitit_job_resumes_from_its_own_checkpoint(tmp_path, monkeypatch):
    cfg = compose_train([f"paths.output_dir={tmp_path}"])
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    monkeypatch.delenv("SUBMITIT_FOLDER", raising=False)
    assert checkpoint_to_resume(cfg) is None  # not a submitit job: a fresh run
    monkeypatch.setenv("SUBMITIT_FOLDER", str(tmp_path / ".submitit"))
    assert checkpoint_to_resume(cfg) == last
    with open_dict(cfg):
        cfg.ckpt_path = "other.ckpt"
    assert checkpoint_to_resume(cfg) == Path("other.ckpt")  # a checkpoint asked for wins
