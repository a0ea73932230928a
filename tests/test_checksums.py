"""Truncated, flipped-byte and missing data files are refused by name, with how to repair them."""

import shutil

import pytest

from datamodules import FashionMNISTDataModule, MNISTDataModule
from datamodules.checksums import FASHION_MNIST_MD5, MNIST_MD5, md5_of, verify_files
from lightning_models import LabError


@pytest.fixture
def own_copy(data_dir, tmp_path, monkeypatch):
    """A copy of the generated MNIST files, registered as the originals (their MD5s)."""
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(data_dir / "MNIST" / "raw", raw)
    monkeypatch.setattr(MNISTDataModule, "md5", {p.name: md5_of(p) for p in raw.iterdir()})
    return tmp_path


def damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped byte":
        data[len(data) // 3] ^= 0xFF
        path.write_bytes(bytes(data))


def test_the_original_copy_passes(own_copy):
    MNISTDataModule(str(own_copy), download=False).prepare_data()


@pytest.mark.parametrize("how", ["truncated", "flipped byte"])
def test_a_damaged_file_is_named_with_the_repair(own_copy, how):
    bad = own_copy / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    damage(bad, how)
    with pytest.raises(LabError) as err:
        MNISTDataModule(str(own_copy), download=False).prepare_data()
    msg = str(err.value)
    assert msg.startswith(f"MNIST file {bad} is corrupt or incomplete (MD5 ")
    assert f"delete {bad.parent} and run again" in msg
    assert "data.verify_checksums=false accepts a modified copy" in msg


def test_the_check_can_be_switched_off_for_a_modified_copy(own_copy):
    damage(own_copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", "flipped byte")
    MNISTDataModule(str(own_copy), download=False, verify_checksums=False).prepare_data()


def test_fashion_repair_names_the_debian_package(tmp_path, data_dir, monkeypatch):
    shutil.copytree(data_dir / "FashionMNIST", tmp_path / "FashionMNIST")
    monkeypatch.setattr(FashionMNISTDataModule, "debian_dir", tmp_path / "not-installed")
    with pytest.raises(LabError, match="apt-get install --reinstall dataset-fashion-mnist"):
        FashionMNISTDataModule(str(tmp_path), download=False).prepare_data()


def test_verify_files_names_a_missing_file(tmp_path):
    (tmp_path / "a").write_bytes(b"x")
    expected = {"a": md5_of(tmp_path / "a"), "b": "0" * 32}
    with pytest.raises(LabError, match=f"ds file {tmp_path / 'b'} is missing; get it"):
        verify_files(tmp_path, expected, "ds", "get it")


def test_sums_cover_every_file_torchvision_reads():
    names = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"}  # fmt: skip
    assert set(MNIST_MD5) == set(FASHION_MNIST_MD5) == names
    assert all(len(v) == 32 for v in [*MNIST_MD5.values(), *FASHION_MNIST_MD5.values()])
