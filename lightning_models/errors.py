"""The one exception type for mistakes a user can fix (bad config value, missing data)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate


class LabError(ValueError):
    """A user-fixable problem, reported as one sentence instead of a stack trace.

    The message names what was wrong (the config key and its value, or the file) and what to do.
    ``train.py`` prints it and exits non-zero; in a multirun the job fails and the sweep goes on.
    """


class DivergedError(LabError):
    """Training produced a non-finite loss; the run stopped before that step's update."""


def build(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, but a LabError raised inside surfaces as itself.

    Hydra wraps whatever a ``_target_`` raises in an InstantiationException whose message is a
    repr of a repr; the user should read our sentence instead.
    """
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, LabError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None


@contextlib.contextmanager
def reported_as(what: str, fix: str) -> Iterator[None]:
    """Any exception raised inside becomes a LabError: one sentence naming ``what`` (the config
    key, its choice, or the file) with the library's own message, and ``fix``, what to do.

    For the parts of a run built before its folder is made (lightning_models/validation.py):
    whatever a library refuses, the user reads which key it came from, not a stack trace.
    """
    try:
        yield
    except LabError:
        raise
    except Exception as err:  # noqa: BLE001 - the point: any library's refusal, named
        raise LabError(f"{what} cannot be used: {library_message(err)}; {fix}") from err


def library_message(err: BaseException) -> str:
    """The innermost cause's message, on one line (Hydra wraps what a _target_ raises)."""
    while err.__cause__ is not None and isinstance(err, InstantiationException):
        err = err.__cause__
    text = " ".join(str(err).split()) or type(err).__name__
    return text.rstrip(".")
