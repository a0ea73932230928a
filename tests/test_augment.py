"""The augmentation presets (conf/augment/, datamodules/base.py Augmentation): what each composes
to, what it does to training batches on the fast path and on torchvision's path (validation and
test never augmented), soft labels with mixup and cutmix, flip test-time augmentation, seeded and
resumable draws, the refusals before a run, and a real tiny training run of every preset."""

from __future__ import annotations

import logging
from functools import partial

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.nn import functional as F

from datamodules import CIFAR10DataModule, MNISTDataModule
from lightning_models import ImageClassifier, LabError
from lightning_models.build import build_run, instantiate_node
from tests.helpers import CONF, FAST, SEEN_BATCHES, compose_train, run_train
from train import train

PRESETS = sorted(p.stem for p in (CONF / "augment").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
OFF = {
    "data.policy": None, "data.erase": 0.0, "data.mix": None,
    "model.tta_flip": False, "model.tta_shift": 0,
}  # fmt: skip
# What each preset sets (the rest is the data config's and the model's own).
SETS = {
    "none": {**OFF, "data.augment": False},
    "shift_flip": {"data.augment": True},
    "randaugment": {"data.policy": "randaugment"},
    "trivialaugment": {"data.policy": "trivialaugment"},
    "autoaugment": {"data.policy": "autoaugment"},
    "cutout": {"data.erase": 0.5},
    "mixup": {"data.mix": "mixup"},
    "cutmix": {"data.mix": "cutmix"},
    "mixup_cutmix": {"data.mix": "mixup_cutmix"},
    "tta_flip": {"model.tta_flip": True},
    "tta_shift": {"model.tta_shift": 1},
}
DATA = {
    "cifar10": partial(CIFAR10DataModule, download=False),
    "mnist": MNISTDataModule,
}
MIXES = ["mixup", "cutmix", "mixup_cutmix"]


def selected(cfg, keys) -> dict:
    return {key: OmegaConf.select(cfg, key) for key in keys}


# --- the config ----------------------------------------------------------------------------


def test_every_preset_sets_what_it_says_alone_and_in_a_list():
    assert sorted(SETS) == PRESETS
    for name, sets in SETS.items():
        assert selected(compose_train([f"augment={name}"]), sets) == sets, name
    combined = compose_train(["augment=[shift_flip,randaugment,cutout,mixup,tta_flip]"])
    assert selected(combined, ["data.augment", "data.policy", "data.erase", "data.mix"]) == {
        "data.augment": True, "data.policy": "randaugment", "data.erase": 0.5, "data.mix": "mixup"
    }  # fmt: skip
    assert combined.model.tta_flip is True
    # A preset wins over the model's recipe and the experiment (lenet5_modified mirrors).
    assert compose_train(["experiment=fashion_speedrun", "augment=none"]).data.augment is False


# The records opt in: garments and CIFAR-10's objects keep their label mirrored (digits would not).
OPTED_IN = {
    "fashion_record": {"model.tta_flip": True},
    "cifar10_record": {"model.tta_flip": True, "model.tta_shift": 1},
}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiments_compose_as_before_with_everything_new_off(name):
    expected = {**OFF, **OPTED_IN.get(name, {})}
    assert selected(compose_train([f"experiment={name}"]), OFF) == expected


# --- what the augmentations do to batches --------------------------------------------------


class _Training:
    """What ``on_after_batch_transfer`` reads of a trainer."""

    def __init__(self, training: bool):
        self.training = training


def datamodule(data_dir, fast: bool, name: str = "cifar10", shuffle: bool = False, **options):
    """A set-up datamodule on the generated data (the files' order unless ``shuffle``, so that
    both paths' first batches hold the same images)."""
    dm = DATA[name](
        str(data_dir), batch_size=32, val_size=40, verify_checksums=False, fast=fast,
        shuffle=shuffle, **options,
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    assert (dm.fast is not None) == fast
    return dm


def transferred(dm, batch, training: bool = True):
    """``batch`` after the datamodule's transfer hook, as in a training (or other) step."""
    dm.trainer = _Training(training)
    try:
        return dm.on_after_batch_transfer(batch, 0)
    finally:
        dm.trainer = None


def first_batch(dm, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first training batch as a training step gets it, in a run seeded with ``seed``."""
    torch.manual_seed(seed)
    return transferred(dm, next(iter(dm.train_dataloader())))


def pixels(dm, x: torch.Tensor) -> torch.Tensor:
    """Normalised images back to ToTensor's 0..1."""
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (dm.mean, dm.std))
    return x * std + mean


def assert_evaluation_unaugmented(dm, plain) -> None:
    for loader in ("val_dataloader", "test_dataloader"):
        for a, b in zip(getattr(dm, loader)(), getattr(plain, loader)(), strict=True):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), loader
            assert transferred(dm, a, training=False) is a  # the hook leaves them alone


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "loader"])
@pytest.mark.parametrize(
    ("name", "policy"),
    [
        ("cifar10", "randaugment"),
        ("cifar10", "trivialaugment"),
        ("cifar10", "autoaugment"),
        ("cifar10", "autoaugment_cifar10"),
        ("mnist", "randaugment"),  # one grey channel
    ],
)
def test_policies_change_training_images_one_by_one_and_nothing_else(data_dir, fast, name, policy):
    dm = datamodule(data_dir, fast, name, policy=policy)
    plain = datamodule(data_dir, fast, name)
    (x, y), (x0, y0) = first_batch(dm), first_batch(plain)
    assert x.shape == x0.shape and x.dtype == torch.float32 and torch.equal(y, y0)
    values = pixels(dm, x)
    assert values.min() >= -1e-6 and values.max() <= 1 + 1e-6  # uint8 images, then normalised
    changed = (x != x0).flatten(1).any(1)
    assert changed.float().mean() >= 0.5, changed  # each image draws its own ops
    assert_evaluation_unaugmented(dm, plain)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "loader"])
def test_cutout_sets_a_rectangle_of_some_images_to_the_mean(data_dir, fast):
    dm, plain = datamodule(data_dir, fast, erase=0.5), datamodule(data_dir, fast)
    (x, y), (x0, y0) = first_batch(dm), first_batch(plain)
    assert x.shape == x0.shape and torch.equal(y, y0)
    erased = 0
    for image, original in zip(x, x0, strict=True):
        changed = (image != original).any(0)
        if not changed.any():
            continue
        erased += 1
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        box = (
            slice(int(rows.min()), int(rows.max()) + 1),
            slice(int(cols.min()), int(cols.max()) + 1),
        )
        assert (image[:, box[0], box[1]] == 0).all()  # 0 after Normalize: the data's mean
        outside = torch.ones_like(changed)
        outside[box] = False
        assert torch.equal(image[:, outside], original[:, outside])
    assert 0 < erased < len(x)  # about half of them, each its own rectangle
    assert_evaluation_unaugmented(dm, plain)


def mixing_ratio(y: torch.Tensor, y0: torch.Tensor) -> float:
    """The batch's one mixing ratio, read off the soft labels of images whose neighbour in the
    batch (the one mixed in) has another class."""
    other = y0 != y0.roll(1)
    ratios = y[other, y0[other]]
    assert other.any() and torch.allclose(ratios, ratios[0].expand_as(ratios))
    return float(ratios[0])


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "loader"])
@pytest.mark.parametrize("mix", MIXES)
def test_mixing_blends_each_image_with_the_next_and_labels_alike(data_dir, fast, mix):
    dm, plain = datamodule(data_dir, fast, mix=mix), datamodule(data_dir, fast)
    (x, y), (x0, y0) = first_batch(dm), first_batch(plain)
    assert y.shape == (32, 10) and y.dtype == torch.float32 and x.shape == x0.shape
    torch.testing.assert_close(y.sum(1), torch.ones(32))
    assert (y >= 0).all()
    lam, one_hot = mixing_ratio(y, y0), F.one_hot(y0, 10).float()
    torch.testing.assert_close(y, lam * one_hot + (1 - lam) * one_hot.roll(1, 0))
    rolled = x0.roll(1, 0)
    blended = torch.allclose(x, lam * x0 + (1 - lam) * rolled, atol=1e-5)
    # CutMix: one box of every image comes from the next image, its area the share 1 - lam
    pasted = (x != x0).any(0).any(0)
    area = float(pasted.float().mean())
    boxed = torch.equal(x[..., pasted], rolled[..., pasted]) and torch.equal(
        x[..., ~pasted], x0[..., ~pasted]
    )
    assert {"mixup": blended, "cutmix": boxed}.get(mix, blended or boxed), (lam, area)
    if boxed and not blended:
        assert area == pytest.approx(1 - lam, abs=1e-6)
    assert_evaluation_unaugmented(dm, plain)


ALL = {"policy": "trivialaugment", "erase": 0.5, "mix": "mixup_cutmix", "augment": True}


def test_fast_path_draws_come_from_the_seed_alone_and_resume_mid_epoch(data_dir):
    def epoch_of(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        torch.manual_seed(seed)  # the run's seed, which the train loader reads
        return list(datamodule(data_dir, True, shuffle=True, **ALL).train_dataloader())

    torch.manual_seed(0)
    loader = datamodule(data_dir, True, shuffle=True, **ALL).train_dataloader()
    before = torch.get_rng_state()
    first = list(loader)
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG (dropout's) untouched
    assert len(first) == 5
    same, other = epoch_of(0), epoch_of(1)
    for (a, ya), (b, yb), (c, _) in zip(first, same, other, strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb) and not torch.equal(a, c)
    assert not torch.equal(next(iter(loader))[0], first[0][0])  # epoch 1 draws anew
    # A loader restored after 2 batches of epoch 0 goes on with the very same batches.
    torch.manual_seed(0)
    resumed = datamodule(data_dir, True, shuffle=True, **ALL).train_dataloader()
    resumed.load_state_dict({**loader.state_dict(), "epoch": 0, "batches_done": 2})
    for (a, ya), (b, yb) in zip(list(resumed), first[2:], strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb)


def test_loader_path_draws_come_from_the_global_rng(data_dir):
    dm = datamodule(data_dir, False, shuffle=True, **ALL)
    (a, ya), (b, yb), (c, _) = first_batch(dm, 0), first_batch(dm, 0), first_batch(dm, 1)
    assert torch.equal(a, b) and torch.equal(ya, yb) and not torch.equal(a, c)


# --- the classifier ------------------------------------------------------------------------


def tiny_classifier(**kwargs) -> ImageClassifier:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    module = ImageClassifier(net, partial(torch.optim.SGD, lr=0.1), num_classes=3, **kwargs)
    module.log = lambda *args, **kwargs: None  # no trainer attached: bare steps
    return module


def test_training_step_takes_class_probabilities_and_counts_their_largest_as_the_label():
    module = tiny_classifier()
    x = torch.randn(6, 1, 2, 6)
    y = torch.softmax(torch.randn(6, 3) * 3, dim=1)
    loss = module.training_step((x, y), 0)
    out = module.net(x)
    torch.testing.assert_close(loss, F.cross_entropy(out, y))
    sums = module._sums["train"]
    assert sums.images == 6 and int(sums.correct) == int((out.argmax(1) == y.argmax(1)).sum())


def test_tta_flip_predicts_from_the_mean_of_each_image_and_its_mirror():
    x, y = torch.randn(40, 1, 2, 6), torch.randint(0, 3, (40,))
    plain, flipped = tiny_classifier(), tiny_classifier(tta_flip=True)
    out = plain.net(x)
    mean = (out + plain.net(x.flip(-1))) / 2
    assert torch.equal(plain._eval_step((x, y), "val")["preds"], out.argmax(1))
    preds = flipped._eval_step((x, y), "test")["preds"]
    assert torch.equal(preds, mean.argmax(1)) and not torch.equal(preds, out.argmax(1))
    torch.testing.assert_close(flipped._sums["test"].loss / 40, F.cross_entropy(mean, y))


def test_tta_shift_adds_each_view_moved_by_reflected_pixels():
    x, y = torch.randn(40, 1, 2, 6), torch.randint(0, 3, (40,))
    module = tiny_classifier(tta_flip=True, tta_shift=1)
    net = module.net

    def moved(v, dy, dx):  # content moved by (dy, dx), edges reflected
        padded = F.pad(v, (1, 1, 1, 1), mode="reflect")
        return padded[..., 1 - dy : 1 - dy + 2, 1 - dx : 1 - dx + 6]

    views = [x, x.flip(-1)]
    views += [moved(v, 1, 1) for v in views[:2]] + [moved(v, -1, -1) for v in views[:2]]
    mean = torch.stack([net(v) for v in views]).mean(0)
    torch.testing.assert_close(module._predict(x), mean)
    assert torch.equal(moved(x, 1, 1)[..., 1:, 1:], x[..., :-1, :-1])  # down-right by one
    preds = module._eval_step((x, y), "test")["preds"]
    assert torch.equal(preds, mean.argmax(1))


# --- refused before the run ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "sentence"),
    [
        (["model=lenet5_relu", "loss=nll", "augment=mixup"],
         r"data.mix=mixup trains on class probabilities, which loss=nll \(NLLLoss\) cannot take; "
         "use loss=cross_entropy"),
        (["loss=multi_margin", "augment=cutmix"],
         r"data.mix=cutmix trains on class probabilities, which loss=multi_margin "
         r"\(MultiMarginLoss\) cannot take"),
        (["model=softmax_regression_manual", "augment=mixup_cutmix"],
         "data.mix=mixup_cutmix cannot be used with model=softmax_regression_manual: it updates "
         r"its weights by hand \(manual_update\) from class indices"),
        (["data.policy=autoaugment_mnist"],
         "data.policy='autoaugment_mnist' is not allowed; use null or one of randaugment, "
         "trivialaugment, autoaugment, autoaugment_cifar10, autoaugment_svhn"),
        (["data.erase=1.5"], "data.erase=1.5 is not allowed; use a probability from 0"),
        (["data.mix=blend"], "data.mix='blend' is not allowed; use null or one of mixup, cutmix"),
        (["augment=mixup", "data.mix_alpha=0"], "data.mix_alpha=0 is not allowed"),
        (["model.tta_flip=maybe"], "model.tta_flip='maybe' is not allowed; use true or false"),
        (["model.tta_shift=-1"], "model.tta_shift=-1 is not allowed; use a whole number of at "),
    ],
)  # fmt: skip
def test_what_cannot_work_is_one_sentence_before_anything_is_written(
    train_cfg, tmp_path, overrides, sentence
):
    with pytest.raises(LabError, match=sentence):
        train(train_cfg(*overrides))
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "tensorboard").exists()


@pytest.mark.parametrize(("data", "warns"), [("mnist", True), ("fashion", False)])
def test_tta_flip_on_digits_warns(train_cfg, caplog, data, warns):
    with caplog.at_level(logging.WARNING, logger="checks"):
        build_run(train_cfg(f"data={data}", "augment=tta_flip"))
    warned = "a mirrored MNIST image is no image of its class" in caplog.text
    assert warned == warns


# --- real runs -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "loader"])
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_trains_for_real_on_both_paths(train_cfg, caplog, preset, fast):
    """A tiny real run of each preset on CIFAR-10's format, in the files' order so that its first
    batches can be compared with the un-augmented ones."""
    key = f"{preset}-{fast}"
    common = ["data=cifar10", f"data.fast={str(fast).lower()}", "data.shuffle=false"]
    seen = f"+callbacks.seen={{_target_:tests.helpers.SeenBatches,key:{key}}}"
    cfg = train_cfg(*common, f"augment={preset}", seen)
    with caplog.at_level(logging.INFO, logger="datamodules.base"):
        metrics = train(cfg)
    assert 0 <= metrics["test/acc"] <= 1 and torch.isfinite(torch.tensor(metrics["train/loss"]))
    torch.manual_seed(0)
    plain = instantiate_node(train_cfg(*common).data)
    plain.setup("fit")
    x0, y0 = next(iter(plain.train_dataloader()))
    (x, y), (val_x, val_y) = SEEN_BATCHES[key]["train"], SEEN_BATCHES[key]["val"]
    # Validation is never augmented (nor mirrored or shifted for TTA: the model does that).
    plain_x, plain_y = next(iter(plain.val_dataloader()))
    assert torch.equal(val_x, plain_x) and torch.equal(val_y, plain_y)
    augments = preset not in ("none", "tta_flip", "tta_shift")
    assert torch.equal(x, x0) != augments
    if preset in MIXES:
        assert y.shape == (32, 10)
        torch.testing.assert_close(y.sum(1), torch.ones(32))
    else:
        assert torch.equal(y, y0)
    path = "the fast path (data.fast)" if fast else "torchvision's DataLoader path"
    assert (f"augment: training images, {path}" in caplog.text) == augments


@pytest.mark.slow
def test_augmented_fast_path_resumes_exactly_after_a_kill_mid_epoch(data_dir, tmp_path):
    """Killed mid-epoch and resumed with the same overrides, a run with every kind of draw (shifts,
    flips, a policy, erasing, mixing) ends with the uninterrupted run's weights."""
    settings = [
        *(o for o in FAST if not o.startswith(("trainer.max_epochs", "data.val_size"))),
        "data=cifar10", "data.val_size=40", "augment=[shift_flip,trivialaugment,cutout,mixup]",
        "trainer.max_epochs=2", "trainer.deterministic=true",
        "callbacks.step_checkpoint.every_n_train_steps=2", "~callbacks.test_figures", "seed=3",
    ]  # fmt: skip
    straight = run_train(*settings, data_dir=data_dir, log_dir=tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    log_dir = tmp_path / "killed"
    # step 4 is batch 1 of epoch 1 (3 batches an epoch): last.ckpt of step 4 is mid-epoch
    fault = f"+callbacks.kill={{_target_:tests.helpers.KillAt,once:{log_dir}/killed,step:4}}"
    killed = run_train(*settings, fault, data_dir=data_dir, log_dir=log_dir)
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = run_train(*settings, fault, "ckpt_path=last", data_dir=data_dir, log_dir=log_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (expected,) = (tmp_path / "straight" / "train" / "runs").iterdir()
    (got,) = (log_dir / "train" / "runs").glob("*/checkpoints/last.ckpt")
    want = torch.load(expected / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    have = torch.load(got, weights_only=True)["state_dict"]
    assert want.keys() == have.keys()
    for name in want:
        assert torch.equal(want[name], have[name]), name
