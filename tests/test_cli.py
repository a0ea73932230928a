"""``python train.py`` as a user runs it: help, bad input, a multirun sweep."""

import os
import subprocess
import sys

import pytest

from tests.helpers import FAST, ROOT, run_train, scalar_tags


@pytest.mark.slow
def test_help_lists_the_groups_and_their_options(tmp_path):
    out = run_train("--help", data_dir=tmp_path, log_dir=tmp_path).stdout
    groups = out.split("== Config groups")[1].split("== Composed config")[0]
    listed = dict(line.split(": ", 1) for line in groups.splitlines() if ": " in line)
    for group in ("model", "data", "trainer", "callbacks", "logger", "paths", "optimizer",
                  "scheduler", "loss", "init", "experiment"):  # fmt: skip
        options = set(listed[group].split(", "))
        on_disk = {p.stem for p in (ROOT / "conf" / group).glob("*.yaml")}
        assert options == on_disk, group
    assert {"fcn", "lenet5", "lenet5_modified", "lenet5_relu"} <= set(listed["model"].split(", "))


@pytest.mark.parametrize(("group", "choice"), [("model", "lenet5_modified"), ("data", "mnist")])
@pytest.mark.slow
def test_unknown_choice_lists_the_valid_ones(tmp_path, group, choice):
    result = run_train(f"{group}=nope", data_dir=tmp_path, log_dir=tmp_path)
    assert result.returncode != 0
    assert f"Could not find '{group}/nope'" in result.stderr
    assert f"Available options in '{group}'" in result.stderr and choice in result.stderr


@pytest.mark.slow
def test_missing_data_offline_says_where_and_how(tmp_path):
    result = run_train(
        "data=mnist", "data.download=false", data_dir=tmp_path / "nothing", log_dir=tmp_path
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert f"MNIST files not found: searched {tmp_path / 'nothing' / 'MNIST' / 'raw'}" in output
    assert "train-images-idx3-ubyte" in output and "paths.data_dir" in output
    assert not (tmp_path / "train").exists()


@pytest.mark.slow
def test_multirun_gives_each_job_its_own_dir(data_dir, tmp_path):
    result = run_train("-m", "model=fcn,lenet5", *FAST, data_dir=data_dir, log_dir=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweeps = list((tmp_path / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    for job in jobs:
        # Lightning reopens the writer for `test`, so one run may hold several event files.
        assert list((job / "tensorboard").glob("events.out.tfevents.*"))
        assert {"train/loss", "val/acc", "test/acc"} <= scalar_tags(job)
        assert (job / "checkpoints" / "last.ckpt").is_file()
    assert "model: fcn" in (jobs[0] / "tensorboard" / "hparams.yaml").read_text()
    assert "model: lenet5" in (jobs[1] / "tensorboard" / "hparams.yaml").read_text()


@pytest.mark.slow
def test_two_identical_sweeps_started_together_never_share_a_folder(data_dir, tmp_path):
    env = {**os.environ, "LAB_DATA_DIR": str(data_dir), "LAB_LOG_DIR": str(tmp_path)}
    args = [sys.executable, "train.py", "-m", "optimizer.lr=0.01,0.001", *FAST]
    sweeps = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    for sweep in sweeps:
        assert sweep.wait(timeout=300) == 0, sweep.stderr.read()[-2000:]
    dirs = sorted((tmp_path / "train" / "multiruns").iterdir())
    assert len(dirs) == 2
    for sweep_dir in dirs:  # nothing lost: each holds its two jobs and its table
        assert (sweep_dir / "summary.csv").is_file()
        assert all((sweep_dir / job / "metrics.json").is_file() for job in ("0", "1"))
