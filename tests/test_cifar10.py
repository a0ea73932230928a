"""CIFAR10DataModule on small generated files in CIFAR-10's real on-disk format (pickles)."""

import pickle
import shutil
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar

from datamodules import Augmentation
from datamodules.cifar10 import CIFAR10_MEAN, CIFAR10_STD, CIFAR10DataModule
from lightning_models import ImageClassifier, LabError
from lightning_models.build import instantiate_node as build
from tests.helpers import LABEL_NAMES, PIXELS, batch_bytes, compose_train, write_cifar10_layout

BATCH_KEYS = ["batch_label", "labels", "data", "filenames"]  # in the original's order


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    """5 train batches of 40 images and a test batch of 60, in ``cifar-10-batches-py/``."""
    return write_cifar10_layout(tmp_path_factory.mktemp("cifar"), per_batch=40, n_test=60)


@pytest.fixture
def own_copy(cifar_dir, tmp_path):
    """A copy of the generated files that a test may change."""
    shutil.copytree(cifar_dir / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    return tmp_path


def generated(data_dir, **kwargs) -> CIFAR10DataModule:
    """A datamodule on generated files: not the original CIFAR-10, so no MD5 check."""
    kwargs.setdefault("verify_checksums", False)
    return CIFAR10DataModule(str(data_dir), **kwargs)


def ready(data_dir, **kwargs) -> CIFAR10DataModule:
    dm = generated(data_dir, download=False, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_generated_files_decode_like_the_original_python2_pickles(cifar_dir):
    raw = (cifar_dir / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    assert raw[:2] == b"\x80\x02"  # protocol 2, as cPickle wrote them
    as_bytes = pickle.loads(raw, encoding="bytes")
    assert list(as_bytes) == [key.encode() for key in BATCH_KEYS]
    assert as_bytes[b"data"].shape == (40, PIXELS) and as_bytes[b"data"].dtype == np.uint8
    assert as_bytes[b"batch_label"] == b"training batch 1 of 5"
    # torchvision reads them with encoding="latin1": the same keys, as str.
    assert list(pickle.loads(raw, encoding="latin1")) == BATCH_KEYS


def test_split_sizes_batches_and_defaults(cifar_dir):
    dm = ready(cifar_dir, batch_size=16, val_size=40)
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (160, 40, 60)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        x, y = next(iter(loader))
        assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32
        assert y.shape == (16,) and y.dtype == torch.int64
    defaults = CIFAR10DataModule(str(cifar_dir))
    assert (defaults.batch_size, defaults.val_size) == (64, 1000)
    assert defaults.augmentation == Augmentation()  # none
    assert defaults.verify_checksums and defaults.download


def test_normalisation_uses_the_cifar10_statistics(cifar_dir):
    raw = next(iter(ready(cifar_dir, val_size=0, mean=[0.0], std=[1.0]).test_dataloader()))[0]
    normed = next(iter(ready(cifar_dir, val_size=0).test_dataloader()))[0]
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    assert raw.min() >= 0 and raw.max() == 1.0  # ToTensor alone: 0..255 -> [0, 1]
    torch.testing.assert_close(normed, (raw - mean) / std)


def test_a_pixel_comes_out_at_its_channel_row_and_column(own_copy):
    # Written by the format's definition, not by the generator's reshape: byte
    # c * 1024 + row * 32 + col of an image's row is channel c (R, G, B) at (row, col).
    data = np.zeros((2, PIXELS), dtype=np.uint8)
    pixels = {(0, 3, 5): 50, (1, 7, 11): 100, (2, 20, 30): 250}
    for (c, row, col), value in pixels.items():
        data[0, c * 1024 + row * 32 + col] = value
    test_batch = own_copy / "cifar-10-batches-py" / "test_batch"
    test_batch.write_bytes(batch_bytes(data, [7, 3], "testing batch 1 of 1"))
    x, y = next(iter(ready(own_copy, val_size=0, mean=[0.0], std=[1.0]).test_dataloader()))
    assert y.tolist() == [7, 3]
    for (c, row, col), value in pixels.items():
        assert x[0, c, row, col].item() == pytest.approx(value / 255)
    assert torch.count_nonzero(x) == len(pixels)


def test_classes_come_from_batches_meta(own_copy, cifar_dir):
    assert ready(cifar_dir, val_size=0).classes == LABEL_NAMES
    renamed = [f"class {i}" for i in range(10)]
    write_cifar10_layout(own_copy, label_names=renamed)
    assert ready(own_copy, val_size=0).classes == renamed


def test_split_is_seeded_and_independent_of_the_global_seed(cifar_dir):
    def val_indices(split_seed, global_seed):
        torch.manual_seed(global_seed)
        return list(ready(cifar_dir, val_size=20, split_seed=split_seed).data_val.indices)

    assert val_indices(0, global_seed=1) == val_indices(0, global_seed=2)
    assert val_indices(0, global_seed=1) != val_indices(1, global_seed=1)


def test_augmentation_changes_training_images_only(cifar_dir):
    torch.manual_seed(0)
    plain = ready(cifar_dir, batch_size=20, val_size=20)
    augmented = ready(cifar_dir, batch_size=20, val_size=20, augment=True)
    # The same training image, read five times: always the same without augmentation, and not
    # with it (a random crop of 81 positions times a flip).
    assert all(torch.equal(plain.data_train[0][0], plain.data_train[0][0]) for _ in range(5))
    reads = [augmented.data_train[0][0] for _ in range(5)]
    assert not all(torch.equal(reads[0], r) for r in reads[1:])
    # Validation and test batches are the same on every read and with or without augmentation.
    for loader in ("val_dataloader", "test_dataloader"):
        first = next(iter(getattr(augmented, loader)()))[0]
        torch.testing.assert_close(first, next(iter(getattr(augmented, loader)()))[0])
        torch.testing.assert_close(first, next(iter(getattr(plain, loader)()))[0])


def test_resize_and_grey(cifar_dir):
    dm = ready(
        cifar_dir, batch_size=8, val_size=8, image_size=28, in_channels=1, mean=[0.5], std=[0.5]
    )
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 28, 28)


def test_missing_files_error_names_folder_files_and_remedy(own_copy):
    (own_copy / "cifar-10-batches-py" / "test_batch").unlink()
    (own_copy / "cifar-10-batches-py" / "batches.meta").unlink()
    dm = generated(own_copy, download=False)
    with pytest.raises(LabError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert f"searched {own_copy / 'cifar-10-batches-py'} for test_batch, batches.meta;" in msg
    assert "data_batch_1" not in msg
    assert "paths.data_dir" in msg and "LAB_DATA_DIR" in msg and "network" in msg
    with pytest.raises(LabError, match="CIFAR10 files not found"):
        dm.setup()  # also when prepare_data was skipped


def test_failed_download_ends_in_the_same_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    dm = generated(tmp_path, download=True)
    with pytest.raises(LabError, match="searched .* for data_batch_1, .*, batches.meta;"):
        dm.prepare_data()


def test_download_fills_the_folder(tmp_path, monkeypatch):
    def fake_download(url, root, **kwargs):
        assert url.endswith("cifar-10-python.tar.gz")
        write_cifar10_layout(tmp_path, per_batch=4, n_test=6)

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", fake_download)
    dm = generated(tmp_path, val_size=2, download=True)
    dm.prepare_data()
    dm.setup()
    assert (len(dm.data_train), len(dm.data_test)) == (18, 6)


def test_verify_checksums_names_the_file_that_is_not_the_original(cifar_dir):
    dm = CIFAR10DataModule(str(cifar_dir), val_size=0, download=False, verify_checksums=True)
    dm.prepare_data()  # the files are there
    with pytest.raises(LabError) as err:
        dm.setup()
    msg = str(err.value)
    assert f"file {cifar_dir / 'cifar-10-batches-py' / 'data_batch_1'} is corrupt" in msg
    assert "c99cafc152244af753f735de768cd75f" in msg and "data.verify_checksums=false" in msg


@pytest.mark.parametrize(
    ("kwargs", "sentence"),
    [
        ({"num_classes": 100}, "data.num_classes=100 is wrong: CIFAR10 has 10 classes"),
        ({"augment": "no"}, "data.augment='no' is not allowed; use true or false"),
        ({"verify_checksums": 1}, "data.verify_checksums=1 is not allowed"),
        (
            {"in_channels": 1},
            r"data.mean=\[0.4914, 0.4822, 0.4465\] is not allowed with data.in_channels=1; "
            r"give 1 value",
        ),
    ],
)
def test_bad_arguments_are_rejected_with_the_key(cifar_dir, kwargs, sentence):
    with pytest.raises(LabError, match=sentence):
        generated(cifar_dir, **kwargs)


def test_val_size_larger_than_training_set(cifar_dir):
    dm = generated(cifar_dir, download=False)  # default 1000 > 200 images
    with pytest.raises(
        LabError,
        match=r"data.val_size=1000 is not smaller than the CIFAR10 training "
        r"set \(200 images\); use a value from 0 to 199",
    ):
        dm.setup()


def test_hydra_config_builds_the_datamodule_and_a_model_that_takes_its_batches(cifar_dir):
    cfg = compose_train(["data=cifar10", "model=lenet5", f"paths.data_dir={cifar_dir}"])
    assert (cfg.data.batch_size, cfg.data.val_size, cfg.data.augment) == (64, 1000, False)
    assert cfg.data.verify_checksums and list(cfg.data.mean) == list(CIFAR10_MEAN)
    cfg.data.verify_checksums = False  # generated files
    cfg.data.val_size = 20
    dm = build(cfg.data)
    assert isinstance(dm, CIFAR10DataModule) and dm.data_dir == str(cifar_dir)
    dm.prepare_data()
    dm.setup("fit")
    x, _ = next(iter(dm.train_dataloader()))
    model = build(cfg.model)
    assert isinstance(model, ImageClassifier)
    assert model(x).shape == (64, 10)


@pytest.mark.slow
def test_cifar_cnn_trains_and_tests_end_to_end_on_generated_cifar_files(train_cfg, tmp_path):
    from train import train

    metrics = train(train_cfg("model=cifar_cnn", "data=cifar10", "trainer.max_epochs=2"))
    assert metrics["status"] == "ok" and 0.0 <= metrics["test/acc"] <= 1.0
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} >= {"last.ckpt"}
    assert metrics["epochs"] == 2
