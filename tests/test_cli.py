"""The click layer: help everywhere, the registry listing, and user errors as one sentence."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from catdog.cli import main
from tests.imagegen import make_layout, zip_dir

COMMANDS = [
    [],
    ["data"],
    ["data", "download"],
    ["data", "prepare"],
    ["archs"],
    ["train"],
    ["sweep"],
    ["distributed"],
    ["compare"],
    ["report"],
    ["register"],
    ["evaluate"],
    ["predict"],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "catdog")
def test_every_command_has_help(cmd):
    result = CliRunner().invoke(main, [*cmd, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_archs_lists_the_registry_with_parameter_counts():
    from catdog import models

    out = CliRunner().invoke(main, ["archs", "--image-size", "64"]).output
    for name in models.names():
        line = next(row for row in out.splitlines() if row.startswith(name + " "))
        count = int(line.split()[3].replace(",", ""))
        assert count == models.get(name).build(image_size=64).count_params()


def test_prepare_command_prints_the_result(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = zip_dir(make_layout(tmp_path / "raw", "flat", 8), tmp_path / "flat.zip")
    result = CliRunner().invoke(main, ["data", "prepare", str(src)])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert (
        info["root"] == "data/prepared/flat"
        and sum(sum(c.values()) for c in info["counts"].values()) == 16
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["data", "prepare", "missing.zip"], "does not exist"),
        (["data", "download", "--source", "kaggle"], "kaggle"),
        (["train", "--arch", "alexnet"], "unknown architecture"),
        (["train", "--arch", "baseline", "--data", "nowhere"], "does not exist"),
        (["sweep", "experiments/none.toml"], "does not exist"),
        (["sweep", "--arch", "alexnet", "--data", "x"], "unknown architecture"),
        (["train", "--arch", "baseline", "--set", "novalue"], "NAME=VALUE"),
    ],
)
def test_user_errors_are_one_sentence_and_exit_2(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nokaggle"))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert needle.lower() in result.output.lower()
    assert "Traceback" not in result.output


def test_unsafe_archive_is_refused_by_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = zip_dir(
        make_layout(tmp_path / "raw", "salader", 3), tmp_path / "evil.zip", {"../evil.jpg": b"x"}
    )
    result = CliRunner().invoke(main, ["data", "prepare", str(src)])
    assert result.exit_code == 2 and "unsafe" in result.output
    assert not (tmp_path / "data" / "prepared" / "evil").exists()


def test_help_lists_every_entry_point():
    out = CliRunner().invoke(main, ["--help"]).output
    for command in (
        "data",
        "archs",
        "train",
        "sweep",
        "distributed",
        "compare",
        "report",
        "register",
        "evaluate",
        "predict",
    ):
        assert f"  {command} " in out, command
    assert "make bench" in out and "python -m benchmarks" in out


def test_start_is_quiet_without_a_gpu(tmp_path):
    """TensorFlow's C++ start-up lines (oneDNN, cuda drivers, cuInit) never reach the terminal;
    --verbose is the way to see them."""
    import os
    import subprocess
    import sys

    env = {
        k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CATDOG_VERBOSE")
    }
    proc = subprocess.run(
        [sys.executable, "-m", "catdog", "archs", "--pattern", "baseline"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", f"start-up noise on stderr:\n{proc.stderr}"
    assert proc.stdout.splitlines()[1].startswith("baseline ")


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--arch", "baseline", "--image-size", "0"], "--image-size"),
        (["train", "--arch", "baseline", "--epochs", "-1"], "--epochs"),
        (["train", "--arch", "baseline", "--lr", "0"], "--lr"),
        (["sweep", "--max-trials", "0"], "--max-trials"),
        (["train", "--arch", "baseline", "--precision", "fp8"], "--precision"),
        (["sweep", "--tuner", "grid"], "--tuner"),
    ],
)
def test_impossible_option_values_are_refused_by_click(args, needle):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and needle in result.output


def test_json_keeps_class_names_as_written(workdir):
    """`predict`, `evaluate` and `data prepare` print café, not caf\\u00e9."""
    from catdog.train import train
    from tests.imagegen import write_jpeg

    src = workdir / "café-thé"
    for i in range(8):
        write_jpeg(src / "café" / f"{i}.jpg", 100 + i, size=(32, 32))
        write_jpeg(src / "thé" / f"{i}.jpg", 200 + i, size=(32, 32))
    prepared = CliRunner().invoke(main, ["data", "prepare", str(src), "--dest", "prepared"])
    assert prepared.exit_code == 0, prepared.output
    assert '"café"' in prepared.stdout and "\\u00e9" not in prepared.stdout
    assert json.loads(prepared.stdout)["name"] == "cafe-the"

    run = train(
        "baseline", "prepared", image_size=32, batch_size=8, epochs=1, seed=3, pretrained=False
    )
    result = CliRunner().invoke(
        main, ["predict", str(src / "café"), "--model", run.model_uri, "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert '"p_café"' in result.stdout and "\\u00e9" not in result.stdout
    rows = json.loads(result.stdout)
    assert len(rows) == 8 and {r["label"] for r in rows} <= {"café", "thé"}
    assert all("/café/" in r["path"] for r in rows)
    ev = CliRunner().invoke(
        main, ["evaluate", "--model", run.model_uri, "--data", "prepared", "--format", "json"]
    )
    assert ev.exit_code == 0, ev.output
    assert '"café"' in ev.stdout and "\\u00e9" not in ev.stdout
    assert 0 <= json.loads(ev.stdout)["balanced_accuracy"] <= 1
