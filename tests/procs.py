"""Helpers for tests that drive catdog in subprocesses."""

from __future__ import annotations

import time


def wait_for(proc, needle: str, timeout: float = 300) -> list[str]:
    """Read PROC's output until a line contains NEEDLE (the lines so far); kill it and fail with
    its last lines if NEEDLE does not come within TIMEOUT seconds."""
    seen = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        seen.append(line)
        if needle in line:
            return seen
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"never saw {needle!r}; output:\n{''.join(seen[-30:])}")
