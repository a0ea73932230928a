"""Weight initialisation as the reports applied it: one scheme, on chosen layer types.

The nets call :func:`initialize` for their report's own init; the ``init=`` config group calls it
(as a partial) to apply another scheme to any net.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from torch import nn

from lightning_models.checks import LabError

# nn.init's defaults: Kaiming uses fan_in and the ReLU gain (√2), as report 003's calls did.
SCHEMES = {
    "xavier_normal": nn.init.xavier_normal_,
    "xavier_uniform": nn.init.xavier_uniform_,
    "kaiming_normal": nn.init.kaiming_normal_,
    "kaiming_uniform": nn.init.kaiming_uniform_,
}


def initialize(net: nn.Module, scheme: str, layers: Sequence[str] = ("Linear",)) -> nn.Module:
    """Re-initialise the weights of every ``layers`` module (``nn`` class names) with ``scheme``.

    Biases keep their initialisation, as in the reports.
    """
    if scheme not in SCHEMES:
        raise LabError(f"init.scheme={scheme!r} is not allowed; use one of {', '.join(SCHEMES)}")
    unknown = [name for name in layers if not isinstance(getattr(nn, name, None), type)]
    if unknown:
        raise LabError(
            f"init.layers names {unknown}, which are no torch.nn layer types; use names such as "
            "Linear or Conv2d"
        )
    types = tuple(getattr(nn, name) for name in layers)
    touched = 0
    for module in net.modules():
        if isinstance(module, types) and getattr(module, "weight", None) is not None:
            SCHEMES[scheme](module.weight)
            touched += 1
    if not touched:
        warnings.warn(
            f"init {scheme} found no {'/'.join(layers)} layer in {type(net).__name__}: nothing "
            "was re-initialised",
            stacklevel=2,
        )
    return net
