"""The speed-record nets: parameter counts worked out from its layer list, shapes that
follow the data, a forward/backward pass, its refusals, and the record configs that build it."""

import pytest
import torch
import torch.nn.functional as F

from lightning_models import ImageClassifier, LabError
from lightning_models.build import instantiate_node as build
from lightning_models.nets import ConvGroupsNet, StridedConvNet
from tests.helpers import compose_train


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
