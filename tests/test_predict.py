"""``python -m lightning_models.tools.predict``: classify image files with a checkpoint of a
real run."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision import datasets

from datamodules.cifar10 import CIFAR10_CLASSES, CIFAR10DataModule
from lightning_models.build import instantiate_node as build
from lightning_models.tools.predict import (
    load_predictor,
    main,
    preprocess,
    run_config,
)
from tests.helpers import FAST, ROOT, run_train

MNIST_CLASSES = list(datasets.MNIST.classes)
N_GREY = 3  # 28x28 grayscale PNGs of MNIST test images


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory) -> Path:
    """One tiny real run: a log-softmax LeNet-5 (so probabilities are exp of its output) on the
    generated MNIST."""
    logs = tmp_path_factory.mktemp("logs")
    trained = run_train(
        "model=lenet5_relu", "loss=nll", "data=mnist", *FAST, data_dir=data_dir, log_dir=logs
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    (run,) = (logs / "train" / "runs").iterdir()
    return run


@pytest.fixture(scope="module")
def ckpt(run_dir) -> Path:
    (best,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")
    return best


@pytest.fixture(scope="module")
def mnist_test(data_dir, ckpt):
    """The run's datamodule set up on the generated data: its test tensors are the reference."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LAB_DATA_DIR", str(data_dir))  # where run_config points paths.data_dir
        datamodule = build(run_config(ckpt).data)
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule.data_test


@pytest.fixture(scope="module")
def inputs(mnist_test, tmp_path_factory) -> dict[str, Path]:
    """A folder of images of every kind a user has, one corrupt, plus a text file beside it."""
    root = tmp_path_factory.mktemp("inputs")
    folder = root / "images"
    (folder / "grey").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(N_GREY):
        Image.fromarray(mnist_test.data[i].numpy(), "L").save(folder / "grey" / f"test_{i}.png")
    pixels = rng.integers(0, 256, size=(50, 40, 4), dtype=np.uint8)
    Image.fromarray(pixels[..., :3], "RGB").save(folder / "rgb_40x50.png")
    Image.fromarray(pixels[:17, :33, :3], "RGB").save(folder / "rgb_33x17.jpg")
    Image.fromarray(pixels, "RGBA").save(folder / "rgba.png")
    Image.fromarray(pixels[..., :3], "RGB").quantize(16).save(folder / "palette.png")
    Image.fromarray(pixels[..., 0].astype(np.uint16) * 256).save(folder / "grey16.png")
    whole = (folder / "rgb_40x50.png").read_bytes()
    (folder / "corrupt.png").write_bytes(whole[: len(whole) // 2])  # truncated mid-image
    (folder / "readme.md").write_text("not an image, and not picked up from a folder\n")
    text = root / "notes.txt"
    text.write_text("given explicitly, so tried, and reported\n")
    return {"folder": folder, "text": text, "missing": root / "missing.png"}


def expected_order(inputs) -> list[str]:
    folder = inputs["folder"]
    walked = ["corrupt.png", "grey16.png", "palette.png", "rgb_33x17.jpg", "rgb_40x50.png"]
    walked += ["rgba.png"] + [f"grey/test_{i}.png" for i in range(N_GREY)]
    return [str(folder / name) for name in walked] + [str(inputs["text"]), str(inputs["missing"])]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_csv_has_one_row_per_file_and_reports_the_unreadable_ones(ckpt, inputs, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    args = [str(inputs["folder"]), str(inputs["text"]), str(inputs["missing"])]
    code = main([str(ckpt), *args, "--top-k", "3", "--batch-size", "4", "--output", str(out)])
    assert code == 0
    rows = read_csv(out)
    assert [row["path"] for row in rows] == expected_order(inputs)
    assert list(rows[0]) == [
        "path", "label", "probability", "label_2", "probability_2", "label_3", "probability_3",
        "error",
    ]  # fmt: skip
    by_name = {Path(row["path"]).name: row for row in rows}
    failed = {"corrupt.png", "notes.txt", "missing.png"}
    for name in failed:
        row = by_name[name]
        assert row["error"] and row["label"] == "" and row["probability"] == ""
    assert "corrupt.png" in by_name["corrupt.png"]["error"]
    assert "truncated" in by_name["corrupt.png"]["error"]
    assert "not an image" in by_name["notes.txt"]["error"]
    assert by_name["missing.png"]["error"] == "no such file or directory"
    for name, row in by_name.items():
        if name in failed:
            continue
        assert row["error"] == ""
        labels = [row["label"], row["label_2"], row["label_3"]]
        probs = [float(row[k]) for k in ("probability", "probability_2", "probability_3")]
        assert set(labels) <= set(MNIST_CLASSES) and len(set(labels)) == 3
        assert all(0 <= p <= 1 for p in probs) and probs == sorted(probs, reverse=True)
        assert sum(probs) <= 1 + 1e-5
    assert capsys.readouterr().out.strip() == f"8 classified, 3 unreadable; written to {out}"


def test_a_training_image_as_png_gets_the_models_prediction_on_the_datamodule_tensor(
    ckpt, inputs, mnist_test, tmp_path
):
    predictor = load_predictor(ckpt, device=torch.device("cpu"))
    out = tmp_path / "preds.csv"
    assert main([str(ckpt), str(inputs["folder"] / "grey"), "--output", str(out)]) == 0
    rows = read_csv(out)
    for i, row in enumerate(rows):
        reference, _label = mnist_test[i]
        from_file = preprocess(row["path"], predictor)
        assert torch.equal(from_file, reference)  # the same pixels, the same normalisation
        with torch.no_grad():
            log_probs = predictor.model(reference[None])
        assert row["label"] == MNIST_CLASSES[int(log_probs.argmax())]
        assert float(row["probability"]) == pytest.approx(float(log_probs.exp().max()), abs=1e-5)


@pytest.mark.slow
def test_table_on_stdout_through_the_real_command_line(ckpt, inputs):
    args = [str(inputs["folder"]), str(inputs["text"]), str(inputs["missing"]), "--top-k", "2"]
    result = subprocess.run(
        [sys.executable, "-m", "lightning_models.tools.predict", str(ckpt), *args],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["path", "label", "probability", "label_2", "probability_2"]
    assert lines[-1] == "8 classified, 3 unreadable"
    body = lines[1:-1]
    assert [line.split()[0] for line in body] == expected_order(inputs)
    # Columns line up: every probability starts where its header does.
    column = lines[0].index("probability")
    for line in body:
        if "error: " in line:
            assert line.split(maxsplit=1)[1].startswith("error: ")
        else:
            assert float(line[column:].split()[0]) <= 1
    (corrupt,) = [line for line in body if "corrupt.png" in line]
    assert "error: cannot read image" in corrupt and "truncated" in corrupt


def test_missing_checkpoint_or_run_dir_or_inputs_exit_2_with_one_sentence(
    ckpt, inputs, tmp_path, capsys
):
    image = str(inputs["folder"] / "rgba.png")
    assert main([str(tmp_path / "nope.ckpt"), image]) == 2
    err = capsys.readouterr().err.strip()
    missing = tmp_path / "nope.ckpt"
    assert err == f"error: ckpt_path={missing} is not a file; give a .ckpt of a run's checkpoints/"

    stray = tmp_path / "model.ckpt"
    stray.write_bytes(ckpt.read_bytes())
    assert main([str(stray), image]) == 2
    err = capsys.readouterr().err
    assert "no training config beside ckpt_path=" in err and len(err.strip().splitlines()) == 1

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(ckpt), str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no input files to classify:") and str(empty) in err
    assert "\n" not in err


def test_only_unreadable_files_exit_1(ckpt, inputs, capsys):
    assert main([str(ckpt), str(inputs["text"])]) == 1
    captured = capsys.readouterr()
    assert "0 classified, 1 unreadable" in captured.out
    assert "none of the 1 files could be classified" in captured.err


def test_image_folder_run_whose_folder_is_gone_labels_by_index(run_dir, ckpt, inputs, tmp_path):
    """The image folder of a run moved away: the model still loads (its class count comes from
    the checkpoint), the labels become class indices, and a note says so."""
    moved = tmp_path / "run"
    (moved / "checkpoints").mkdir(parents=True)
    (moved / ".hydra").mkdir()
    (moved / "checkpoints" / ckpt.name).write_bytes(ckpt.read_bytes())
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    config.data = {
        "_target_": "datamodules.image_folder.ImageFolderDataModule",
        "root": str(tmp_path / "gone"),
        "in_channels": 1,
        "image_size": 28,
        "mean": [0.0],
        "std": [1.0],
        "num_classes": "${lab.count_classes:}",
    }
    OmegaConf.save(config, moved / ".hydra" / "config.yaml")

    predictor = load_predictor(moved / "checkpoints" / ckpt.name, device=torch.device("cpu"))
    assert predictor.classes == [str(i) for i in range(10)]
    assert any("labels are class indices" in note for note in predictor.notes)
    reference = load_predictor(ckpt, device=torch.device("cpu"))
    image = str(inputs["folder"] / "grey" / "test_0.png")
    assert torch.equal(preprocess(image, predictor), preprocess(image, reference))


def test_cifar10_class_names_are_known_without_its_files(tmp_path):
    # Predicting with a CIFAR-10 checkpoint labels images though the data files are elsewhere.
    assert CIFAR10DataModule(str(tmp_path / "nowhere")).classes == list(CIFAR10_CLASSES)
