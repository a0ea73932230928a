"""Architectures of reports 001–003: parameter counts worked out from SPEC.md's layer lists,
shapes that follow the data, fixed-input refusals, report 002's L2 term, report 001's hand-written
softmax regression."""

import pytest
import torch
import torch.nn.functional as F

from lightning_models import LabError
from lightning_models.build import instantiate_node as build
from lightning_models.nets import (
    CifarCNN,
    InputShapeError,
    LeNet5Any,
    MLPDeep,
    ResNetSmall,
    SoftmaxRegression,
    ThreeLayerConvNet,
    TwoLayerFC,
)
from tests.helpers import compose_train


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def conv(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def bn(c: int) -> int:
    return 2 * c


# --- parameter counts on each net's natural input --------------------------------------------

MLP_DEEP_3x32x32 = (
    linear(3 * 32 * 32, 1024)  # 3072*1024 + 1024
    + linear(1024, 512)
    + linear(512, 64)
    + linear(64, 64)
    + linear(64, 32)
    + linear(32, 16)
    + linear(16, 10)
    + bn(1024)
    + bn(512)
    + bn(64)
    + bn(64)
    + bn(32)
    + bn(16)
)
TWO_LAYER_FC_3x32x32 = linear(3 * 32 * 32, 4000) + linear(4000, 10)
THREE_LAYER_CONVNET_3x32x32 = conv(3, 32, 5) + conv(32, 16, 3) + linear(16 * 32 * 32, 10)
CIFAR_CNN_3x32x32 = conv(3, 32, 3) + conv(32, 64, 3) + linear(64 * 8 * 8, 512) + linear(512, 10)
# 28 -conv5-> 24 -pool-> 12 -conv5-> 8 -pool-> 4: 16·4·4 values
LENET5_ANY_1x28x28 = (
    conv(1, 6, 5) + conv(6, 16, 5) + linear(16 * 4 * 4, 120) + linear(120, 84) + linear(84, 10)
)
# 128 -conv5-> 124 -pool-> 62 -conv5-> 58 -pool-> 29: 16·29·29 values
LENET5_ANY_3x128x128_15 = (
    conv(3, 6, 5) + conv(6, 16, 5) + linear(16 * 29 * 29, 120) + linear(120, 84) + linear(84, 15)
)


def basic_block(c_in: int, c_out: int) -> int:
    """Two bias-free 3x3 convs with BatchNorm, plus a 1x1 projection with BatchNorm if needed."""
    body = conv(c_in, c_out, 3, bias=False) + bn(c_out) + conv(c_out, c_out, 3, bias=False)
    body += bn(c_out)
    return body + (conv(c_in, c_out, 1, bias=False) + bn(c_out) if c_in != c_out else 0)


# depth [2, 2, 2], width 16: stem 3→16, stages of 16, 32, 64 channels, GAP, Linear 64→10
RESNET_SMALL_2_2_2_W16 = (
    conv(3, 16, 3, bias=False)
    + bn(16)
    + basic_block(16, 16)
    + basic_block(16, 16)
    + basic_block(16, 32)
    + basic_block(32, 32)
    + basic_block(32, 64)
    + basic_block(64, 64)
    + linear(64, 10)
)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: MLPDeep(3, 32, 10), MLP_DEEP_3x32x32),
        (lambda: TwoLayerFC(3, 32, 10), TWO_LAYER_FC_3x32x32),
        (lambda: ThreeLayerConvNet(3, 32, 10), THREE_LAYER_CONVNET_3x32x32),
        (lambda: CifarCNN(3, 32, 10), CIFAR_CNN_3x32x32),
        (lambda: LeNet5Any(1, 28, 10), LENET5_ANY_1x28x28),
        (lambda: LeNet5Any(3, 128, 15), LENET5_ANY_3x128x128_15),
        (lambda: ResNetSmall(3, 32, 10, depth=[2, 2, 2], width=16), RESNET_SMALL_2_2_2_W16),
        (lambda: ResNetSmall(3, 128, 10), RESNET_SMALL_2_2_2_W16),  # size-independent
        (lambda: SoftmaxRegression(1, 28, 10), linear(28 * 28, 10)),
    ],
    ids=[
        "mlp_deep",
        "two_layer_fc",
        "three_layer_convnet",
        "cifar_cnn",
        "lenet5_any_28",
        "lenet5_any_128",
        "resnet_small",
        "resnet_small_128",
        "softmax_regression",
    ],
)
def test_parameter_counts_follow_the_layer_lists(make, expected):
    assert n_params(make()) == expected


def test_documented_counts_match_the_arithmetic():
    assert MLP_DEEP_3x32x32 == 3_714_746
    assert TWO_LAYER_FC_3x32x32 == 12_332_010
    assert THREE_LAYER_CONVNET_3x32x32 == 170_906
    assert CIFAR_CNN_3x32x32 == 2_122_186
    assert LENET5_ANY_1x28x28 == 44_426
    assert LENET5_ANY_3x128x128_15 == 1_629_151
    assert RESNET_SMALL_2_2_2_W16 == 175_258


# --- output shapes ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [MLPDeep, TwoLayerFC, LeNet5Any, ResNetSmall, SoftmaxRegression])
@pytest.mark.parametrize(
    ("channels", "size", "classes"), [(1, 28, 10), (3, 32, 7), (1, 64, 3), (3, 16, 5)]
)
def test_output_shape_follows_the_data(cls, channels, size, classes):
    net = cls(in_channels=channels, image_size=size, num_classes=classes)
    assert net(torch.randn(4, channels, size, size)).shape == (4, classes)


@pytest.mark.parametrize("cls", [ThreeLayerConvNet, CifarCNN])
@pytest.mark.parametrize("classes", [10, 4])
def test_fixed_input_nets_on_cifar_shape(cls, classes):
    net = cls(in_channels=3, image_size=32, num_classes=classes)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, classes)


def test_lenet5_any_on_scene_size_and_too_small_input():
    assert LeNet5Any(3, 128, 15)(torch.randn(2, 3, 128, 128)).shape == (2, 15)
    with pytest.raises(
        InputShapeError,
        match=r"lenet5_any needs input images of at least 1x16x16, but the data gives 1x12x12",
    ):
        LeNet5Any(1, 12, 10)


@pytest.mark.parametrize(("channels", "size"), [(1, 8), (3, 8), (1, 128), (3, 45)])
def test_resnet_small_any_size_and_depth(channels, size):
    net = ResNetSmall(channels, size, 6, depth=[1, 2, 1, 1], width=8)
    assert net(torch.randn(2, channels, size, size)).shape == (2, 6)


def test_resnet_small_rejects_bad_depth():
    with pytest.raises(LabError, match="resnet_small needs depth"):
        ResNetSmall(3, 32, 10, depth=[2, 0])


# --- fixed-input nets refuse anything but 3x32x32 ---------------------------------------------


@pytest.mark.parametrize(
    ("cls", "name"), [(ThreeLayerConvNet, "three_layer_convnet"), (CifarCNN, "cifar_cnn")]
)
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 28), (1, 32)])
def test_fixed_input_nets_refuse_other_shapes(cls, name, channels, size):
    given = f"{channels}x{size}x{size}"
    with pytest.raises(
        InputShapeError,
        match=rf"^model {name} takes only 3x32x32 input images, but the data gives {given}; "
        r"set data.in_channels=3 data.image_size=32, or pick another model$",
    ):
        cls(in_channels=channels, image_size=size, num_classes=10)


# --- report 002's L2 term ---------------------------------------------------------------------


def test_mlp_deep_layer_list_and_dropout_placement():
    net = MLPDeep(3, 32, 10)
    names = [name for name, _ in net.net.named_children()]
    assert [n for n in names if n.startswith("fc")] == [f"fc{i}" for i in range(1, 8)]
    rates = {name: m.p for name, m in net.net.named_children() if name.startswith("drop")}
    assert rates == {"drop1": 0.6, "drop2": 0.6, "drop3": 0.4, "drop4": 0.4, "drop5": 0.25}
    assert names[names.index("fc6") :] == ["fc6", "bn6", "relu6", "fc7"]


def test_mlp_deep_regularization_equals_hand_computation():
    net = MLPDeep(3, 32, 10, l2_lambda=0.006, l2_layers=["fc1", "fc2", "fc3"])
    squares = sum((getattr(net.net, f"fc{i}").weight ** 2).sum().item() for i in (1, 2, 3))
    expected = 0.006 / (2 * 256) * squares
    reg = net.regularization(256)
    assert reg.shape == ()
    assert reg.item() == pytest.approx(expected, rel=1e-5)
    # biases are not penalised: changing them leaves the term unchanged
    with torch.no_grad():
        net.net.fc1.bias.add_(1.0)
    assert net.regularization(256).item() == pytest.approx(expected, rel=1e-5)
    # it is differentiable and only touches the chosen layers' weights
    reg.backward()
    assert net.net.fc1.weight.grad is not None and net.net.fc4.weight.grad is None


def test_mlp_deep_other_layers_and_lambda_zero():
    net = MLPDeep(3, 32, 10, l2_lambda=0.5, l2_layers=["fc7"])
    expected = 0.5 / (2 * 4) * (net.net.fc7.weight**2).sum().item()
    assert net.regularization(4).item() == pytest.approx(expected, rel=1e-5)
    assert MLPDeep(3, 32, 10, l2_lambda=0.0).regularization(8).item() == 0.0
    assert MLPDeep(3, 32, 10, l2_layers=[]).regularization(8).item() == 0.0


def test_mlp_deep_rejects_unknown_layer_names_and_bad_dropout():
    with pytest.raises(
        LabError,
        match=r"mlp_deep has no layer 'linear1' for l2_layers; "
        r"valid names are fc1, fc2, fc3, fc4, fc5, fc6, fc7",
    ):
        MLPDeep(3, 32, 10, l2_layers=["fc1", "linear1"])
    with pytest.raises(LabError, match="one dropout rate per hidden layer"):
        MLPDeep(3, 32, 10, dropout=[0.5, 0.5])


# --- report 001's softmax regression by hand --------------------------------------------------


def test_softmax_regression_has_no_autograd_parameters():
    net = SoftmaxRegression(1, 28, 10)
    assert net.manual_update is True
    assert all(not p.requires_grad for p in net.parameters())
    assert {name for name, _ in net.named_parameters()} == {"W", "b"}
    assert net.W.shape == (784, 10) and net.b.shape == (10,)


def test_stable_softmax_survives_huge_scores():
    scores = torch.tensor([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0], [1e4, 1e4, 0.0]])
    p = SoftmaxRegression.softmax(scores)
    assert torch.isfinite(p).all()
    torch.testing.assert_close(p.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(p, torch.softmax(scores, dim=1))


def test_hand_gradient_matches_autograd():
    torch.manual_seed(0)
    net = SoftmaxRegression(3, 4, 5, init_std=0.5).double()
    x = torch.randn(7, 3, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 5, (7,))
    loss, dW, db, scores = net.loss_and_gradients(x, y)
    W = net.W.detach().clone().requires_grad_(True)
    b = net.b.detach().clone().requires_grad_(True)
    ref_scores = x.flatten(1) @ W + b
    ref_loss = F.cross_entropy(ref_scores, y)
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(scores, ref_scores.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(dW, W.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(db, b.grad, rtol=0, atol=1e-6)
    assert not loss.requires_grad and not dW.requires_grad


def test_hand_loss_is_finite_for_huge_scores():
    net = SoftmaxRegression(1, 2, 3).double()
    with torch.no_grad():
        net.W.zero_()
        net.b.copy_(torch.tensor([1000.0, -1000.0, 0.0], dtype=torch.float64))
    loss, dW, db, _ = net.loss_and_gradients(
        torch.zeros(2, 1, 2, 2, dtype=torch.float64), torch.tensor([1, 0])
    )
    assert torch.isfinite(loss) and torch.isfinite(dW).all() and torch.isfinite(db).all()
    assert loss.item() == pytest.approx(2000.0 / 2)


def test_manual_steps_lower_the_loss_on_a_separable_batch():
    torch.manual_seed(0)
    net = SoftmaxRegression(1, 2, 2)
    y = torch.arange(8) % 2
    x = torch.zeros(8, 1, 2, 2)
    x[:, 0, 0, 0] = torch.where(y == 0, 1.0, -1.0)  # class decided by one pixel's sign
    x += 0.1 * torch.randn_like(x)
    W0 = net.W.clone()
    losses = [net.manual_step(x, y, lr=0.5)[0].item() for _ in range(20)]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False))
    assert losses[-1] < 0.5 * losses[0]
    assert not torch.equal(net.W, W0)  # updated in place
    assert (net(x).argmax(dim=1) == y).all()
    loss, scores = net.manual_step(x, y, lr=0.5)
    assert scores.shape == (8, 2) and loss.shape == ()


def test_update_per_image_makes_the_updates_of_batches_of_one_bit_for_bit():
    torch.manual_seed(0)
    per_image = SoftmaxRegression(1, 28, 10, update_per_image=True)
    start = {name: value.clone() for name, value in per_image.state_dict().items()}
    batch_of_one = SoftmaxRegression(1, 28, 10)
    batch_of_one.load_state_dict(start)
    x, y = torch.rand(300, 1, 28, 28), torch.randint(0, 10, (300,))
    losses, scores = [], []
    for i in range(300):
        loss, out = batch_of_one.manual_step(x[i : i + 1], y[i : i + 1], lr=0.05)
        losses.append(loss)
        scores.append(out)
    batch_mean = SoftmaxRegression(1, 28, 10)
    batch_mean.load_state_dict(start)
    for k in range(0, 300, 100):  # three batches of 100
        loss, out = per_image.manual_step(x[k : k + 100], y[k : k + 100], lr=0.05)
        assert loss == torch.stack(losses[k : k + 100]).mean()
        assert torch.equal(out, torch.cat(scores[k : k + 100]))
        batch_mean.manual_step(x[k : k + 100], y[k : k + 100], lr=0.05)
    assert torch.equal(per_image.W, batch_of_one.W) and torch.equal(per_image.b, batch_of_one.b)
    # one update on each batch's mean loss is a different recipe
    assert (batch_mean.W - per_image.W).abs().max() > 1e-3


def test_one_image_update_is_the_batch_formula_for_one_image():
    """The per-image code (a third of the operations) against the batch code and autograd."""
    torch.manual_seed(0)
    net = SoftmaxRegression(3, 4, 5, init_std=0.5).double()
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    y = torch.tensor([3])
    loss, dW, db, scores = net.loss_and_gradients(x, y)
    W = net.W.detach().clone().requires_grad_(True)
    ref_loss = F.cross_entropy(x.flatten(1) @ W + net.b, y)
    ref_loss.backward()
    expected_W, expected_b = net.W - 0.1 * dW, net.b - 0.1 * db
    step_loss, step_scores = net.manual_step(x, y, lr=0.1)  # a batch of one: the per-image code
    torch.testing.assert_close(step_loss, loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(step_loss, ref_loss.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(step_scores, scores, rtol=0, atol=1e-12)
    torch.testing.assert_close(net.W, expected_W, rtol=0, atol=1e-12)
    torch.testing.assert_close(net.b, expected_b, rtol=0, atol=1e-12)
    torch.testing.assert_close(dW, W.grad, rtol=0, atol=1e-12)


# --- the model configs build these nets, sizes from the data config ---------------------------


@pytest.mark.parametrize(
    ("model", "cls", "expected"),
    [
        ("mlp_deep", MLPDeep, MLP_DEEP_3x32x32),
        ("two_layer_fc", TwoLayerFC, TWO_LAYER_FC_3x32x32),
        ("three_layer_convnet", ThreeLayerConvNet, THREE_LAYER_CONVNET_3x32x32),
        ("cifar_cnn", CifarCNN, CIFAR_CNN_3x32x32),
        ("lenet5_any", LeNet5Any, None),
        ("resnet_small", ResNetSmall, RESNET_SMALL_2_2_2_W16),
    ],
)
def test_model_configs_build_the_nets(model, cls, expected):
    cfg = compose_train(
        [f"model={model}", "data=mnist", "data.in_channels=3", "data.image_size=32"]
    )
    net = build(cfg.model.net)
    assert isinstance(net, cls)
    if expected is not None:
        assert n_params(net) == expected
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, cfg.data.num_classes)
    if model == "mlp_deep":
        assert net.l2_lambda == 0.006 and net.l2_layers == ["fc1", "fc2", "fc3"]
