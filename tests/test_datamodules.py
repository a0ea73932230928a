"""DataModules on small generated IDX files in torchvision's real on-disk layout."""

import pytest
import torch

from datamodules import FashionMNISTDataModule, MNISTDataModule
from lightning_models import LabError
from tests.helpers import write_gz_folder


def test_split_sizes_batches_and_normalisation(data_dir):
    dm = FashionMNISTDataModule(
        str(data_dir), batch_size=50, val_size=100, mean=[0.5], std=[0.5], verify_checksums=False
    )
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (500, 100, 200)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (50, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (50,) and y.dtype == torch.int64
    # ToTensor maps 0..255 to [0, 1]; Normalize(0.5, 0.5) maps that to [-1, 1].
    assert x.min() >= -1 and x.max() == 1.0
    assert dm.classes[0] == "T-shirt/top"


def test_split_is_seeded_and_independent_of_the_global_seed(data_dir):
    def val_indices(split_seed, global_seed):
        torch.manual_seed(global_seed)
        dm = MNISTDataModule(str(data_dir), val_size=100, split_seed=split_seed)
        dm.setup()
        return list(dm.data_val.indices)

    assert val_indices(0, global_seed=1) == val_indices(0, global_seed=2)
    assert val_indices(0, global_seed=1) != val_indices(1, global_seed=1)


@pytest.mark.parametrize("fast", [True, False])
def test_split_seed_null_validates_on_the_last_images_of_the_files(data_dir, fast):
    # CS231n's 49k / 1k CIFAR-10 split (report 003), on the 200 generated training images
    from datamodules import CIFAR10DataModule

    dm = CIFAR10DataModule(
        str(data_dir),
        batch_size=64,
        val_size=50,
        split_seed=None,
        fast=fast,
        verify_checksums=False,
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.train_rows.tolist() == list(range(150))
    assert dm.val_rows.tolist() == list(range(150, 200))
    images = [dm.data_train.dataset[i][0] for i in (149, 150)]  # the two sides of the cut
    torch.testing.assert_close(dm.data_train[149][0], images[0])
    torch.testing.assert_close(dm.data_val[0][0], images[1])
    with pytest.raises(LabError, match="data.split_seed=-1 is not allowed"):
        MNISTDataModule(str(data_dir), val_size=100, split_seed=-1)


def test_val_size_zero_means_no_validation(data_dir):
    dm = MNISTDataModule(str(data_dir), val_size=0)
    dm.setup()
    assert not dm.has_validation and len(dm.data_train) == 600
    assert dm.val_dataloader() == []  # Lightning then skips the validation loop


def test_resize_and_three_channels(data_dir):
    dm = MNISTDataModule(
        str(data_dir),
        batch_size=8,
        val_size=10,
        image_size=32,
        in_channels=3,
        mean=[0.1307],
        std=[0.3081],
    )
    dm.setup()
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape == (8, 3, 32, 32)


def test_fashion_is_unpacked_from_the_debian_package_folder(tmp_path, monkeypatch):
    debian = write_gz_folder(tmp_path / "usr-share-datasets-fashion-mnist", n_train=300, n_test=50)
    monkeypatch.setattr(FashionMNISTDataModule, "debian_dir", debian)
    dm = FashionMNISTDataModule(
        str(tmp_path / "data"), val_size=0, download=False, verify_checksums=False
    )
    dm.prepare_data()
    assert sorted(p.name for p in (tmp_path / "data/FashionMNIST/raw").iterdir()) == [
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]
    dm.setup()
    assert (len(dm.data_train), len(dm.data_test)) == (300, 50)


def test_missing_files_error_names_folder_files_and_remedy(tmp_path, monkeypatch):
    monkeypatch.setattr(FashionMNISTDataModule, "debian_dir", tmp_path / "not-installed")
    dm = FashionMNISTDataModule(str(tmp_path / "empty"), download=False)
    with pytest.raises(LabError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert str(tmp_path / "empty" / "FashionMNIST" / "raw") in msg
    assert "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "paths.data_dir" in msg


@pytest.mark.parametrize(
    ("kwargs", "sentence"),
    [
        ({"batch_size": 0}, "data.batch_size=0 is not allowed"),
        ({"batch_size": 2.5}, "data.batch_size=2.5 is not allowed"),
        ({"val_size": -1}, "data.val_size=-1 is not allowed"),
        ({"num_classes": 7}, "data.num_classes=7 is wrong"),
        (
            {"mean": [0.1, 0.2]},
            r"data.mean=\[0.1, 0.2\] is not allowed with data.in_channels=1; give 1 value",
        ),
        ({"std": [0.0]}, "data.std=.* must be positive"),
    ],
)
def test_bad_arguments_are_rejected_with_the_key(data_dir, kwargs, sentence):
    with pytest.raises(LabError, match=sentence):
        MNISTDataModule(str(data_dir), **kwargs)


def test_val_size_as_a_fraction(data_dir):
    dm = MNISTDataModule(str(data_dir), val_size=0.25)
    dm.setup()
    assert (len(dm.data_train), len(dm.data_val)) == (450, 150)
    with pytest.raises(LabError, match="or a fraction between 0 and 1"):
        MNISTDataModule(str(data_dir), val_size=1.5)


def test_val_size_larger_than_training_set(data_dir):
    dm = MNISTDataModule(str(data_dir), val_size=600)
    with pytest.raises(
        LabError,
        match=r"data.val_size=600 is not smaller than the MNIST training "
        r"set \(600 images\); use a value from 0 to 599",
    ):
        dm.setup()


@pytest.mark.parametrize(
    ("cls", "mirrors"), [(MNISTDataModule, False), (FashionMNISTDataModule, True)]
)
def test_augmentation_shifts_training_images_only_and_mirrors_clothes_not_digits(
    data_dir, cls, mirrors
):
    dm = cls(str(data_dir), val_size=100, augment=True)
    dm.setup()
    steps = [type(t).__name__ for t in dm.train_transform.transforms]
    assert ("RandomHorizontalFlip" in steps) == mirrors and "RandomCrop" in steps
    first, second = dm.data_train[0][0], dm.data_train[0][0]
    torch.manual_seed(0)
    assert any(not torch.equal(dm.data_train[0][0], first) for _ in range(10))
    assert torch.equal(dm.data_val[0][0], dm.data_val[0][0])
    assert torch.equal(dm.data_test[0][0], dm.data_test[0][0])
    plain = cls(str(data_dir), val_size=100)
    plain.setup()
    assert torch.equal(plain.data_val[0][0], dm.data_val[0][0])  # same images, same split
    assert second.shape == (1, 28, 28)


def test_augment_must_be_a_boolean(data_dir):
    with pytest.raises(LabError, match="data.augment='yes' is not allowed; use true or false"):
        MNISTDataModule(str(data_dir), augment="yes")
