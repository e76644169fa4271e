"""The one way catdog reports progress: the standard `logging` module, logger "catdog".

Library code calls `get_logger(__name__)`; entry points call `setup()` once so messages reach
stderr as plain lines. Nothing else prints progress. `format_seconds` is how durations and ETAs
read in those lines.
"""

from __future__ import annotations

import logging
import os
import sys

_ROOT = "catdog"
VERBOSE_ENV = "CATDOG_VERBOSE"


def get_logger(name: str = _ROOT) -> logging.Logger:
    if not name.startswith(_ROOT):
        name = f"{_ROOT}.{name}"
    return logging.getLogger(name)


def verbose_requested() -> bool:
    """CATDOG_VERBOSE=1 (or `catdog --verbose`): debug lines, and TensorFlow's own logs."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def setup(level: int | None = None) -> None:
    if level is None:
        level = logging.DEBUG if verbose_requested() else logging.INFO
    root = logging.getLogger(_ROOT)
    if any(getattr(h, "_catdog", False) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._catdog = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def format_seconds(s: float) -> str:
    if s != s:  # NaN: nothing measured yet
        return "?"
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
