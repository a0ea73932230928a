"""Shared fixtures: generated datasets in real formats and the real Hydra config, shrunk."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import datamodules  # noqa: F401  (registers the resolvers the data configs use)
from tests.cifar_files import write_cifar10_layout
from tests.idx_files import write_torchvision_layout
from tests.image_files import write_class_folders

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """MNIST and FashionMNIST (600 train / 200 test each) and CIFAR-10 (200 / 60) in
    torchvision's on-disk layouts."""
    root = tmp_path_factory.mktemp("data")
    write_torchvision_layout(root, "MNIST", seed=1)
    write_torchvision_layout(root, "FashionMNIST", seed=2)
    write_cifar10_layout(root, seed=3)
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """A folder of 3 class folders of 30 PNG/JPEG images each, of mixed sizes and modes."""
    return write_class_folders(tmp_path_factory.mktemp("images"), per_class=30)


def compose_train(overrides: list[str] | None = None) -> DictConfig:
    """The real ``conf/train.yaml`` composed as ``python train.py <overrides>`` would."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="train", overrides=overrides or [], return_hydra_config=True)
    HydraConfig().set_config(cfg)
    return cfg


# Generated data is no original copy: its MD5s differ (data=imagefolder has no such check).
GENERATED = "data.verify_checksums=false"
# Shrinks a run to seconds on generated data: tiny validation split, two batches per stage, no
# progress bar.
FAST = [
    GENERATED,
    "data.val_size=100",
    "data.batch_size=32",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
]


@pytest.fixture
def train_cfg(data_dir, tmp_path):
    """Returns a function composing the shrunk train config that writes under ``tmp_path``."""

    def make(*overrides: str) -> DictConfig:
        paths = [f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path}"]
        fast = [o for o in FAST if o != GENERATED or "data=imagefolder" not in overrides]
        return compose_train([*paths, *fast, *overrides])

    return make
