"""The TensorBoard callbacks (epoch timer, custom-scalars layout, test figures) and the pictures
they draw: rendering functions on their own, then a real run read back with TensorBoard's reader."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.util import tensor_util
from torchvision import transforms

from lightning_models import LabError
from lightning_models.build import instantiate_node as build
from lightning_models.callbacks import (
    EpochTimer,
    TensorBoardLayout,
    TestFigures,
    class_tags,
    displayable,
    first_tensor,
    tag_name,
)
from lightning_models.figures import (
    GLUE,
    confusion_matrix_image,
    font,
    labelled_grid,
    printable,
    shade,
    text_image,
)
from tests.helpers import FAST, compose_train
from train import train

FASHION = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def colours(image: np.ndarray) -> set[tuple[int, ...]]:
    return set(map(tuple, image.reshape(-1, 3).tolist()))


def dark_pixels(image: np.ndarray) -> int:
    return int((image.max(axis=-1) < 128).sum())


# --- confusion matrix --------------------------------------------------------------------------


def test_confusion_matrix_image_is_rgb_uint8_and_readable_for_ten_classes():
    matrix = np.full((10, 10), 3) + np.diag(np.arange(10) * 100)
    image = confusion_matrix_image(matrix, FASHION)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    # Room for 10 cells of a three-digit count each, plus the names on both axes.
    assert 300 <= image.shape[0] <= 1200 and 300 <= image.shape[1] <= 1200
    assert dark_pixels(image) > 1000  # counts, names, axis titles


def test_confusion_matrix_cells_are_shaded_by_their_share_of_the_row():
    # Row shares 0.9/0.1 and 0.5/0.5; the second row is 10 times larger, which must not matter.
    image = confusion_matrix_image(np.array([[9, 1], [50, 50]]), ["a", "b"])
    found = colours(image)
    assert {shade(0.9), shade(0.1), shade(0.5)} <= found
    assert len({shade(0.9), shade(0.1), shade(0.5), shade(0.0)}) == 4


def test_confusion_matrix_of_an_absent_class_has_white_cells():
    image = confusion_matrix_image(np.array([[0, 0], [2, 2]]), ["absent", "present"])
    assert shade(0.5) in colours(image) and shade(0.0) == (255, 255, 255)


def test_confusion_matrix_text_shows_in_the_cells():
    # The same light shading (a third of each row), with longer counts: more black text.
    ones = confusion_matrix_image(np.ones((3, 3), dtype=int), ["a", "b", "c"])
    many = confusion_matrix_image(np.full((3, 3), 88888), ["a", "b", "c"])
    assert ones.shape == many.shape and dark_pixels(many) > dark_pixels(ones) + 9 * 20


def test_confusion_matrix_needs_one_name_per_class():
    with pytest.raises(ValueError, match="class names"):
        confusion_matrix_image(np.eye(3, dtype=int), ["a", "b"])


# --- labelled grids ----------------------------------------------------------------------------


def test_grid_upscales_small_grey_images_and_keeps_them_grey():
    images = torch.rand(5, 1, 28, 28)
    grid = labelled_grid(images, [f"digit {i}" for i in range(5)], columns=3)
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    # Two rows of three tiles of (at least) 3 x 28 pixels.
    assert grid.shape[1] >= 3 * 84 and grid.shape[0] >= 2 * 84
    assert (grid[..., 0] == grid[..., 1]).all() and (grid[..., 1] == grid[..., 2]).all()


def test_grid_keeps_colour_and_accepts_channels_last_uint8():
    images = torch.rand(4, 3, 32, 32)
    first = labelled_grid(images, list("abcd"), columns=4)
    as_uint8 = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(first, labelled_grid(as_uint8, list("abcd"), columns=4))
    assert not (first[..., 0] == first[..., 1]).all()


def test_grid_writes_the_captions_under_the_images():
    white = np.ones((3, 28, 28, 1))  # no dark pixel but the text
    assert dark_pixels(labelled_grid(white, ["", "", ""], columns=3)) == 0
    grid = labelled_grid(white, ["Ankle boot", "Bag", "Coat"], columns=3)
    assert dark_pixels(grid) > 30
    rows = np.nonzero((grid.max(axis=-1) < 128).any(axis=1))[0]
    assert rows.min() >= 84  # below the 3 x 28 pixel images


def test_long_captions_wrap_and_glued_words_stay_together():
    white = np.ones((2, 28, 28, 1))
    short = labelled_grid(white, ["Bag", "Coat"], columns=2)
    long = labelled_grid(white, [f"T-shirt/top → Ankle{GLUE}boot"] * 2, columns=2)
    assert long.shape[0] > short.shape[0]  # two lines: "T-shirt/top →", "Ankle boot"


def test_large_images_are_shrunk():
    grid = labelled_grid(np.zeros((1, 400, 300, 3), dtype=np.uint8), ["x"], columns=1)
    assert grid.shape[0] < 220 and grid.shape[1] < 200


def test_grid_needs_one_caption_per_image():
    with pytest.raises(ValueError, match="captions"):
        labelled_grid(np.zeros((2, 8, 8, 1)), ["one"])


def test_text_the_font_cannot_draw_is_replaced():
    assert printable("a → b", font(12)) == "a -> b"  # PIL's bundled font has no arrow
    assert printable(f"a{GLUE}b", font(12)) == "a b"
    assert dark_pixels(text_image("no misclassified test images")) > 20


# --- callbacks in pieces -----------------------------------------------------------------------


def test_class_names_become_tag_segments():
    assert tag_name("T-shirt/top") == "T_shirt_top" and tag_name("0 - zero") == "0_zero"
    assert class_tags(["a b", "a/b", "!!"]) == ["a_b", "a_b_1", "2"]


def test_displayable_undoes_normalisation():
    normalize = transforms.Normalize((0.5,), (0.25,))
    images = torch.rand(2, 1, 4, 4)
    back = displayable(normalize(images), normalize)
    assert back.dtype == torch.uint8 and back.device.type == "cpu"
    assert torch.equal(back, (images * 255).round().to(torch.uint8))
    assert displayable(torch.tensor([[[[-3.0, 3.0]]]])).flatten().tolist() == [0, 255]


def test_first_tensor_of_a_batch():
    x = torch.zeros(5, 1, 2, 2)
    assert first_tensor((x, torch.zeros(5))) is x and first_tensor({"image": x}) is x
    assert first_tensor([[], [x]]) is x and first_tensor("text") is None


@pytest.mark.parametrize("arg", ["max_images", "max_misclassified", "columns"])
def test_test_figures_rejects_bad_arguments(arg):
    with pytest.raises(LabError, match=f"test_figures.{arg}=-1"):
        TestFigures(**{arg: -1})


def feed(callback: TestFigures, trainer, batches: int = 10, size: int = 32) -> None:
    """Test batches of distinct images (two pixels spell the image's number in base 256), all
    predicted right except every fourth one."""
    callback.on_test_epoch_start(trainer, None)
    for b in range(batches):
        numbers = torch.arange(b * size, (b + 1) * size)
        images = torch.zeros(size, 1, 2, 2)
        images[:, 0, 0, 0], images[:, 0, 0, 1] = (numbers % 256) / 255, (numbers // 256) / 255
        targets = numbers % 10
        preds = torch.where(numbers % 4 == 0, (targets + 1) % 10, targets)
        callback.on_test_batch_end(trainer, None, {"preds": preds}, (images, targets), b)


def fake_trainer(tmp_path, loggers=True):
    return SimpleNamespace(
        loggers=[TensorBoardLogger(str(tmp_path))] if loggers else [], datamodule=None
    )


def kept_numbers(images: torch.Tensor) -> list[int]:
    low, high = images[:, 0, 0, 0].long(), images[:, 0, 0, 1].long()
    return (low + 256 * high).tolist()


def test_sample_of_correct_images_is_capped_seeded_and_spread_over_the_test_set(tmp_path):
    trainer = fake_trainer(tmp_path)
    samples = []
    for seed in (0, 0, 1):
        callback = TestFigures(max_images=16, seed=seed)
        feed(callback, trainer)
        assert callback._correct.shape == (16, 1, 2, 2)
        samples.append(sorted(kept_numbers(callback._correct)))
    assert samples[0] == samples[1] != samples[2]
    assert all(n % 4 != 0 for n in samples[0])  # only correct ones
    assert max(samples[0]) > 160  # not just the first batches


def test_misclassified_are_the_first_up_to_the_cap(tmp_path):
    callback = TestFigures(max_misclassified=5)
    feed(callback, fake_trainer(tmp_path))
    assert kept_numbers(torch.cat(callback._wrong)) == [0, 4, 8, 12, 16]
    assert callback._wrong_labels[0] == (0, 1)


def test_test_figures_collect_nothing_without_tensorboard(tmp_path):
    callback = TestFigures()
    trainer = fake_trainer(tmp_path, loggers=False)
    feed(callback, trainer)
    callback.on_test_end(trainer, None)
    assert not callback._preds and not callback._wrong
    TensorBoardLayout().on_fit_start(SimpleNamespace(loggers=[], is_global_zero=True), None)


def test_each_callback_config_instantiates():
    cfg = compose_train(["callbacks=[epoch_timer,tensorboard_layout,test_figures]"])
    built = {type(build(node)) for node in cfg.callbacks.values()}
    assert built == {EpochTimer, TensorBoardLayout, TestFigures}
    assert build(cfg.callbacks.test_figures).max_images == 64


# --- end to end --------------------------------------------------------------------------------

CALLBACKS = [
    "++callbacks.epoch_timer={_target_: lightning_models.callbacks.EpochTimer}",
    "++callbacks.tensorboard_layout={_target_: lightning_models.callbacks.TensorBoardLayout}",
    "++callbacks.test_figures={_target_: lightning_models.callbacks.TestFigures, max_images: 16}",
]


def decoded(events: EventAccumulator, tag: str) -> Image.Image:
    (event,) = events.Images(tag)
    return Image.open(io.BytesIO(event.encoded_image_string))


@pytest.fixture(scope="module")
def run_events(data_dir, tmp_path_factory):
    """One short run on generated MNIST with the three callbacks, its event files read back."""
    out = tmp_path_factory.mktemp("run")
    overrides = [f"paths.data_dir={data_dir}", f"paths.output_dir={out}", *FAST]
    overrides += ["data=mnist", "trainer.max_epochs=2", "trainer.limit_test_batches=1.0"]
    metrics = train(compose_train([*overrides, *CALLBACKS]))
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    return metrics, events


@pytest.mark.slow
def test_run_logs_epoch_times(run_events):
    metrics, events = run_events
    for tag in ("time/epoch_s", "time/img_per_s"):
        values = [e.value for e in events.Scalars(tag)]
        assert len(values) == 2 and all(v > 0 for v in values)
    assert "time/epoch_s" in metrics


def test_run_logs_test_scalars_and_table(run_events):
    metrics, events = run_events
    tags = events.Tags()
    per_class = [t for t in tags["scalars"] if t.startswith("test/acc_per_class/")]
    assert len(per_class) == 10 and "test/acc_per_class/0_zero" in per_class
    (f1,) = events.Scalars("test/f1_macro")
    assert 0.0 <= f1.value <= 1.0
    assert "test/acc_per_class/text_summary" in tags["tensors"]


def test_run_logs_test_images(run_events):
    _, events = run_events
    assert {"test/confusion_matrix", "test/correct", "test/misclassified"} <= set(
        events.Tags()["images"]
    )
    matrix = decoded(events, "test/confusion_matrix")
    assert min(matrix.size) >= 300 and matrix.mode == "RGB"
    correct = decoded(events, "test/correct")
    assert correct.width >= 8 * 84 and correct.height >= 2 * 84  # 16 images, 8 a row
    wrong = decoded(events, "test/misclassified")
    assert wrong.width >= 84 and wrong.height >= 84


def test_run_writes_the_custom_scalars_layout(run_events):
    _, events = run_events
    assert "custom_scalars__config__" in events.PluginTagToContent("custom_scalars")
    (event,) = events.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(tensor_util.make_ndarray(event.tensor_proto).item())
    charts = {c.title: list(c.multiline.tag) for c in layout.category[0].chart}
    assert charts["loss"] == ["^train/loss$", "^val/loss$"]
    assert charts["accuracy"] == ["^train/acc$", "^val/acc$"]
    assert charts["learning rate"] == ["^lr-.*"]


def test_macro_f1_of_the_matrix_equals_torchmetrics():
    from torchmetrics.functional.classification import (
        multiclass_confusion_matrix,
        multiclass_f1_score,
    )

    from lightning_models.callbacks import macro_f1

    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 5, (200,), generator=generator)
    preds = torch.randint(0, 4, (200,), generator=generator)  # class 4 is never predicted
    matrix = multiclass_confusion_matrix(preds, targets, num_classes=5).numpy()
    expected = float(multiclass_f1_score(preds, targets, num_classes=5, average="macro"))
    assert macro_f1(matrix) == pytest.approx(expected, abs=1e-6)
