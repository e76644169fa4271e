"""The one way catdog reports progress: the standard `logging` module, logger "catdog".

Library code calls `get_logger(__name__)`; the CLI calls `setup()` once so messages reach stderr
as plain lines. Nothing else prints progress.
"""

from __future__ import annotations

import logging
import sys

_ROOT = "catdog"


def get_logger(name: str = _ROOT) -> logging.Logger:
    if not name.startswith(_ROOT):
        name = f"{_ROOT}.{name}"
    return logging.getLogger(name)


def setup(level: int = logging.INFO) -> None:
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
