"""Every model x data pair composes from the real configs, with sizes flowing from the data."""

import pytest
import torch

from lightning_models import LabError
from lightning_models.build import instantiate_node as build
from tests.helpers import compose_train


def test_sizes_are_interpolated_from_the_data_config():
    cfg = compose_train(["model=lenet5", "data=mnist", "data.image_size=32", "data.in_channels=3"])
    assert (cfg.model.net.image_size, cfg.model.net.in_channels) == (32, 3)
    assert cfg.model.num_classes == cfg.data.num_classes


def test_optimizer_scheduler_and_loss_are_top_level_keys():
    cfg = compose_train(["optimizer.lr=0.1", "optimizer.weight_decay=1e-4"])
    module = build(cfg.model)
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.defaults["lr"] == 0.1 and optimizer.defaults["weight_decay"] == 1e-4
    assert isinstance(module.criterion, torch.nn.CrossEntropyLoss)


def test_default_recipe_is_report_000():
    cfg = compose_train()
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 1e-3
    assert cfg.loss._target_ == "torch.nn.CrossEntropyLoss"
    assert cfg.data.batch_size == 100 and cfg.trainer.max_epochs == 10
    assert cfg.trainer.accelerator == "auto" and cfg.trainer.devices == "auto"


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_scheduler_interval_is_configurable(interval):
    cfg = compose_train(["scheduler=step", f"scheduler.interval={interval}"])
    conf = build(cfg.model).configure_optimizers()
    assert conf["lr_scheduler"]["interval"] == interval
    assert isinstance(conf["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)


def test_bad_scheduler_interval_is_rejected():
    cfg = compose_train(["scheduler=step", "scheduler.interval=batch"])
    with pytest.raises(LabError, match="scheduler.interval='batch' is not allowed"):
        build(cfg.model)


def test_nll_loss_needs_a_log_softmax_head():
    nll = "loss=nll"
    assert build(compose_train(["model=lenet5_relu", nll]).model)
    with pytest.raises(LabError, match="NLLLoss expects log-probabilities, but LeNet5 returns"):
        build(compose_train(["model=lenet5", nll]).model)


def test_lenet5_modified_brings_its_recipe_and_overrides_still_win():
    cfg = compose_train(["model=lenet5_modified"])
    assert cfg.optimizer.lr == 0.01
    assert cfg.scheduler.scheduler._target_.endswith("OneCycleLR")
    assert cfg.scheduler.scheduler.max_lr == cfg.optimizer.lr and cfg.scheduler.interval == "step"
    assert cfg.loss.label_smoothing == 0.1
    assert cfg.data.augment and cfg.data.max_shift == 0
    cfg = compose_train(
        ["model=lenet5_modified", "optimizer.lr=1e-3", "scheduler=none", "loss=nll",
         "data.augment=false"]
    )  # fmt: skip
    assert cfg.optimizer.lr == 1e-3 and not cfg.scheduler and not cfg.data.augment
    assert cfg.loss._target_ == "torch.nn.NLLLoss" and "label_smoothing" not in cfg.loss
    # the report's own recipe is an experiment of its own
    cfg = compose_train(["experiment=fashion_lenet5_modified_report_recipe"])
    assert cfg.scheduler.scheduler._target_.endswith("StepLR") and not cfg.data.augment


@pytest.mark.parametrize(
    ("choice", "layer_types"),
    [("xavier_normal", (torch.nn.Linear,)), ("kaiming_normal", (torch.nn.Conv2d, torch.nn.Linear))],
)
def test_init_group_reinitialises_the_chosen_layer_types(choice, layer_types):
    torch.manual_seed(0)
    default = build(compose_train(["model=lenet5_relu"]).model).net
    torch.manual_seed(0)
    chosen = build(compose_train(["model=lenet5_relu", f"init={choice}"]).model).net
    for (name, a), b in zip(default.named_modules(), chosen.modules(), strict=True):
        if hasattr(a, "weight") and a.weight is not None:
            changed = not torch.equal(a.weight, b.weight)
            assert changed == isinstance(a, layer_types), name
            torch.testing.assert_close(a.bias, b.bias)  # biases keep their init


def test_init_finding_no_layer_warns():
    with pytest.warns(UserWarning, match="found no Linear layer in SoftmaxRegression"):
        build(compose_train(["model=softmax_regression_manual", "init=xavier_normal"]).model)


@pytest.mark.slow
def test_onecycle_spans_the_whole_run(train_cfg):
    cfg = train_cfg("scheduler=onecycle", "optimizer.lr=0.01", "trainer.max_epochs=2")
    from train import train

    train(cfg)  # 2 epochs x 3 batches: a cycle of 6 steps, peaking at max_lr
    module = build(cfg.model)
    module.trainer = type("T", (), {"estimated_stepping_batches": 6})()
    conf = module.configure_optimizers()
    scheduler = conf["lr_scheduler"]["scheduler"]
    assert scheduler.total_steps == 6 and conf["lr_scheduler"]["interval"] == "step"
    assert max(scheduler.get_last_lr()) < 0.01  # starts below max_lr = optimizer.lr
