"""catdog on a machine that is not Linux: every Linux-only call (sched_getaffinity, /proc, glibc,
ru_maxrss in KiB) has a fallback, and each is played here on Linux by taking the Linux part away,
as macOS lacks it. A last test finds every such call in the source, so a new one comes with a
fallback and a test here."""

from __future__ import annotations

import ast
import builtins
import os
import re
import sys
from pathlib import Path

import pytest

from catdog import runtime

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_proc(monkeypatch):
    """No /proc, as on macOS: opening anything under it fails, and nothing there exists."""
    real_open, real_exists = builtins.open, os.path.exists

    def fake_open(file, *args, **kwargs):
        if str(file).startswith("/proc"):
            raise FileNotFoundError(2, "No such file or directory", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(
        os.path, "exists", lambda path: not str(path).startswith("/proc") and real_exists(path)
    )


@pytest.fixture
def macos(monkeypatch, no_proc):
    """What Python on macOS lacks: sched_getaffinity (and, before 3.13, process_cpu_count)."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.delattr(os, "process_cpu_count", raising=False)
    monkeypatch.setattr(sys, "platform", "darwin")


def test_a_cpu_only_start_announces_every_core_without_sched_getaffinity(macos, monkeypatch):
    monkeypatch.setattr(runtime, "gpus", lambda: [])
    assert runtime.cpu_cores() == os.cpu_count()
    text = runtime.announce_devices()
    assert text == f"no GPU found; training on {os.cpu_count()} CPU cores"


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux's affinity is absent")
def test_on_linux_the_cores_are_the_ones_this_process_may_use(monkeypatch):
    monkeypatch.delattr(os, "process_cpu_count", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # as `taskset -c 0` would
    assert runtime.cpu_cores() == 1


def test_python_3_13s_process_cpu_count_is_used_where_it_exists(monkeypatch):
    monkeypatch.setattr(os, "process_cpu_count", lambda: 3, raising=False)
    assert runtime.cpu_cores() == 3


class _Usage:
    def __init__(self, maxrss: int):
        self.ru_maxrss = maxrss


def test_peak_memory_is_read_in_bytes_on_macos_and_the_current_falls_back_to_it(macos, monkeypatch):
    import resource

    monkeypatch.setattr(resource, "getrusage", lambda who: _Usage(512 * 2**20))  # bytes
    assert runtime.rss_mb() == (512.0, 512.0)


def test_peak_memory_is_read_in_kib_on_linux(monkeypatch):
    import resource

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(resource, "getrusage", lambda who: _Usage(512 * 1024))  # KiB
    current, peak = runtime.rss_mb()
    assert peak == 512.0 and current > 0


def test_no_cpuinfo_means_no_bf16_assumed(no_proc):
    assert runtime.cpu_has_bf16() is False


def test_releasing_memory_without_glibc_is_a_no_op(monkeypatch):
    import ctypes

    def no_glibc(name, *args, **kwargs):
        raise OSError(f"dlopen({name}): image not found")

    monkeypatch.setattr(ctypes, "CDLL", no_glibc)
    runtime.release_memory()


def test_the_benchmark_names_the_cpu_and_skips_the_cpu_share_without_proc(no_proc):
    from benchmarks import probes

    assert probes.CpuShare().others() is None
    info = probes.machine_info()
    assert info["cpu"] not in ("", "unknown") and info["cores"] == os.cpu_count()


# Every Linux-only call in catdog and the benchmark, by the function it is in: each has a
# fallback played by a test above.
LINUX_ONLY = re.compile(r"sched_getaffinity|/proc/|libc\.so|ru_maxrss|lscpu|RLIMIT_")
COVERED = {
    ("catdog/runtime.py", "cpu_cores"),
    ("catdog/runtime.py", "announce_devices"),
    ("catdog/runtime.py", "release_memory"),
    ("catdog/runtime.py", "rss_mb"),
    ("catdog/runtime.py", "cpu_flags"),  # through cpu_has_bf16
    ("benchmarks/probes.py", "CpuShare"),
    ("benchmarks/probes.py", "machine_info"),
}


def _linux_only_calls() -> set[tuple[str, str]]:
    found = set()
    for path in sorted([*REPO.glob("catdog/**/*.py"), *REPO.glob("benchmarks/**/*.py")]):
        source = path.read_text()
        for node in ast.parse(source).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and LINUX_ONLY.search(
                ast.get_source_segment(source, node) or ""
            ):
                found.add((path.relative_to(REPO).as_posix(), node.name))
    return found


def test_every_linux_only_call_has_a_tested_fallback():
    calls = _linux_only_calls()
    assert ("catdog/runtime.py", "rss_mb") in calls  # the scan finds what it looks for
    assert calls <= COVERED, f"a Linux-only call without a fallback test: {sorted(calls - COVERED)}"
