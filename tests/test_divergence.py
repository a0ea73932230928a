"""A non-finite loss stops the run at that step, leaves only finite checkpoints and the status
'diverged'; a collapsed model is marked 'diverged' too; a sweep goes on past such a job."""

import json
from pathlib import Path

import pytest
import torch

from lightning_models import DivergedError, report
from tests.helpers import FAST, run_train
from train import train

NAN_AT = ["loss._target_=tests.helpers.NaNLossAfter"]


@pytest.mark.slow
def test_nan_loss_stops_at_that_step_with_finite_checkpoints_only(train_cfg, tmp_path):
    # 3 batches per epoch: epoch 0 ends normally (checkpoints), the loss is NaN at step 4.
    cfg = train_cfg(*NAN_AT, "+loss.after_steps=4", "trainer.max_epochs=3")
    with pytest.raises(DivergedError, match=r"the loss became nan at step 4 \(epoch 1\)"):
        train(cfg)
    saved = sorted((tmp_path / "checkpoints").glob("*.ckpt"))
    assert [p.name for p in saved] == ["epoch_000.ckpt", "last.ckpt"]
    for path in saved:
        state = torch.load(path, weights_only=True)
        assert state["global_step"] == 3
        assert all(
            torch.isfinite(t).all() for t in state["state_dict"].values() if t.is_floating_point()
        )


@pytest.mark.slow
def test_diverged_single_run_exits_non_zero_with_status(data_dir, tmp_path):
    result = run_train(*NAN_AT, "+loss.after_steps=2", *FAST, data_dir=data_dir, log_dir=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert "training diverged: the loss became nan at step 2" in output
    assert "lower optimizer.lr" in output
    (metrics_file,) = tmp_path.rglob("metrics.json")
    assert json.loads(metrics_file.read_text())["status"] == "diverged"


@pytest.mark.slow
def test_sweep_goes_on_past_a_diverging_job(data_dir, tmp_path):
    result = run_train(
        "-m", *NAN_AT, "+loss.after_steps=1000,1,1000", *FAST, data_dir=data_dir, log_dir=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    statuses = [
        json.loads((sweep / str(i) / "metrics.json").read_text())["status"] for i in range(3)
    ]
    assert statuses == ["ok", "diverged", "ok"]
    for job in (0, 2):
        assert (sweep / str(job) / "checkpoints" / "last.ckpt").is_file()


class _Tested:
    def __init__(self, matrix):
        self.test_confusion_matrix = torch.tensor(matrix)


@pytest.mark.parametrize(
    ("matrix", "collapsed"),
    [
        ([[50, 0], [50, 0]], True),  # every image called class 0
        ([[500, 1], [400, 2]], True),  # 99.7% called class 0
        ([[45, 5], [10, 40]], False),
        ([[100, 0], [0, 0]], False),  # a one-class test set cannot tell
    ],
)
def test_collapse_means_one_predicted_class(matrix, collapsed):
    assert report.collapsed(_Tested(matrix)) is collapsed


@pytest.mark.slow
def test_a_healthy_run_has_status_ok(train_cfg, tmp_path):
    metrics = train(train_cfg())
    assert metrics["status"] == "ok"
    assert json.loads(Path(tmp_path / "metrics.json").read_text())["status"] == "ok"


@pytest.mark.slow
def test_deferred_check_names_the_first_bad_step_and_saves_no_bad_checkpoint(train_cfg, tmp_path):
    # The accelerator way (no host sync per step), forced on the CPU: the NaN of step 4 is read
    # at step 5 (every 2 steps), and the message still names step 4.
    cfg = train_cfg(
        *NAN_AT, "+loss.after_steps=4", "trainer.max_epochs=3", "trainer.log_every_n_steps=2",
        "+model.defer_finite_check=true",
    )  # fmt: skip
    with pytest.raises(DivergedError, match=r"the loss became nan at step 4 \(epoch 1\)"):
        train(cfg)
    for path in (tmp_path / "checkpoints").glob("*.ckpt"):
        state = torch.load(path, weights_only=True)
        assert all(
            torch.isfinite(t).all() for t in state["state_dict"].values() if t.is_floating_point()
        )
