"""The reproduction suite end to end (``python -m lightning_models.tools.reproduce --quick``),
and the pieces it stands on: the reports' rows files, CIFAR-10 batches made from a JPEG folder,
the unshuffled loader of report 004 and report 003's three versions of its convnet."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from PIL import Image

from datamodules.cifar10 import CIFAR10_CLASSES, CIFAR10DataModule, write_batches_from_folder
from datamodules.in_memory import BatchMaker, InMemoryImages, ShuffledBatches
from lightning_models.nets import ThreeLayerConvNet
from lightning_models.tools.reproduce import (
    REPORTS,
    ROOT,
    Measured,
    ReproduceError,
    Settings,
    gap,
    load_reports,
    multirun_command,
    multirun_folder,
    only_sweeps,
)
from tests.helpers import compose_train


@pytest.mark.slow
def test_every_rows_file_loads_and_names_real_experiments():
    experiments = {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")}
    reports = load_reports(ROOT / "reproduction" / "reports", REPORTS)
    assert [r.number for r in reports] == list(REPORTS)
    rows = [row for r in reports for s in r.sweeps for row in s.rows]
    assert len(rows) > 60
    for report in reports:
        for sweep in report.sweeps:
            named = {sweep.experiment}
            if "experiment" in sweep.keys:
                named |= {row.value_of("experiment") for row in sweep.rows}
            assert named <= experiments, (sweep.id, named - experiments)
            # every command a row shows composes with the real config
            for row in sweep.rows if sweep.available else []:
                overrides = sweep.command(row).split()[2:]
                overrides = [o for o in overrides if o != "-m" and not o.startswith("seed=")]
                cfg = compose_train(overrides)
                for key, value in zip(sweep.keys, row.values, strict=True):
                    if key not in ("experiment", "loss", "model"):
                        assert str(_select(cfg, key)) == str(value) or float(
                            _select(cfg, key)
                        ) == float(value), (sweep.id, key)


def test_every_multirun_command_is_valid_hydra_override_syntax(tmp_path):
    # A row of several keys runs in a folder named after them ("batch_size=64_lr=1e-1_..."),
    # which Hydra's grammar takes only quoted; every command line must parse as train.py gets it.
    runs = tmp_path / "it's runs"
    settings = Settings(runs=runs, results=tmp_path, quick=False, seeds=None, launcher="joblib",
                        extra=["torch_threads=1"], data_dir=tmp_path, cifar_dir=None)  # fmt: skip
    parser = OverridesParser.create()
    for report in load_reports(ROOT / "reproduction" / "reports", REPORTS):
        for sweep in report.sweeps:
            groups = [sweep.rows] if len(sweep.keys) == 1 else [[row] for row in sweep.rows]
            for rows in groups:
                folder = multirun_folder(rows, settings)
                command = multirun_command(rows, 3, settings, folder)
                parsed = parser.parse_overrides(command[3:])
                (where,) = [o for o in parsed if o.key_or_group == "hydra.sweep.dir"]
                assert where.value() == str(folder), (sweep.id, rows[0].id)


def test_a_gap_to_the_report_is_measured_against_the_seeds_spread():
    row = next(
        row
        for sweep in load_reports(ROOT / "reproduction" / "reports", ["000"])[0].sweeps
        for row in sweep.rows
        if row.setting == "weight decay 1e-1"  # reported 63.94, printed 63.35
    )
    seeds = Measured([64.0, 64.2, 63.9], [{}] * 3)  # within 0.5 of one figure: nothing to say
    assert gap(row, seeds) is None
    seeds = Measured([65.69, 64.16, 64.77], [{}] * 3)
    text, explained = gap(row, seeds)
    assert explained and text == (
        "0.93 points over the report (63.94), 1.2 std of the seeds: within their spread; 1.52 "
        "points over its printed log (63.35), 2.0 std of the seeds: within their spread (its 3 "
        "seeds here span 64.16-65.69, std 0.77)."
    )
    text, explained = gap(row, Measured([66.0, 66.1, 66.2], [{}] * 3))
    assert not explained and "beyond their spread" in text
    text, explained = gap(row, Measured([66.0, 66.0], [{}] * 2))  # seeds that agree: std 0
    assert not explained and "(63.94), over 100 std of the seeds: beyond their spread" in text
    one = ("2.06 points over the report; one seed here.", False)
    assert gap(row, Measured([66.0], [{}])) == one
    assert gap(row, Measured([66.0], [{"quick": True}])) is None  # a shortened run says nothing


def test_sweep_picks_sweeps_by_id_and_refuses_unknown_ones():
    reports = load_reports(ROOT / "reproduction" / "reports", ["001", "004"])
    (picked,) = only_sweeps(reports, ["lenet5_any_batch1"])
    assert picked.number == "001" and [s.id for s in picked.sweeps] == ["lenet5_any_batch1"]
    sentence = "--sweep sgd_grid: no such sweep in report.s. 001 004; use one of adam_nll, lenet5_"
    with pytest.raises(ReproduceError, match=sentence):
        only_sweeps(load_reports(ROOT / "reproduction" / "reports", ["001", "004"]), ["sgd_grid"])


def _select(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


@pytest.mark.slow
def test_quick_suite_of_report_000_runs_writes_its_table_and_figures_and_resumes(
    data_dir, tmp_path
):
    runs = tmp_path / "runs"
    command = [
        sys.executable, "-m", "lightning_models.reproduce", "--quick", "--report", "000",
        "--data-dir", str(data_dir), "--runs", str(runs), "--", "data.verify_checksums=false",
    ]  # fmt: skip
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    document = (runs / "REPRODUCTION.md").read_text()
    report = load_reports(ROOT / "reproduction" / "reports", ["000"])[0]
    lines = document.splitlines()
    table_rows = [line for line in lines if line.startswith("| ") and "---" not in line]
    for sweep in report.sweeps:
        for row in sweep.rows:
            line = next(line for line in table_rows if line.startswith(f"| {row.setting} "))
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            assert "(shortened: --quick)" in cells[0]
            match = re.fullmatch(r"(\d+\.\d\d) \(n=1\)(, 1 diverged)?", cells[2])
            assert match, cells
            assert 0 <= float(match.group(1)) <= 100
            assert cells[3] == "1"  # epochs
            result = json.loads(
                (runs / "results" / "000" / sweep.id / f"{row.id}-seed0.json").read_text()
            )
            assert result["quick"] and result["status"] in ("ok", "diverged")
            assert float(match.group(1)) == pytest.approx(100 * result["test_acc"], abs=0.006)
            assert len(result["curves"]["train/loss"]) == 1
    assert "Every row is shortened" in document
    # each row's experiment and setting really ran: the lr row's job has its lr
    lr_job = json.loads((runs / "000" / "lr" / "3" / "metrics.json").read_text())
    assert lr_job["status"] in ("ok", "diverged")
    saved = (runs / "000" / "lr" / "3" / ".hydra" / "overrides.yaml").read_text()
    assert "optimizer.lr=0.01" in saved and "seed=0" in saved  # row 3 (lr 1e-2) of seed 0

    figures = sorted((runs / "figures").glob("*.png"))
    names = {p.name for p in figures}
    assert {"000_lr_accuracy.png", "000_lr_curves.png", "000_batch_accuracy.png"} <= names
    for path in figures:
        with Image.open(path) as picture:
            picture.load()
            assert picture.size[0] > 300 and picture.size[1] > 200
            assert np.asarray(picture.convert("L")).std() > 5  # not a blank canvas
        assert f"]({'figures/' + path.name})" in document

    # Again: nothing left to run. Then a job killed after its last checkpoint (no metrics.json,
    # no result) is resumed from its own last.ckpt, and only that one runs.
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert again.stdout.count(": done") == len(report.sweeps)
    job = runs / "000" / "wd" / "1"
    (job / "metrics.json").unlink()
    (runs / "results" / "000" / "wd" / "weight_decay=1e-4-seed0.json").unlink()
    assert (job / "checkpoints" / "last.ckpt").is_file()
    third = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0
    assert "000/wd: 1 job(s) to run" in third.stdout
    log = (runs / "000" / "wd" / "reproduce.log").read_text()
    last = job / "checkpoints" / "last.ckpt"
    assert f"existing_run=continue: resuming from its own {last}" in log
    assert log.count("finished already; not run again") == 4  # the other jobs of the sweep
    assert (runs / "results" / "000" / "wd" / "weight_decay=1e-4-seed0.json").is_file()


def test_a_cifar10_jpeg_folder_becomes_cifar10_batches_the_datamodule_reads(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar10-jpeg"
    pixels = {}
    for split, per_class in (("train", 3), ("test", 2)):
        for label, name in enumerate(CIFAR10_CLASSES):
            (folder / split / name).mkdir(parents=True)
            for i in range(per_class):
                image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                path = folder / split / name / f"{i:04d}.jpg"
                Image.fromarray(image).save(path, quality=75)
                with Image.open(path) as decoded:
                    pixels[(split, name, i)] = (np.asarray(decoded.convert("RGB")), label)
    batches = write_batches_from_folder(folder, tmp_path / "out")
    assert sorted(p.name for p in batches.iterdir()) == sorted(
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    )
    data = CIFAR10DataModule(
        str(tmp_path / "out"), batch_size=8, val_size=0, verify_checksums=False, download=False
    )
    data.prepare_data()
    data.setup("fit")
    data.setup("test")
    train, test = data.data_train, data.data_test
    assert len(train) == 30 and len(test) == 20
    assert train.classes == list(CIFAR10_CLASSES)
    # the same pixels and labels as PIL decodes from the JPEG files, spread over the batches
    for split, dataset in (("train", train), ("test", test)):
        expected = sorted((a.tobytes(), y) for (s, _, _), (a, y) in pixels.items() if s == split)
        found = sorted((dataset.data[k].tobytes(), dataset.targets[k]) for k in range(len(dataset)))
        assert found == expected
    assert train.targets != sorted(train.targets)  # not sorted by class, as the originals


def test_unshuffled_training_batches_keep_the_files_order_every_epoch(train_cfg):
    data = InMemoryImages(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), torch.arange(10))
    make = BatchMaker([0.0], [1.0], 1)
    for shuffle in (False, True):
        loader = ShuffledBatches(data, 4, make, seed=0, shuffle=shuffle)
        epochs = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            epochs.append(torch.cat([y for _, y in loader]).tolist())
        assert (epochs == [list(range(10))] * 2) is not shuffle
    for fast in ("true", "false"):
        cfg = train_cfg("data=mnist", "data.shuffle=false", f"data.fast={fast}", "data.val_size=0")
        from hydra.utils import instantiate

        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")
        labels = torch.cat([y for _, y in datamodule.train_dataloader()])
        assert labels.tolist() == [int(t) for t in datamodule.data_train.targets]


def test_report_003s_three_convnets():
    torch.manual_seed(0)
    module = ThreeLayerConvNet(3, 32, 10)
    barebones = ThreeLayerConvNet(3, 32, 10, zero_bias=True)
    sequential = ThreeLayerConvNet(3, 32, 10, relu_after_conv1=False, kaiming=False)
    for net in (module, barebones, sequential):
        assert sum(p.numel() for p in net.parameters()) == 170_906
    assert all(not layer.bias.any() for layer in (barebones.conv1, barebones.conv2, barebones.fc))
    assert module.conv1.bias.abs().sum() > 0
    # Kaiming normal (fan_in, gain sqrt 2) against PyTorch's default uniform init
    fan_in = 3 * 5 * 5
    assert module.conv1.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)
    assert sequential.conv1.weight.abs().max().item() <= (1 / fan_in) ** 0.5 + 1e-6
    # no ReLU between the convolutions: negative first-layer outputs reach the second one
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = sequential.fc(sequential.relu(sequential.conv2(sequential.conv1(x))).flatten(1))
        assert torch.allclose(sequential(x), expected)


@pytest.mark.slow
def test_test_loss_each_epoch_is_logged_and_changes_no_weight(data_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.helpers import FAST
    from train import train

    composed = compose_train(["callbacks=[default,test_curve]"])
    assert composed.callbacks.test_curve._target_.endswith("TestLossEachEpoch")
    states = {}
    for name, extra in (("with", ["callbacks=[default,test_curve]"]), ("without", [])):
        out = tmp_path / name
        cfg = compose_train(
            [f"paths.data_dir={data_dir}", f"paths.output_dir={out}", *FAST, *extra,
             "model=fcn", "trainer.max_epochs=2", "trainer.deterministic=true"]
        )  # fmt: skip
        train(cfg)
        states[name] = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
        if name == "with":
            events = EventAccumulator(str(out / "tensorboard"))
            events.Reload()
            losses = events.Scalars("test_curve/loss")
            accs = events.Scalars("test_curve/acc")
            assert len(losses) == len(accs) == 2  # one point per epoch
            assert all(0 < e.value < 10 for e in losses) and all(0 <= e.value <= 1 for e in accs)
    for key, value in states["with"]["state_dict"].items():
        assert torch.equal(value, states["without"]["state_dict"][key]), key
