"""The two CS231n networks of report 003 (Part III, PyTorch Module API), on CIFAR-10.

* :class:`TwoLayerFC` — flatten → Linear hidden → ReLU → Linear classes.
* :class:`ThreeLayerConvNet` — Conv(3→32, k5, pad 2) → ReLU → Conv(32→16, k3, pad 1) → ReLU →
  flatten → Linear 16·32·32 → classes. Its Linear width is written for 32x32 images, as in the
  report, so it takes only 3x32x32 input; :func:`require_input` says so in one sentence.

Both initialise their weights with ``nn.init.kaiming_normal_`` and its defaults (fan_in,
gain √2), as the report's ``__init__`` does for every layer; biases keep PyTorch's default.
"""

from __future__ import annotations

from torch import nn

from lightning_models.nets._shapes import require_input
from lightning_models.nets.init import initialize


class TwoLayerFC(nn.Module):
    """Two fully connected layers; 12,332,010 parameters on 3x32x32 with 4000 hidden units.

    The hidden width is not printed in report 003; 4000 is the CS231n notebook's
    ``hidden_layer_size``. The first layer's width follows the data, so any input size works.
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int, hidden: int = 4000):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_channels * image_size * image_size, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)
        initialize(self, "kaiming_normal", ["Conv2d", "Linear"])

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


class ThreeLayerConvNet(nn.Module):
    """Two convolutions and one Linear layer; 170,906 parameters on 3x32x32 with 10 classes.

    Report 003 builds this network three times, and the three differ:

    * Part II (barebones): Kaiming-normal weights, zero biases (``zero_bias=True``);
    * Part III (Module API): Kaiming-normal weights, PyTorch's default biases (the defaults here);
    * Part IV (Sequential API): no ReLU after the first convolution and PyTorch's default init
      throughout, exactly as its ``nn.Sequential`` is printed (``relu_after_conv1=False``,
      ``kaiming=False``).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        channel_1: int = 32,
        channel_2: int = 16,
        relu_after_conv1: bool = True,
        kaiming: bool = True,
        zero_bias: bool = False,
    ):
        super().__init__()
        require_input("three_layer_convnet", (3, 32), in_channels, image_size)
        self.conv1 = nn.Conv2d(in_channels, channel_1, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(channel_1, channel_2, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        self.relu_after_conv1 = relu_after_conv1
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channel_2 * 32 * 32, num_classes)
        if kaiming:
            initialize(self, "kaiming_normal", ["Conv2d", "Linear"])
        if zero_bias:
            for layer in (self.conv1, self.conv2, self.fc):
                nn.init.zeros_(layer.bias)

    def forward(self, x):
        x = self.conv1(x)
        if self.relu_after_conv1:
            x = self.relu(x)
        x = self.relu(self.conv2(x))
        return self.fc(self.flatten(x))
