"""``train.py train=false ckpt_path=...``: test a saved checkpoint with the config of its run."""

import json

import pytest

from tests.helpers import FAST, run_train


@pytest.mark.slow
def test_eval_of_the_best_checkpoint_reproduces_the_training_test_acc(data_dir, tmp_path):
    trained = run_train(
        "model=lenet5_relu", "data=mnist", *FAST, data_dir=data_dir, log_dir=tmp_path
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    first = json.loads((run_dir / "metrics.json").read_text())
    (best,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")

    # Different model and data on the command line: the run's own config must win.
    evaluated = run_train(
        "train=false", f"ckpt_path={best}", "model=fcn", "data=fashion",
        "trainer.limit_test_batches=2", "trainer.enable_progress_bar=false",
        "~callbacks.progress_bar", data_dir=data_dir, log_dir=tmp_path / "eval",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    (eval_dir,) = (tmp_path / "eval" / "train" / "runs").iterdir()
    again = json.loads((eval_dir / "metrics.json").read_text())
    assert again["test/acc"] == first["test/acc"] and again["test/loss"] == first["test/loss"]
    assert f"test/acc       {first['test/acc']:.4f}" in evaluated.stdout


@pytest.mark.slow
def test_eval_without_a_run_dir_says_what_it_needs(data_dir, tmp_path):
    stray = tmp_path / "model.ckpt"
    stray.write_bytes(b"not really")
    result = run_train("train=false", f"ckpt_path={stray}", data_dir=data_dir, log_dir=tmp_path)
    assert result.returncode == 1
    assert "no training config beside ckpt_path=" in result.stdout + result.stderr
    missing = run_train("train=false", "ckpt_path=/nope.ckpt", data_dir=data_dir, log_dir=tmp_path)
    assert missing.returncode == 1
    assert "ckpt_path=/nope.ckpt is not a file" in missing.stdout + missing.stderr
