"""Helpers for tests that drive catdog in subprocesses."""

from __future__ import annotations

import socket
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
