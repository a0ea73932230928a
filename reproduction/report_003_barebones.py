"""Report 003's Part II as its code ran: a cross-check of the lab's ``cifar10_convnets_barebones``.

The report trained CS231n's functional three-layer convnet with the notebook's own loop
(``train_part2``): weights from ``random_weight`` (Kaiming normal over fan-in), zero biases, plain
SGD at 3e-3 on batches of 64 drawn at random from the first 49,000 training images, one epoch,
printing the accuracy on the next 1,000 (the validation set) every 100 iterations. This script is
that loop in plain PyTorch, without the lab, so that a gap between the lab's row and the report
can be split into what the data copy does (this loop on the same images) and what the lab does.

    python reproduction/report_003_barebones.py --data-dir <folder with cifar-10-batches-py>
    python reproduction/report_003_barebones.py --data-dir ... --std 0.247 0.243 0.261 --seed 1

It prints the validation accuracy at every 100th iteration and after the epoch. The files'
MD5 sums are not checked, so copies such as the JPEG one's batches load.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, SubsetRandomSampler
from torchvision import transforms as T

from datamodules.cifar10 import CIFAR10Dataset  # torchvision's CIFAR10, MD5 checks optional

# The CS231n notebook's normalisation (its ``T.Normalize`` line); the report does not print it.
NOTEBOOK_MEAN = (0.4914, 0.4822, 0.4465)
NOTEBOOK_STD = (0.2023, 0.1994, 0.2010)


def random_weight(shape: tuple[int, ...]) -> torch.Tensor:
    """Kaiming normal over fan-in, as the notebook's ``random_weight``: a conv weight's fan-in is
    its in-channels x kernel area, an FC weight (in, out) its first dimension."""
    fan_in = shape[0] if len(shape) == 2 else math.prod(shape[1:])
    return (torch.randn(shape) * math.sqrt(2.0 / fan_in)).requires_grad_()


def zero_weight(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.zeros(shape, requires_grad=True)


def initial_params() -> list[torch.Tensor]:
    """The notebook's Question 2: channel_1 = 32, channel_2 = 16, weights by ``random_weight``,
    biases by ``zero_weight``, in the order ``three_layer_convnet`` unpacks them."""
    return [
        random_weight((32, 3, 5, 5)),
        zero_weight((32,)),
        random_weight((16, 32, 3, 3)),
        zero_weight((16,)),
        random_weight((16 * 32 * 32, 10)),
        zero_weight((10,)),
    ]


def three_layer_convnet(x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    conv_w1, conv_b1, conv_w2, conv_b2, fc_w, fc_b = params
    x = F.relu(F.conv2d(x, conv_w1, conv_b1, padding=2))
    x = F.relu(F.conv2d(x, conv_w2, conv_b2, padding=1))
    return x.flatten(1).mm(fc_w) + fc_b


def accuracy(loader: DataLoader, params: list[torch.Tensor]) -> float:
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((three_layer_convnet(x, params).argmax(1) == y).sum())
            total += len(y)
    return correct / total


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="the folder holding cifar-10-batches-py/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=49000, help="training images (the first N)")
    p.add_argument("--val", type=int, default=1000, help="validation images (the next N)")
    p.add_argument("--std", type=float, nargs=3, default=NOTEBOOK_STD, help="per-channel std")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--print-every", type=int, default=100)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    transform = T.Compose([T.ToTensor(), T.Normalize(NOTEBOOK_MEAN, tuple(args.std))])
    try:
        cifar = CIFAR10Dataset(args.data_dir, train=True, transform=transform)
    except RuntimeError:
        sys.exit(f"--data-dir {args.data_dir} holds no cifar-10-batches-py/: give its parent")
    if len(cifar) < args.train + args.val:
        sys.exit(f"--train {args.train} + --val {args.val} is more than the {len(cifar)} images")
    train_loader = DataLoader(cifar, 64, sampler=SubsetRandomSampler(range(args.train)))
    val_rows = range(args.train, args.train + args.val)
    val_loader = DataLoader(cifar, 64, sampler=SubsetRandomSampler(val_rows))
    params = initial_params()
    for t, (x, y) in enumerate(train_loader):
        loss = F.cross_entropy(three_layer_convnet(x, params), y)
        loss.backward()
        with torch.no_grad():
            for w in params:
                w -= args.lr * w.grad
                w.grad.zero_()
        if t % args.print_every == 0:
            val = accuracy(val_loader, params)
            print(f"iteration {t}, loss {loss.item():.4f}, val acc {val:.4f}")
    final = accuracy(val_loader, params)
    print(f"after the epoch ({t + 1} iterations): val acc {final:.4f}")
    return final


if __name__ == "__main__":
    main()
