"""Files that a reader sees whole or not at all: tables rewritten after every job of a sweep,
data unpacked or converted by parallel jobs at once, caches that a killed run may leave behind."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO]:
    """``path`` opened for writing (``"wb"`` or ``"w"``, UTF-8) under a name of this process and
    thread's own beside it; renamed to ``path`` when the block ends, removed if it raises."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    try:
        with open(partial, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
