"""The sweep report in a real browser: headless Chromium (Debian's package; `.ci/run` installs
it) loads the file, and every inlined image must decode. Skips with a reason without Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from catdog import sweep, sweepfile
from catdog.report import write_report

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=10000"]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install "
                    "chromium); .ci/run installs it")
def test_report_renders_every_image_in_chromium(tiny_prepared, workdir):
    cfg = sweepfile.load(None, archs=("baseline", "bn_dropout"), tuner="random", trials=1,
                         epochs=2, repeats=2, image_size=32, batch_size=8,
                         data=str(tiny_prepared))
    sweep.run(cfg)
    report = write_report(out=workdir / "report.html")
    profile = workdir / "chromium-profile"
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                           report.resolve().as_uri()], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    total = int(re.search(r'data-images="(\d+)"', dom).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', dom).group(1))
    assert total >= 6 and loaded == total, f"{loaded} of {total} images decoded"
    assert "<table" in dom and "±" in dom and "McNemar exact p" in dom
    shot = workdir / "report.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                    "--window-size=1280,4000", report.resolve().as_uri()],
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 50_000, "the page drew something"
