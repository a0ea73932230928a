"""The ImageClassifier's hooks for report 001's and 002's extras, through the real configs."""

import pytest
import torch
from torch.nn import functional as F

from lightning_models.build import instantiate_node as build
from tests.helpers import compose_train, scalar_tags
from train import train


def test_l2_on_chosen_layers_is_added_to_the_loss_and_logged(train_cfg):
    cfg = train_cfg("model=mlp_deep", "data=cifar10", "model.net.l2_layers=[fc1,fc2,fc3]")
    module = build(cfg.model)
    module.log = lambda *args, **kwargs: None  # no trainer attached: a bare training step
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    torch.manual_seed(0)
    loss = module.training_step((x, y), 0)
    # The same batch by hand: cross-entropy + λ/(2·batch)·Σ‖W‖² over fc1..fc3 weights only.
    torch.manual_seed(0)  # same dropout masks
    ce = F.cross_entropy(module.net(x), y)
    layers = module.net.net
    squares = sum(getattr(layers, n).weight.pow(2).sum() for n in ("fc1", "fc2", "fc3"))
    expected = ce + 0.006 / (2 * 16) * squares
    torch.testing.assert_close(loss, expected)
    assert squares > 0 and expected - ce > 1e-3  # the penalty is not negligible here


@pytest.mark.slow
def test_l2_is_logged_as_train_l2(train_cfg, tmp_path):
    train(train_cfg("model=mlp_deep", "data=cifar10"))
    assert "train/l2" in scalar_tags(tmp_path)


@pytest.mark.slow
def test_hand_written_softmax_regression_trains_through_train_py(train_cfg, tmp_path):
    cfg = train_cfg(
        "model=softmax_regression_manual",
        "data=mnist",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=1.0",
        "trainer.limit_test_batches=1.0",
        "trainer.log_every_n_steps=1",
    )
    metrics = train(cfg)
    # Generated digits carry their label as a bright band: learnable far above chance (0.1).
    assert metrics["test/acc"] > 0.6
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 3 * 16  # one step per batch: 500 train images / 32
    assert not state["state_dict"]["net.W"].requires_grad
    assert "lr-SGD" in scalar_tags(tmp_path)


def test_report_001_recipe_updates_per_image_as_batch_size_1_would(train_cfg, tmp_path):
    """experiment=mnist_softmax_manual takes 1,000 images a step, one update each: the weights
    after 200 images equal those of 200 steps of one image, bit for bit."""
    states = {}
    for batch_size, per_image, batches in ((1, False, 200), (50, True, 4)):
        out = tmp_path / f"batch_{batch_size}"
        cfg = train_cfg(
            "experiment=mnist_softmax_manual",
            f"paths.output_dir={out}",
            f"data.batch_size={batch_size}",
            f"model.net.update_per_image={per_image}",
            f"trainer.limit_train_batches={batches}",
            "optimizer.lr=0.05",
        )
        train(cfg)
        states[batch_size] = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert (states[1]["global_step"], states[50]["global_step"]) == (200, 4)
    for name in ("net.W", "net.b"):
        assert torch.equal(states[1]["state_dict"][name], states[50]["state_dict"][name]), name
    recipe = compose_train(["experiment=mnist_softmax_manual"])
    assert (recipe.data.batch_size, recipe.model.net.update_per_image) == (1000, True)


def test_schedulers_drive_the_hand_written_update(train_cfg, tmp_path):
    train(
        train_cfg(
            "model=softmax_regression_manual",
            "data=mnist",
            "trainer.max_epochs=3",
            "scheduler=step",
            "scheduler.interval=epoch",
            "scheduler.scheduler.step_size=1",
            "scheduler.scheduler.gamma=0.1",
            "callbacks.lr_monitor.logging_interval=epoch",
        )
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("lr-SGD")] == pytest.approx([0.5, 0.05, 0.005])


@pytest.mark.slow
def test_epoch_loss_and_accuracy_are_means_over_images(train_cfg, tmp_path):
    """test/acc and test/loss are the test set's figures by hand, images weighted alike (the
    last batch holds 8 of 200 images)."""
    cfg = train_cfg("data=mnist", "data.val_size=0", "trainer.limit_test_batches=1.0")
    metrics = train(cfg)
    (tested,) = (tmp_path / "checkpoints").glob("epoch_*.ckpt")  # no validation: the last epoch
    module = build(cfg.model)
    module.load_state_dict(torch.load(tested, weights_only=True)["state_dict"])
    module.eval()
    data = build(cfg.data)
    data.prepare_data()
    data.setup("test")
    correct, loss_sum, images, sizes = 0, 0.0, 0, set()
    with torch.no_grad():
        for x, y in data.test_dataloader():
            out = module(x)
            correct += int((out.argmax(dim=1) == y).sum())
            loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
            images += len(y)
            sizes.add(len(y))
    assert images == 200 and sizes == {32, 8}
    assert metrics["test/acc"] == pytest.approx(correct / images)
    assert metrics["test/loss"] == pytest.approx(loss_sum / images, rel=1e-5)


def test_plain_attributes_skip_module_checks_but_keep_their_meaning():
    """ImageClassifier.__setattr__'s fast path for plain values stores what nn.Module would."""
    from lightning_models.classifier import ImageClassifier

    model = ImageClassifier(net=torch.nn.Linear(4, 3), optimizer=torch.optim.SGD, num_classes=3)
    model._current_fx_name = "training_step"  # what Lightning sets around every hook call
    assert model._current_fx_name == "training_step" and "_current_fx_name" in model.__dict__
    model.tta_shift = 2
    assert model.tta_shift == 2
    # the LightningModule property keeps its setter
    model.automatic_optimization = False
    assert model.automatic_optimization is False and "automatic_optimization" not in model.__dict__
    # None for a registered parameter, buffer or submodule still goes through nn.Module
    model.register_parameter("scale", torch.nn.Parameter(torch.ones(1)))
    model.scale = None
    assert "scale" in model._parameters and model._parameters["scale"] is None
    model.register_buffer("count", torch.zeros(()))
    model.count = None
    assert model._buffers["count"] is None
    model.head = torch.nn.Linear(3, 3)
    assert "head" in model._modules and "head" not in model.__dict__
    model.head = None
    assert model._modules["head"] is None
    with pytest.raises(TypeError, match="as child module"):
        model.net = 3


def test_step_checkpoint_state_key_is_lightnings():
    """Cached, the key is the string ModelCheckpoint builds, so saved callback states match."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_models.checkpoints import StepCheckpoint

    step = StepCheckpoint(dirpath="unused", filename="last", every_n_train_steps=200)
    built = ModelCheckpoint.state_key.fget(step)
    assert built.startswith("StepCheckpoint{") and "'every_n_train_steps': 200" in built
    assert step.state_key == built and step.state_key is step.state_key
