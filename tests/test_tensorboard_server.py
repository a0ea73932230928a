"""`tensorboard --logdir logs` serves a run's scalars and images, fetched over HTTP on localhost."""

import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from train import train


@pytest.fixture
def tensorboard(tmp_path):
    """Start TensorBoard on a free localhost port over ``tmp_path/logs``; yield its base URL."""
    logdir = tmp_path / "logs"
    logdir.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", f"--logdir={logdir}", "--host=127.0.0.1",
         "--port=0", "--reload_interval=1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            url = found.group(1) if found else None
        assert url, "TensorBoard did not say where it serves"
        yield logdir, url
    finally:
        server.terminate()
        server.wait(timeout=30)


def fetch(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def wait_for_tags(url: str, plugin: str, run: str, tag: str, timeout: float = 60) -> dict:
    """The plugin's tags once TensorBoard's background reload has picked up ``tag`` of ``run``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tags = json.loads(fetch(f"{url}/data/plugin/{plugin}/tags"))
        if tag in tags.get(run, {}):
            return tags[run]
        time.sleep(1)
    raise AssertionError(f"{plugin} tag {tag} of run {run} never appeared: {tags}")


@pytest.mark.slow
def test_tensorboard_serves_scalars_and_images_of_a_run(train_cfg, tensorboard):
    logdir, url = tensorboard
    run_dir = logdir / "train" / "runs" / "one"
    train(train_cfg(f"paths.output_dir={run_dir}", "data=mnist", "trainer.max_epochs=2"))

    run = "train/runs/one/tensorboard"
    tags = wait_for_tags(url, "scalars", run, "test/acc")
    assert {"train/loss", "val/acc", "test/acc", "time/epoch_s"} <= set(tags)
    query = urllib.parse.urlencode({"run": run, "tag": "val/acc"})
    points = json.loads(fetch(f"{url}/data/plugin/scalars/scalars?{query}"))
    assert len(points) == 2 and all(0 <= value <= 1 for _, _, value in points)

    images = wait_for_tags(url, "images", run, "test/misclassified")
    assert {"test/confusion_matrix", "test/correct", "test/misclassified"} <= set(images)
    query = urllib.parse.urlencode({"run": run, "tag": "test/confusion_matrix", "sample": 0})
    (entry,) = json.loads(fetch(f"{url}/data/plugin/images/images?{query}"))
    png = fetch(f"{url}/data/plugin/images/individualImage?{entry['query']}")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
