"""The sweep report: its template renders every section with text escaped (fast, from a made-up
context), and in a real browser: headless Chromium (Debian's package; `.ci/run` installs it)
loads the file, and every inlined image must decode. Skips with a reason without Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from catdog.report import render_report, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
]


PNG = "data:image/png;base64,iVBORw0KGgo="


def _context(**changes) -> dict:
    """What gather_report returns, made up: hostile names where a user picks the text."""
    context = {
        "name": "<script>alert(1)</script>",
        "run_id": "abc123",
        "sweep_key": "k&v",
        "tuner": "random",
        "strategy": "compare",
        "image_sizes": None,
        "image_size": "32",
        "epochs": "2",
        "trials": "1",
        "repeats": 2,
        "data": "/data/<cats> & dogs",
        "champion": "bn<dropout>",
        "metric": "val_accuracy",
        "ranked_by": "mean of repeats",
        "final": {"epochs": 3, "run_id": "fin456"},
        "test": {"accuracy": 0.91234, "loss": 0.2, "auc": 0.95, "macro_f1": 0.9},
        "per_class": [
            {"name": "cat<", "precision": 0.9, "recall": 0.8},
            {"name": "dog", "precision": 0.85, "recall": 0.92},
        ],
        "n_test": 24,
        "tta": True,
        "budget": None,
        "significance": "a 0.9 vs b 0.8, McNemar exact p = 0.04",
        "comparison_table": '<table class="cmp"><tr><td>x &amp; y</td></tr></table>',
        "figures": {
            "comparison": PNG,
            "anytime": PNG,
            "confusion": PNG,
            "roc": PNG,
            "saliency": PNG,
            "cost": PNG,
        },
        "learning_curves": [{"arch": 'a"b', "src": PNG}],
        "data_curve": {
            "sentence": "more photos would likely help (+3.1 points at 2x, 95% "
            "interval +0.8 to +5.4)",
            "src": PNG,
            "skipped": ["skipped 100% (<1,000> photos): it would take about 5m"],
            "backtest": "checked on this curve: fitted on the points up to <800> photos alone, "
            "the trend predicted 0.700 at 1,600 (2.0x); measured 0.710",
        },
        "wrong": {
            "n_wrong": 3,
            "photos": [{"src": PNG, "caption": "a cat called dog", "path": "test/cat/<1>.jpg"}],
        },
        "version": "0.1.0",
        "stamp": "2025-01-01 00:00 UTC",
        "tracking_uri": "sqlite:///m.db",
    }
    return {**context, **changes}


def test_report_template_renders_every_section_escaped():
    page = render_report(_context())
    for heading in (
        "Comparison",
        "Learning curves (best trial of each architecture)",
        "The search: best val accuracy so far, against wall-clock time",
        "Champion on the test split: bn&lt;dropout&gt;",
        "Champion against the runner-up (McNemar)",
        "Would more photos help?",
        "Most confidently wrong test photos",
        "Where the champion looked",
    ):
        assert f"<h2>{heading}</h2>" in page, heading
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "/data/&lt;cats&gt; &amp; dogs" in page and "test/cat/&lt;1&gt;.jpg" in page
    assert "cat&lt; 0.900/0.800 · dog 0.850/0.920" in page and "macro F1 0.9000" in page
    assert "with flip TTA" in page and "with flip TTA" not in render_report(_context(tta=False))
    assert 'alt="a&#34;b learning curves"' in page and "key k&amp;v" in page
    assert "<td>x &amp; y</td>" in page, "the comparison table goes in as markup"
    assert page.count("<img") == 9 and "data-images-loaded" in page and "table.cmp" in page
    assert "more photos would likely help (+3.1 points at 2x, 95% interval +0.8 to +5.4)." in page
    assert "skipped 100% (&lt;1,000&gt; photos)" in page
    assert (
        "The 2x reading, checked on this curve: fitted on the points up to &lt;800&gt; photos"
        in page
    )
    assert 'alt="accuracy against inference cost"' in page
    assert "test accuracy <b>0.9123</b>" in page and "run fin456" in page
    assert "3 of 24 test photos are wrong; the 1 it\nwas surest about" in page
    assert "McNemar exact p = 0.04." in page


def test_report_template_without_optional_parts():
    page = render_report(
        _context(
            strategy="best",
            image_sizes="[32, 48]",
            final=None,
            significance=None,
            budget="Budget 5m, used 4m; 3 trials ran of about 4 planned.",
            figures={
                "comparison": PNG,
                "anytime": None,
                "confusion": PNG,
                "roc": PNG,
                "saliency": None,
                "cost": None,
            },
            data_curve=None,
            wrong={"n_wrong": 0, "photos": []},
        )
    )
    assert "the best strategy over architectures and sizes [32, 48] px" in page
    assert "its best trial has test accuracy" in page and "Budget 5m, used 4m;" in page
    assert "Only one architecture in this sweep" in page and "wall-clock" not in page
    assert "The champion got every test image right." in page
    assert "No saliency map could be drawn." in page and page.count("<img") == 4
    assert "Would more photos help?" not in page and "inference cost" not in page


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (apt-get install chromium); .ci/run installs it",
)
def test_report_renders_every_image_in_chromium(tiny_prepared, workdir):
    from catdog import sweepfile
    from catdog.search import sweep

    cfg = sweepfile.load(
        None,
        archs=("baseline", "bn_dropout"),
        tuner="random",
        trials=1,
        epochs=2,
        repeats=2,
        image_size=32,
        batch_size=8,
        data=str(tiny_prepared),
    )
    sweep.run(cfg)
    report = write_report(out=workdir / "report.html")
    profile = workdir / "chromium-profile"
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", report.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    total = int(re.search(r'data-images="(\d+)"', dom).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', dom).group(1))
    assert total >= 6 and loaded == total, f"{loaded} of {total} images decoded"
    assert "<table" in dom and "±" in dom and "McNemar exact p" in dom
    shot = workdir / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={shot}",
            "--window-size=1280,4000",
            report.resolve().as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 50_000, "the page drew something"
