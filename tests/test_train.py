"""End to end through train.py's code path with the real Hydra config, shrunk to seconds."""

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_models import LabError
from tests.helpers import FAST, compose_train, scalar_tags, scalars
from train import train

LOGGED = {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/loss", "test/acc"}


def test_fast_dev_run(train_cfg):
    metrics = train(train_cfg("trainer.fast_dev_run=true"))
    assert 0.0 <= metrics["test/acc"] <= 1.0


def test_enable_progress_bar_false_alone_turns_the_bar_off(data_dir, tmp_path):
    # The bar is a default callback, which Lightning refuses beside enable_progress_bar=false.
    overrides = [o for o in FAST if o != "~callbacks.progress_bar"]
    cfg = compose_train([f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path}", *overrides,
                         "trainer.fast_dev_run=true"])  # fmt: skip
    assert "progress_bar" in cfg.callbacks and cfg.trainer.enable_progress_bar is False
    assert 0.0 <= train(cfg)["test/acc"] <= 1.0


@pytest.mark.parametrize("model", ["fcn", "lenet5", "lenet5_modified", "lenet5_relu"])
def test_fit_test_writes_checkpoints_and_tensorboard(train_cfg, tmp_path, model):
    # log_every_n_steps=1: lenet5_modified's scheduler steps per batch, so its LR is logged per step
    cfg = train_cfg(f"model={model}", "data=mnist", "trainer.log_every_n_steps=1")
    metrics = train(cfg)
    ckpts = {p.name for p in (tmp_path / "checkpoints").iterdir()}
    assert ckpts == {"epoch_000.ckpt", "last.ckpt"}
    # A checkpoint holds weights and plain values only: it loads with weights_only=True.
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert any(k.startswith("net.") for k in state["state_dict"])
    tags = scalar_tags(tmp_path)
    assert tags >= LOGGED and any(t.startswith("lr-") for t in tags)
    assert {"hparams/test_acc", "hparams/val_acc_best"} <= tags
    hparams = (tmp_path / "tensorboard" / "hparams.yaml").read_text()
    assert hparams.count("model: " + model) == 1
    # The optimizer by its name and values, not Hydra's _target_/_partial_ (report.hparams_of).
    assert "optimizer: adam" in hparams and "_target_" not in hparams and "_partial_" not in hparams
    assert metrics["test/acc"] == pytest.approx(float(metrics["test/acc"]))


def test_training_learns_the_generated_task(train_cfg):
    # The generated images carry their label as a bright band: a few epochs must beat chance by
    # far, which shows images and labels stay paired from the IDX files to the loss.
    metrics = train(
        train_cfg(
            "model=fcn",
            "data=mnist",
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=1.0",
            "trainer.limit_test_batches=1.0",
        )
    )
    assert metrics["test/acc"] > 0.6


def test_no_validation_set_tests_the_last_checkpoint(train_cfg, tmp_path):
    metrics = train(train_cfg("data.val_size=0"))
    assert "val/acc" not in metrics and "test/acc" in metrics
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    tags = scalar_tags(tmp_path)
    assert "train/loss" in tags and "val/loss" not in tags


def test_scheduler_steps_every_batch_when_interval_is_step(train_cfg, tmp_path):
    train(
        train_cfg(
            "scheduler=step",
            "scheduler.scheduler.step_size=1",
            "scheduler.scheduler.gamma=0.5",
            "callbacks.lr_monitor.logging_interval=step",
            "trainer.log_every_n_steps=1",
        )
    )
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    lrs = [e.value for e in events.Scalars("lr-Adam")]
    assert lrs == pytest.approx([1e-3 * 0.5**i for i in range(3)])


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.slow
def test_same_seed_gives_identical_tensorboard_scalars(tmp_path, train_cfg, fast):
    """Bit-identical on the CPU with trainer.deterministic=true, through both data paths and with
    dropout and augmentation drawing random numbers (lenet5_modified mirrors its images)."""
    runs = []
    for name in ("first", "second"):
        cfg = train_cfg(
            "seed=0", "trainer.deterministic=true", "model=lenet5_modified",
            "trainer.max_epochs=2", f"data.fast={str(fast).lower()}",
            "trainer.log_every_n_steps=1",  # its one-cycle LR is logged per step
            f"paths.output_dir={tmp_path / name}",
        )  # fmt: skip
        train(cfg)
        runs.append(scalars(tmp_path / name))
    first, second = ({t: v for t, v in run.items() if not t.startswith("time/")} for run in runs)
    assert {"train/loss", "val/acc", "test/acc", "lr-Adam"} <= set(first)
    assert first == second  # wall-clock figures (time/*) aside, every logged value is identical


@pytest.mark.parametrize(
    ("override", "sentence"),
    [
        ("data.batch_size=0", "data.batch_size=0 is not allowed"),
        ("optimizer.lr=-1", "optimizer.lr=-1 is not allowed"),
        ("optimizer.weight_decay=-0.1", "optimizer.weight_decay=-0.1 is not allowed"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 is not allowed"),
        (
            "data.val_size=600",
            "data.val_size=600 is not smaller than the FashionMNIST training set",
        ),
        ("data.image_size=16", "model lenet5 needs input images of at least 1x28x28"),
        ("loss=nll", "NLLLoss expects log-probabilities"),
    ],
)
def test_bad_input_is_rejected_before_training(train_cfg, tmp_path, override, sentence):
    with pytest.raises(LabError, match=sentence):
        train(train_cfg(override))
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "tensorboard").exists()


def test_last_checkpoint_is_the_latest_epoch_even_without_improvement(train_cfg, tmp_path):
    # lr 0 cannot improve val/acc after epoch 0, so only the first epoch is the "best".
    train(train_cfg("trainer.max_epochs=3", "optimizer.lr=1e-12"))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 9
    assert (tmp_path / "checkpoints" / "epoch_000.ckpt").is_file()
