"""ImageFolderDataModule and ``data=imagefolder`` on generated PNG and JPEG folders."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader, Subset
from torchvision import transforms

from datamodules.base import Augmentation
from datamodules.image_folder import (
    RESOLVER,
    ImageFolderDataModule,
    ImageLoader,
    _ClassFolders,
    _Decoder,
    _View,
    cache_key,
    decode_files,
    is_image_file,
    register_resolvers,
    reorder_rows_,
)
from lightning_models import LabError
from lightning_models.build import instantiate_node as build
from tests.helpers import (
    CLASSES,
    compose_train,
    truncate,
    write_class_folders,
    write_image,
    write_litter,
    write_split_folders,
)

HINT = "point data.root at a folder of class sub-folders of images"


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    """``<root>/<class>/``: 3 classes x 20 images, with litter ImageFolder must skip."""
    root = write_class_folders(tmp_path_factory.mktemp("pool"))
    write_litter(root)
    write_litter(root / "beach")
    return root


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> Path:
    """``<root>/train/<class>/`` (3 x 20) and ``<root>/test/<class>/`` (3 x 6)."""
    return write_split_folders(tmp_path_factory.mktemp("splits"))


def paths_of(dataset) -> list[str]:
    """The file behind each index of a (nested) Subset of a view."""
    if isinstance(dataset, Subset):
        inner = paths_of(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    return [path for path, _ in dataset.folder.samples]


def view_of(dataset) -> _View:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def load_everything(dm: ImageFolderDataModule) -> None:
    for loader in (dm.train_dataloader(), dm.test_dataloader()):
        list(loader)


def set_up(root: Path, **kwargs) -> ImageFolderDataModule:
    kwargs.setdefault("val_size", 0)  # the generated folders are too small for the default 10%
    dm = ImageFolderDataModule(str(root), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


# --- one folder of class folders: the seeded split ----------------------------------------------


def test_one_folder_is_split_into_train_val_test(pool):
    dm = set_up(pool, batch_size=8, val_size=6)
    assert dm.classes == list(CLASSES) and dm.num_classes == 3
    # 60 images (litter skipped): a fifth for test, then 6 for validation.
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (42, 6, 12)
    parts = [set(paths_of(d)) for d in (dm.data_train, dm.data_val, dm.data_test)]
    assert len(set.union(*parts)) == 60 and sum(map(len, parts)) == 60
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.float32
    assert y.shape == (8,) and y.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1  # Normalize(0.5, 0.5) of [0, 1]


def test_test_size_is_a_count_or_a_fraction(pool):
    assert len(set_up(pool, test_size=10).data_test) == 10
    assert len(set_up(pool, test_size=0.5).data_test) == 30
    assert len(set_up(pool, test_size=0.001).data_test) == 1  # never an empty test set


def test_split_is_seeded_and_independent_of_the_global_seed(pool):
    def parts(split_seed, global_seed, val_size=6):
        torch.manual_seed(global_seed)
        dm = set_up(pool, val_size=val_size, split_seed=split_seed)
        return paths_of(dm.data_test), paths_of(dm.data_val)

    assert parts(0, global_seed=1) == parts(0, global_seed=2)
    assert parts(0, global_seed=1) != parts(1, global_seed=1)
    # The test images are split off first: asking for more validation does not move them.
    assert parts(0, 1)[0] == parts(0, 1, val_size=12)[0]


def test_labels_stay_paired_with_their_class_folder(pool):
    dm = set_up(pool, batch_size=12)
    _, labels = next(iter(dm.test_dataloader()))
    folders = [Path(p).parent.name for p in paths_of(dm.data_test)]
    assert [dm.classes[i] for i in labels.tolist()] == folders


def test_resize_to_a_square_and_greyscale(pool):
    dm = set_up(pool, batch_size=60, test_size=59, image_size=24, in_channels=1)
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape == (59, 1, 24, 24)


def test_every_mode_loads_as_rgb_or_greyscale(tmp_path):
    rng = np.random.default_rng(0)
    modes = {}
    for i, variant in enumerate([(20, 10, "RGBA", ".png"), (10, 20, "P", ".png")]):
        modes[variant[2]] = write_image(tmp_path / f"{i}{variant[3]}", 1, variant, rng)
    transparent = Image.new("P", (8, 8))
    transparent.info["transparency"] = b"\0" * 256  # PIL warns when such a palette meets convert
    transparent.save(tmp_path / "t.png")
    modes["P+transparency"] = tmp_path / "t.png"
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(tmp_path / "16bit.png")
    modes["I;16"] = tmp_path / "16bit.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in modes.values():
            assert ImageLoader("RGB")(str(path)).mode == "RGB"
            assert ImageLoader("L")(str(path)).mode == "L"
    # 16-bit grey is scaled to 8 bits, not clipped: half of 65535 is mid-grey, not white.
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(tmp_path / "half.png")
    assert ImageLoader("L")(str(tmp_path / "half.png")).getpixel((0, 0)) == 128


# --- train/ and test/ folders: the folder's own split ------------------------------------------


def test_train_and_test_folders_are_the_split(splits):
    dm = set_up(splits, val_size=0)
    assert dm.classes == list(CLASSES) and not dm.has_validation
    assert (len(dm.data_train), len(dm.data_test)) == (60, 18)
    assert all(Path(p).parts[-3] == "test" for p in paths_of(dm.data_test))
    dm = set_up(splits, val_size=12)
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (48, 12, 18)
    assert all(Path(p).parts[-3] == "train" for p in paths_of(dm.data_val))


def test_a_val_folder_is_the_validation_set(tmp_path):
    root = write_split_folders(tmp_path, n_train=8, n_test=4, n_val=3)
    dm = set_up(root, val_size=0)  # val_size is ignored: val/ decides
    assert dm.has_validation
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (24, 9, 12)
    assert all(Path(p).parts[-3] == "val" for p in paths_of(dm.data_val))
    assert len(next(iter(dm.val_dataloader()))[1]) == 9


def test_augmentation_only_touches_the_training_images(splits):
    dm = set_up(splits, val_size=12, augment=True)
    names = [type(t).__name__ for t in view_of(dm.data_train).transform.transforms]
    assert names[:3] == ["Resize", "RandomCrop", "RandomHorizontalFlip"]
    for data in (dm.data_val, dm.data_test):
        assert view_of(data).transform is dm.eval_transform
        assert torch.equal(data[0][0], data[0][0])  # no randomness in evaluation
    assert view_of(dm.data_train).folder is view_of(dm.data_val).folder  # one scan, two views


# --- in memory: decoded once, batched as CIFAR-10 is --------------------------------------------


@pytest.fixture(scope="module")
def with_val(tmp_path_factory) -> Path:
    """``<root>/train/``, ``val/`` and ``test/`` of class folders (3 x 8, 3 x 3, 3 x 4)."""
    return write_split_folders(tmp_path_factory.mktemp("with_val"), n_train=8, n_test=4, n_val=3)


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x, y) for x, y in loader]


def assert_same_batches(fast: ImageFolderDataModule, plain: ImageFolderDataModule) -> None:
    """Train (in order), validation and test batches of the two paths: equal bit for bit."""
    assert fast.fast is not None and plain.fast is None
    for stage in ("train", "val", "test"):
        ours = batches(getattr(fast, f"{stage}_dataloader")())
        theirs = batches(getattr(plain, f"{stage}_dataloader")())
        assert len(ours) == len(theirs) > 0, stage
        for (x, y), (x_ref, y_ref) in zip(ours, theirs, strict=True):
            assert x.dtype == x_ref.dtype and torch.equal(x, x_ref), stage
            assert torch.equal(y, y_ref), stage


@pytest.mark.parametrize("image_size", [64, 24])  # 64: some files keep their size; 24: none
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("layout", ["pool", "splits", "with_val"])
def test_in_memory_batches_are_the_pil_paths(layout, in_channels, image_size, request):
    root = request.getfixturevalue(layout)
    # shuffle=false: both paths take the training images in the split's order, batch by batch.
    options = dict(in_channels=in_channels, image_size=image_size, val_size=6, shuffle=False)
    options.update(
        batch_size=7, mean=[0.4, 0.5, 0.6][:in_channels], std=[0.2, 0.25, 0.3][:in_channels]
    )
    fast = set_up(root, fast=True, **options)
    plain = set_up(root, fast=False, **options)
    assert fast.use_fast and fast.memory_source == "decoded" and not plain.use_fast
    held = fast.fast.memory[0].images
    assert held.dtype == torch.uint8 and held.shape[1:] == (in_channels, image_size, image_size)
    assert_same_batches(fast, plain)
    # The same images behind the same indices: the torchvision datasets stay for inspection.
    for data, ref in ((fast.data_train, plain.data_train), (fast.data_test, plain.data_test)):
        assert paths_of(data) == paths_of(ref)


def test_auto_is_in_memory_and_shuffled_batches_are_the_pil_images(pool):
    dm = set_up(pool, val_size=6, batch_size=10, image_size=32)
    assert dm.use_fast and dm.fast is not None  # data.fast=auto, the default
    loader = dm.train_dataloader()
    rows = loader.plan(0).rows
    assert sorted(rows.tolist()) == sorted(dm.data_train.indices)
    training_file = dm.data_train.dataset  # the rows index the images left after the test split
    for k, (x, y) in enumerate(loader):
        items = [training_file[int(r)] for r in rows[k * 10 : (k + 1) * 10]]
        assert torch.equal(x, torch.stack([image for image, _ in items]))
        assert y.tolist() == [label for _, label in items]


def test_augmentation_in_memory_is_the_pil_paths_crop_and_flip(splits):
    dm = set_up(splits, val_size=12, augment=True, image_size=32)
    assert dm.augmentation == Augmentation(max_shift=4, mirror=True)
    assert (dm.fast.train_batches.max_shift, dm.fast.train_batches.mirror) == (4, True)
    assert not dm.fast.eval_batches.augments
    plan = dm.train_dataloader().plan(0)
    assert plan.shifts.max() > 0 and plan.flips.any()


def test_decoding_in_worker_processes_gives_the_same_array(pool):
    images = _ClassFolders(str(pool), is_valid_file=is_image_file)
    paths = [path for path, _ in images.samples]
    decoder = _Decoder(ImageLoader("RGB"), transforms.Resize((20, 20)), 3, 20)
    here, processes_here = decode_files(paths, decoder, workers=1)
    there, processes = decode_files(paths, decoder, workers=2)
    assert (processes_here, processes) == (0, 2)
    assert here.shape == (60, 3, 20, 20) and torch.equal(here, there)


def test_reorder_rows_in_place():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 2, 3, 3), dtype=np.uint8)
    order = rng.permutation(50)
    expected = images[order]
    reorder_rows_(images, order)
    assert np.array_equal(images, expected)


# --- the cache of decoded images --------------------------------------------------------------


def cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_the_cache_spares_the_next_run_the_decoding(tmp_path, caplog):
    root = write_class_folders(tmp_path / "images", per_class=6)
    cache = tmp_path / "cache"
    options = dict(cache_dir=str(cache), image_size=24, val_size=3, test_size=4, batch_size=5)
    options["shuffle"] = False  # training batches in the split's order, on both paths
    first = set_up(root, **options)
    assert first.memory_source == "decoded"
    assert len(cache_files(cache)) == 1 and cache_files(cache)[0].endswith(".pt")  # no temp left
    with caplog.at_level("INFO", logger="datamodules.image_folder"):
        second = set_up(root, **options)
    assert second.memory_source == "cache" and "loaded the decoded images of" in caplog.text
    for ours, theirs in zip(first.fast.memory, second.fast.memory, strict=True):
        assert torch.equal(ours.images, theirs.images) and torch.equal(ours.labels, theirs.labels)
    assert_same_batches(second, set_up(root, **options, fast=False))
    # Another split of the same files: loaded and reordered, still the PIL path's images.
    other = set_up(root, **{**options, "split_seed": 1})
    assert other.memory_source == "cache" and len(cache_files(cache)) == 1
    assert_same_batches(other, set_up(root, **{**options, "split_seed": 1}, fast=False))
    # Another size or channel count is another array.
    assert set_up(root, **{**options, "image_size": 16}).memory_source == "decoded"
    assert len(cache_files(cache)) == 2
    # One file touched: its modification time is in the key, so the folder is decoded anew.
    touched = next((root / "forest").iterdir())
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert set_up(root, **options).memory_source == "decoded"
    assert len(cache_files(cache)) == 3
    assert set_up(root, **options).memory_source == "cache"


def test_the_cache_key_changes_with_any_file(tmp_path):
    root = write_class_folders(tmp_path, per_class=2)
    samples = _ClassFolders(str(root), is_valid_file=is_image_file).samples
    key = cache_key(root, samples, "RGB", 32)
    assert cache_key(root, samples, "RGB", 32) == key
    assert cache_key(root, samples, "L", 32) != key and cache_key(root, samples, "RGB", 31) != key
    path = Path(samples[0][0])
    stat = path.stat()
    path.write_bytes(path.read_bytes() + b"\0")  # one byte more, the same modification time
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache_key(root, samples, "RGB", 32) != key
    assert cache_key(root, samples[1:], "RGB", 32) != key  # a file less


def test_a_damaged_cache_file_is_decoded_again_and_replaced(tmp_path, caplog):
    root = write_class_folders(tmp_path / "images", per_class=4)
    cache = tmp_path / "cache"
    set_up(root, cache_dir=str(cache), test_size=3)
    (file,) = cache.iterdir()
    file.write_bytes(file.read_bytes()[:100])  # cut short
    with caplog.at_level("WARNING", logger="datamodules.image_folder"):
        dm = set_up(root, cache_dir=str(cache), test_size=3)
    assert dm.memory_source == "decoded" and "cannot read" in caplog.text
    assert set_up(root, cache_dir=str(cache), test_size=3).memory_source == "cache"


def test_without_the_fast_path_nothing_is_cached(tmp_path):
    root = write_class_folders(tmp_path / "images", per_class=2)
    set_up(root, cache_dir=str(tmp_path / "cache"), fast=False, test_size=2)
    assert not (tmp_path / "cache").exists()


# --- the memory budget ---------------------------------------------------------------------------


def test_a_folder_over_the_budget_keeps_the_loaders(pool, caplog):
    # 60 images at 1024x1024x3 would take 180 MB: none is decoded, the loaders read them.
    with caplog.at_level("INFO", logger="datamodules.in_memory"):
        dm = set_up(pool, image_size=1024, max_memory_mb=100)
    assert not dm.use_fast and dm.fast is None and dm.memory_source is None
    assert isinstance(dm.train_dataloader(), DataLoader)
    why = (
        f"the 60 images of {pool} at 1024x1024x3 need 180.0 MB, more than data.max_memory_mb=100 "
        "(raise it if the host and training device have the memory)"
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "datamodules.in_memory"]
    assert f"data.fast=auto: {why}; using torchvision's DataLoader" in lines
    assert ImageFolderDataModule(str(pool), image_size=1024, max_memory_mb=180)._too_big(60) is None
    sentence = re.escape(f"data.fast=true cannot be used: {why}; use data.fast=auto or false")
    with pytest.raises(LabError, match=sentence):
        set_up(pool, image_size=1024, max_memory_mb=100, fast=True)


@pytest.mark.parametrize("value", [0, -1, 1.5, "2GB", True])
def test_bad_max_memory_mb(pool, value):
    sentence = rf"data.max_memory_mb={value!r} is not allowed; use a whole number of at least 1"
    with pytest.raises(LabError, match=sentence):
        ImageFolderDataModule(str(pool), max_memory_mb=value)


def test_bad_cache_dir(pool, tmp_path):
    with pytest.raises(LabError, match=r"data.cache_dir=5 is not allowed; give a folder path"):
        ImageFolderDataModule(str(pool), cache_dir=5)
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        LabError, match=r"data.cache_dir=.*/file/cache cannot be used: .* is a file"
    ):
        ImageFolderDataModule(str(pool), cache_dir=str(tmp_path / "file" / "cache"))


# --- data=imagefolder and the resolver ---------------------------------------------------------


@pytest.mark.parametrize("layout", ["pool", "splits"])
def test_data_imagefolder_counts_the_classes_when_composed(layout, request):
    root = request.getfixturevalue(layout)
    cfg = compose_train(["data=imagefolder", f"data.root={root}", "data.image_size=32"])
    assert cfg.data.num_classes == 3 and cfg.model.net.num_classes == 3
    dm = build(cfg.data)
    assert isinstance(dm, ImageFolderDataModule) and dm.classes == list(CLASSES)
    module = build(cfg.model)
    assert module(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_resolver_takes_a_path_and_registers_once(splits):
    register_resolvers()  # again: importing the module did it already
    assert OmegaConf.has_resolver(RESOLVER)
    assert OmegaConf.create({"n": f"${{{RESOLVER}:{splits}}}"}).n == 3


def short_run(root: Path, output_dir: Path, *overrides: str) -> dict:
    """``train.train`` on ``root``: one epoch of two batches, on the CPU."""
    from train import train

    cfg = compose_train(
        [
            "data=imagefolder",
            f"data.root={root}",
            "data.val_size=6",
            "data.batch_size=16",
            "data.image_size=32",
            f"paths.output_dir={output_dir}",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.enable_progress_bar=false",
            "~callbacks.progress_bar",
            "trainer.accelerator=cpu",
            "trainer.devices=1",
            *overrides,
        ]
    )
    return train(cfg)


def test_a_short_training_run_on_a_folder(pool, tmp_path):
    metrics = short_run(pool, tmp_path, "data.fast=false")  # torchvision's loaders
    assert 0.0 <= metrics["test/acc"] <= 1.0 and "val/acc" in metrics


@pytest.mark.slow
def test_a_short_training_run_in_memory_and_again_from_the_cache(with_val, tmp_path, caplog):
    common = ["data.fast=true", "data.augment=true", "data.num_workers=2"]
    common.append(f"data.cache_dir={tmp_path / 'cache'}")
    first = short_run(with_val, tmp_path / "first", *common)
    assert first["status"] == "ok" and 0.0 <= first["test/acc"] <= 1.0 and "val/acc" in first
    with caplog.at_level("INFO", logger="datamodules.image_folder"):
        second = short_run(with_val, tmp_path / "second", *common)
    assert "loaded the decoded images of" in caplog.text and second["status"] == "ok"


# --- errors: one sentence naming the path and the fix ------------------------------------------


def raises_everywhere(root: Path, sentence: str) -> None:
    """The same LabError from the constructor, from the composed num_classes and from build."""
    with pytest.raises(LabError, match=sentence):
        ImageFolderDataModule(str(root))
    cfg = compose_train(["data=imagefolder", f"data.root={root}"])
    with pytest.raises(LabError, match=sentence) as err:
        cfg.data.num_classes  # noqa: B018 - resolving is the point
    assert "\n" not in str(err.value)  # OmegaConf added no "full_key: ..." lines
    for node in (cfg.data, cfg.model):
        with pytest.raises(LabError, match=sentence):
            build(node)


def test_root_does_not_exist(tmp_path):
    raises_everywhere(tmp_path / "nope", f"data.root={tmp_path / 'nope'} does not exist; {HINT}")


def test_root_is_a_file(tmp_path):
    (tmp_path / "f.jpg").write_text("x")
    raises_everywhere(tmp_path / "f.jpg", f"data.root={tmp_path / 'f.jpg'} is a file; {HINT}")


def test_root_without_class_folders(tmp_path):
    write_image(tmp_path / "a.jpg", 0, (8, 8, "RGB", ".jpg"), np.random.default_rng())
    raises_everywhere(tmp_path, f"{tmp_path} has no class sub-folders; put the images of each")


def test_root_with_one_class_folder(tmp_path):
    write_class_folders(tmp_path, per_class=2, classes=("beach",))
    raises_everywhere(tmp_path, r"has one class folder \(beach\); a classifier needs at least two")


def test_root_not_set():
    cfg = compose_train(["data=imagefolder"])
    sentence = (
        "data.root is not set; give the folder of class sub-folders of images .* on the command "
        "line, e.g. python train.py data=imagefolder data.root=/path/to/images"
    )
    with pytest.raises(LabError, match=sentence):
        cfg.data.num_classes  # noqa: B018
    with pytest.raises(LabError, match=sentence):
        build(cfg.data)


def test_train_without_test(tmp_path):
    write_class_folders(tmp_path / "train", per_class=2)
    raises_everywhere(tmp_path, f"{tmp_path} has a train/ folder but no test/ folder; add test/")


def test_splits_with_different_classes(tmp_path):
    write_class_folders(tmp_path / "train", per_class=2)
    write_class_folders(tmp_path / "test", per_class=2, classes=("beach", "forest", "town"))
    raises_everywhere(
        tmp_path,
        rf"the class folders of {tmp_path / 'test'} differ from those of {tmp_path / 'train'} "
        r"\(missing: \['street'\]; extra: \['town'\]\); give train/, test/ and val/ the same",
    )


def test_class_folder_without_images(tmp_path):
    write_class_folders(tmp_path, per_class=3)
    for path in (tmp_path / "forest").iterdir():
        path.unlink()
    write_litter(tmp_path / "forest")  # a note and hidden files are still no images
    with pytest.raises(LabError, match=f"class folder {tmp_path / 'forest'} has no images"):
        set_up(tmp_path)


@pytest.mark.parametrize("content", [b"<html>not found</html>", b""])
def test_a_file_that_is_no_image_is_named_before_training(tmp_path, content):
    write_class_folders(tmp_path, per_class=3)
    (tmp_path / "street" / "bad.jpg").write_bytes(content)
    sentence = f"cannot read image {tmp_path / 'street' / 'bad.jpg'} .*; replace or delete the file"
    for fast in (False, True):  # the header check, or decoding into memory, in setup
        with pytest.raises(LabError, match=sentence):
            set_up(tmp_path, fast=fast)
    # Without the up-front check the loader names it when it meets it.
    dm = set_up(tmp_path, check_images=False, test_size=5, fast=False)
    with pytest.raises(LabError, match=sentence):
        load_everything(dm)


def test_a_truncated_image_is_named_by_the_loader(tmp_path):
    write_class_folders(tmp_path, per_class=3)
    bad = truncate(tmp_path / "beach" / "img_000.jpg")
    sentence = rf"cannot read image {bad} \(image file is truncated"
    dm = set_up(tmp_path, test_size=4, fast=False)  # its header still reads
    with pytest.raises(LabError, match=sentence):
        load_everything(dm)
    # In memory every file is decoded in setup, here and in worker processes.
    for workers in (0, 2):
        with pytest.raises(LabError, match=sentence):
            set_up(tmp_path, test_size=4, num_workers=workers)


def test_num_classes_must_match_the_folder(pool):
    sentence = f"data.num_classes=5 is wrong: {pool} has 3 class folders; drop the override"
    with pytest.raises(LabError, match=sentence):
        ImageFolderDataModule(str(pool), num_classes=5)
    cfg = compose_train(["data=imagefolder", f"data.root={pool}", "data.num_classes=5"])
    with pytest.raises(LabError, match=sentence):
        build(cfg.data)


@pytest.mark.parametrize("value", [0, -3, 1.0, 1.5, 0.0, True, "0.2"])
def test_bad_test_size(pool, value):
    with pytest.raises(LabError, match=rf"data.test_size={value!r} is not allowed; use a count"):
        ImageFolderDataModule(str(pool), test_size=value)


def test_test_size_leaving_no_training_images(pool):
    with pytest.raises(LabError, match="data.test_size=60 leaves no training images of the 60"):
        set_up(pool, test_size=60)


def test_val_size_larger_than_what_is_left(pool):
    with pytest.raises(LabError, match=r"data.val_size=48 is not smaller than the ImageFolder"):
        set_up(pool, val_size=48)


def test_split_seed_null_is_refused_for_a_folder(pool):
    with pytest.raises(LabError, match=r"data.split_seed=null is for files in an order"):
        ImageFolderDataModule(str(pool), split_seed=None)
