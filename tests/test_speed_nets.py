"""The speed-record nets: parameter counts worked out from its layer list, shapes that
follow the data, a forward/backward pass, its refusals, and the record configs that build it."""

import pytest
import torch
import torch.nn.functional as F

from lightning_models import ImageClassifier, LabError
from lightning_models.build import instantiate_node as build
from lightning_models.nets import ConvGroupsNet, StridedConvNet
from tests.helpers import compose_train
from train import train


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv_bn(c_in: int, c_out: int, k: int) -> int:
    """A bias-free k x k conv followed by BatchNorm (weight and bias)."""
    return c_in * c_out * k * k + 2 * c_out


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


# widths 16, 32, 64 on 1x28x28: 28 -s2-> 14 -s2-> 7 -s2-> 4
STRIDED_MAX_1x28x28 = conv_bn(1, 16, 5) + conv_bn(16, 32, 3) + conv_bn(32, 64, 3) + linear(64, 10)
STRIDED_FLAT_1x28x28 = (
    conv_bn(1, 16, 5) + conv_bn(16, 32, 3) + conv_bn(32, 64, 3) + linear(64 * 4 * 4, 10)
)


@pytest.mark.parametrize(
    ("head", "expected"), [("max", STRIDED_MAX_1x28x28), ("flatten", STRIDED_FLAT_1x28x28)]
)
def test_parameter_counts_follow_the_layer_list(head, expected):
    assert n_params(StridedConvNet(1, 28, 10, head=head)) == expected


def test_documented_count_matches_the_arithmetic():
    assert STRIDED_MAX_1x28x28 == 24_314
    assert STRIDED_FLAT_1x28x28 == 33_914


@pytest.mark.parametrize("head", ["max", "flatten"])
@pytest.mark.parametrize(("channels", "size", "classes"), [(1, 28, 10), (3, 32, 10), (3, 64, 15)])
def test_shapes_follow_the_data_and_gradients_flow(head, channels, size, classes):
    net = StridedConvNet(channels, size, classes, widths=(8, 16), stem_kernel=3, head=head)
    x = torch.randn(4, channels, size, size)
    out = net(x)
    assert out.shape == (4, classes)
    F.cross_entropy(out, torch.randint(0, classes, (4,))).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize(
    "kwargs", [{"widths": []}, {"widths": [16, 0]}, {"stem_kernel": 4}, {"head": "avg"}]
)
def test_refuses_bad_settings_in_a_sentence(kwargs):
    with pytest.raises(LabError, match="model.net"):
        StridedConvNet(1, 28, 10, **kwargs)


def test_model_config_builds_the_net():
    cfg = compose_train(["model=strided_convnet", "data=mnist"])
    net = build(cfg.model.net)
    assert isinstance(net, StridedConvNet)
    assert n_params(net) == STRIDED_MAX_1x28x28


@pytest.mark.parametrize(
    ("experiment", "shape"),
    [
        ("mnist_record", (1, 28, 28)),
        ("fashion_record", (1, 28, 28)),
        ("cifar10_record", (3, 32, 32)),
    ],
)
def test_record_configs_compose_without_validation(experiment, shape):
    cfg = compose_train([f"experiment={experiment}"])
    assert cfg.data.val_size == 0 and cfg.data.fast is True
    net = build(cfg.model.net)
    assert net(torch.zeros(2, *shape)).shape == (2, 10)


def conv_groups_params(widths: list[int], c_in: int = 3, classes: int = 10) -> int:
    """Stem conv + BN, per group two convs + two BNs, a bias-free Linear layer."""
    total = conv_bn(c_in, widths[0], 3)
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        total += conv_bn(a, b, 3) + conv_bn(b, b, 3)
    return total + widths[-1] * classes


def test_conv_groups_parameter_count_follows_the_layer_list():
    assert conv_groups_params([32, 64, 128, 128]) == 574_880  # the docstring's figure
    assert n_params(ConvGroupsNet(3, 32, 10)) == 574_880
    assert n_params(ConvGroupsNet(1, 28, 7, widths=[8, 16])) == conv_groups_params([8, 16], 1, 7)


@pytest.mark.parametrize(("channels", "size", "classes"), [(3, 32, 10), (1, 28, 10), (3, 64, 5)])
def test_conv_groups_shapes_follow_the_data_and_logits_are_scaled(channels, size, classes):
    net = ConvGroupsNet(channels, size, classes, widths=[8, 16, 16], logit_scale=0.5)
    x = torch.randn(4, channels, size, size)
    out = net(x)
    assert out.shape == (4, classes)
    torch.testing.assert_close(out, net.classifier(net.features(x)) * 0.5)
    F.cross_entropy(out, torch.randint(0, classes, (4,))).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("kwargs", [{"widths": [16]}, {"widths": [16, 0]}, {"widths": [8] * 7}])
def test_conv_groups_refuses_bad_widths_in_a_sentence(kwargs):
    with pytest.raises(LabError, match="model.net.widths"):
        ConvGroupsNet(3, 32, 10, **kwargs)


def test_channels_last_gives_the_same_outputs_and_state_dict():
    torch.manual_seed(0)
    plain = ImageClassifier(ConvGroupsNet(3, 32, 10, widths=[8, 16]), optimizer=torch.optim.SGD)
    torch.manual_seed(0)
    last = ImageClassifier(
        ConvGroupsNet(3, 32, 10, widths=[8, 16]), optimizer=torch.optim.SGD, channels_last=True
    )
    conv = last.net.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    for a, b in zip(plain.state_dict().values(), last.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    x = torch.randn(4, 3, 32, 32)
    plain.eval(), last.eval()
    torch.testing.assert_close(plain(x), last(x), atol=1e-5, rtol=1e-4)
    # a checkpoint of either loads into the other
    plain.load_state_dict(last.state_dict())


def test_whitening_stem_decorrelates_the_patches_it_was_fitted_to():
    net = ConvGroupsNet(3, 32, 10, widths=[24, 16, 16], stem="whiten2x2")
    stem = net.features[0]
    assert not stem.weight.requires_grad and stem.bias.requires_grad  # only its bias trains
    torch.manual_seed(0)
    x = torch.randn(32, 3, 32, 32) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    x[:, 1] += x[:, 0]  # correlated channels
    x = x + x.roll(1, dims=-1)  # and correlated neighbours
    net.fit_to_batch(x)
    assert bool(stem.fitted)
    filters = stem.weight[:12]
    torch.testing.assert_close(stem.weight[12:], -filters)
    # On the patches it saw, the first 12 outputs have unit variance and are uncorrelated
    # (up to the eps added to each eigenvalue).
    out = F.conv2d(x, filters).permute(0, 2, 3, 1).reshape(-1, 12)
    torch.testing.assert_close(out.T @ out / len(out), torch.eye(12), atol=5e-3, rtol=0)
    assert net(x).shape == (32, 10) and (31 // 2 // 2) == 7
    # fitted once: a second batch (or a resumed run) leaves it as it is
    before = stem.weight.clone()
    net.fit_to_batch(torch.randn(8, 3, 32, 32))
    torch.testing.assert_close(stem.weight, before)
    # a mean over processes (DDP) is applied to the covariance: a scaled one scales the filters
    twice = ConvGroupsNet(3, 32, 10, widths=[24, 16, 16], stem="whiten2x2")
    twice.fit_to_batch(x, mean=lambda covariance: covariance * 4)
    torch.testing.assert_close(twice.features[0].weight, before / 2, rtol=1e-3, atol=1e-3)
    plain = ConvGroupsNet(3, 32, 10, widths=[8, 16])
    state = {k: v.clone() for k, v in plain.state_dict().items()}
    plain.fit_to_batch(x)  # nothing to fit
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"stem": "whiten3x3"}, "model.net.stem='whiten3x3' is not a stem"),
        ({"stem": "whiten2x2", "widths": [32, 64]}, "make the first width 24"),
        ({"stem": "whiten2x2", "widths": [24] + [8] * 5}, "too many for 32x32 images"),
    ],
)
def test_whitening_stem_refuses_bad_settings_in_a_sentence(kwargs, words):
    with pytest.raises(LabError, match=words):
        ConvGroupsNet(3, 32, 10, **kwargs)


@pytest.mark.slow
def test_whitening_stem_is_fitted_by_the_first_batch_and_kept_on_resume(train_cfg, tmp_path):
    settings = [
        "experiment=cifar10_record",
        "model.net.stem=whiten2x2",
        "model.net.widths=[24,8,8]",
        "data.val_size=0",
        "scheduler=none",  # a one-cycle schedule could not run on past its first run's length
        "~callbacks.test_figures",
    ]
    train(train_cfg(*settings))
    last = tmp_path / "checkpoints" / "last.ckpt"
    first = torch.load(last, weights_only=True)["state_dict"]
    stem = first["net.features.0.weight"]
    assert bool(first["net.features.0.fitted"])
    # the fitted filters: 12 orthogonal rows (eigenvectors over square roots of eigenvalues)
    rows = stem[:12].reshape(12, -1).double()
    gram = rows @ rows.T
    assert (gram - torch.diag(gram.diagonal())).abs().max() < 1e-4 * gram.diagonal().max()
    # resumed for a second epoch: trained on, the stem's filters exactly as they were
    train(train_cfg(*settings, "trainer.max_epochs=2", f"ckpt_path={last}"))
    second = torch.load(last, weights_only=True)["state_dict"]
    torch.testing.assert_close(second["net.features.0.weight"], stem, rtol=0, atol=0)
    assert not torch.equal(second["net.features.2.0.weight"], first["net.features.2.0.weight"])


def test_step_time_benchmark_prints_one_row_per_variant_and_precision(capsys):
    from benchmarks import step_time

    variants = [
        "3x3:model.net.stem=conv3x3 model.net.widths=[8,16]",
        "whiten:model.net.widths=[24,8]",
    ]
    argv = ["--experiment", "cifar10_record", "--batch-size", "8", "--steps", "2", "--rounds", "1"]
    argv += ["--precision", "32-true,bf16-mixed", *(a for v in variants for a in ("--variant", v))]
    assert step_time.main(argv) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()[2:]]
    assert [(r[0].strip(), r[1].strip(), r[2].strip()) for r in rows] == [
        ("3x3", "32-true", "8"), ("3x3", "bf16-mixed", "8"),
        ("whiten", "32-true", "8"), ("whiten", "bf16-mixed", "8"),
    ]  # fmt: skip
    assert float(rows[0][5]) == 1.0 and all(float(r[3]) > 0 for r in rows)


def test_step_time_benchmark_refuses_a_bad_override_in_a_sentence(capsys):
    from benchmarks import step_time

    argv = ["--experiment", "cifar10_record", "--variant", "bad:model.net.stem=whiten3x3"]
    assert step_time.main(argv) == 2
    err = capsys.readouterr().err
    assert "model.net.stem='whiten3x3' is not a stem" in err and "Traceback" not in err
