"""Report 001's "resnet-like" network: a deeper residual CNN for scene images (36% accuracy).

The report gives no layer list (it points to a blog's PyTorch ResNet), so this is the standard
small ResNet of He et al. for 32x32-scale images: a 3x3 stem, stages of basic residual blocks (two
3x3 conv + BatchNorm, ReLU, identity shortcut, or 1x1-conv + BatchNorm projection when the shape
changes), channels doubling and resolution halving from one stage to the next, global average
pooling and one Linear layer. Pooling makes it independent of the image size (8x8 and up is
sensible) and of the channel count. Convs use Kaiming-normal init (fan_out, ReLU) as torchvision.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lightning_models.checks import LabError


class BasicBlock(nn.Module):
    """conv3x3 → BN → ReLU → conv3x3 → BN, plus the shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetSmall(nn.Module):
    """Residual CNN; 175,258 parameters with ``depth=[2, 2, 2]``, ``width=16``, 3 channels and
    10 classes (ResNet-14 in He et al.'s CIFAR family; ``depth=[3, 3, 3]`` is ResNet-20).

    Args:
        depth: basic blocks per stage; stage ``i`` has ``width·2^i`` channels and, after the
            first, starts with stride 2.
        width: channels of the stem and of the first stage.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        depth: Sequence[int] = (2, 2, 2),
        width: int = 16,
    ):
        super().__init__()
        depth = list(depth)
        if not depth or any(d < 1 for d in depth) or width < 1:
            raise LabError(
                f"model resnet_small needs depth as a list of blocks per stage, each at least 1, "
                f"and width >= 1, but got depth={depth} width={width}"
            )
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        c_in = width
        for stage, n_blocks in enumerate(depth):
            c_out = width * 2**stage
            for i in range(n_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(c_in, c_out, stride))
                c_in = c_out
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.fc(self.pool(self.stages(self.stem(x))))
