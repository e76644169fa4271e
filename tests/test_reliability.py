"""Faults a user meets before any training: a tracking store that does not answer, tuner state
that the store does not back, the same sweep started twice, and sweep files with wrong keys,
types or empty search spaces. Each ends in one sentence and a non-zero exit, with nothing
written half-way."""

from __future__ import annotations

import fcntl
import json
import time

import pytest
from click.testing import CliRunner

from catdog import sweepfile
from catdog.cli import main
from catdog.errors import CatdogError
from catdog.search import sweep
from catdog.tracking import runs, store
from tests.procs import free_port


# --------------------------------------------------------------------------- the store answers
@pytest.mark.parametrize(
    "command", [["train", "--arch", "baseline"], ["sweep", "--max-trials", "1"]]
)
def test_a_store_that_does_not_answer_fails_within_seconds(
    workdir, monkeypatch, tiny_prepared, command
):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    t0 = time.monotonic()
    result = CliRunner().invoke(main, [*command, "--data", str(tiny_prepared)])
    elapsed = time.monotonic() - t0
    assert result.exit_code == 2, result.output
    assert f"the MLflow tracking store {uri} does not answer" in result.output
    assert elapsed < 20, f"took {elapsed:.0f}s"  # before: minutes of MLflow retries
    assert not (workdir / "mlruns").exists() and not (workdir / ".tuner").exists()


def test_a_database_store_is_named_without_its_password(monkeypatch):
    port = free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql://catdog:s3cret@127.0.0.1:{port}/ml")
    with pytest.raises(store.StoreUnavailable) as info:
        store.check()
    assert f"postgresql://catdog:***@127.0.0.1:{port}/ml does not answer" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_a_sqlite_store_in_a_folder_that_cannot_be_made(workdir, monkeypatch):
    (workdir / "blocker").write_text("a file where the store's folder should be")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir}/blocker/mlruns/mlflow.db")
    with pytest.raises(store.StoreUnavailable, match="cannot create"):
        store.check()


def test_a_store_lost_mid_run_stops_with_one_sentence_and_no_wait(workdir, monkeypatch):
    """Logging that fails because the store went away ends the run without waiting out MLflow's
    retries a second time, and says how to go on."""
    import mlflow

    store.configure()
    monkeypatch.setattr(store, "answers", lambda uri=None: False)
    with pytest.raises(store.StoreUnavailable, match="stopped answering.*run the same command"):
        with runs.active_run(experiment="catdog", run_name="r"):
            raise ConnectionError("Max retries exceeded")
    assert mlflow.active_run() is None, "the fluent run stack is left clean"


# ------------------------------------------------------------------ tuner state and the store
def _cfg(tiny_prepared, **kw):
    return sweepfile.load(
        None,
        archs=("baseline",),
        tuner="random",
        trials=2,
        epochs=1,
        image_size=32,
        batch_size=8,
        data=str(tiny_prepared),
        **kw,
    )


def _key(cfg, data):
    from catdog.data.prepare import read_summary

    return cfg.key(read_summary(data)["digest"])


def test_tuner_state_the_store_does_not_hold_is_refused_naming_fresh(workdir, tiny_prepared):
    """Before: after `rm -rf mlruns` the sweep 'resumed', found every trial done, and exited 0
    with nothing recorded."""
    cfg = _cfg(tiny_prepared)
    trial = workdir / ".tuner" / _key(cfg, tiny_prepared) / "baseline" / "trial_0"
    trial.mkdir(parents=True)
    (trial / "trial.json").write_text(json.dumps({"trial_id": "0", "status": "COMPLETED"}))
    with pytest.raises(CatdogError, match=r"does not hold \(1 of baseline\).*--fresh"):
        sweep.run(cfg)


def test_the_same_sweep_twice_at_once_is_refused(workdir, tiny_prepared):
    cfg = _cfg(tiny_prepared)
    (workdir / ".tuner").mkdir()
    with open(workdir / ".tuner" / f"{_key(cfg, tiny_prepared)}.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another process would
        held.write("4242")
        held.flush()
        with pytest.raises(CatdogError, match=r"already running on this machine \(pid 4242\)"):
            sweep.run(cfg)


# ------------------------------------------------------------------------------ sweep files
@pytest.mark.parametrize(
    "text, needle",
    [
        ('trials = "many"', "trials must be an integer in {f}, got 'many'"),
        ("epochs = 2.5", "epochs must be an integer in {f}, got 2.5"),
        ('archs = "vgg"', "archs must be a list of architecture names in {f}"),
        ("archs = [1, 2]", "archs must be a list of architecture names in {f}"),
        ('pretrained = "yes"', "pretrained must be true or false in {f}"),
        ("seed = true", "seed must be an integer in {f}, got True"),
        ('budget = "an hour"', "budget 'an hour' is not a duration; write it like 45m"),
        ("budget = true", 'budget must be a duration like "45m" or "2h" in {f}'),
        ("hp = 3", "hp must be a table in {f}"),
        ("epoch = 3", "unknown key(s) epoch in {f}"),
        ("archs = []", "archs is an empty list in {f}"),
        ("[hp]\nwidth = []", "hp.width is an empty list of choices"),
        ("[hp]\nlr = { min = 0.1, max = 0.01 }", "hp.lr has min 0.1 above max 0.01"),
        ("[hp]\nlr = { low = 0.1 }", "unknown architecture 'lr'"),  # a table, not a range
        ("[hp.vgg]\nlr = { low = 0.1 }", "hp.vgg.lr must be a value, a list of choices or {min"),
        ("[hp.vgg]\nwidth = []", "hp.vgg.width is an empty list of choices"),
        ("patience = 0", "patience must be at least 1"),
        ('archs = ["vgg", "nope"]', "unknown architecture 'nope'"),
        ('tuner = "grid"', "unknown tuner 'grid'"),
    ],
)
def test_a_bad_sweep_file_names_the_key_and_the_file(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(CatdogError) as info:
        sweepfile.load(path)
    message = str(info.value)
    assert needle.replace("{f}", str(path)) in message
    assert str(path) in message


def test_a_hyperparameter_the_architecture_lacks_fails_before_any_data_is_read(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('archs = ["baseline"]\ndata = "nowhere"\n[hp.baseline]\ndropuot = 0.3\n')
    with pytest.raises(CatdogError, match="baseline: hyperparameter 'dropuot' is not in"):
        sweepfile.search_spaces(sweepfile.load(path))


@pytest.mark.parametrize(
    ("hp", "needle"),
    [
        ("ema = 1.5", "ema is the average's momentum, between 0 and 1; got 1.5"),
        ("ema = [0.0, 0.99, 2.0]", "got 2.0"),
        ("rotate = { min = 0, max = 270 }", "rotate is the rotation's limit in degrees"),
        ("weight_decay = 1.5", "weight_decay is the share of each weight"),
        ("translate = { min = 0.0, max = 1.0 }", "translate is a share"),
        ("label_smoothing = -0.1", "label_smoothing is a share"),
    ],
)
def test_an_opt_in_trick_out_of_bounds_fails_before_any_data_is_read(tmp_path, hp, needle):
    """Also where only one choice, or one end of a range, is out: a trial could draw it."""
    path = tmp_path / "trick.toml"
    path.write_text(f'archs = ["baseline"]\ndata = "nowhere"\n[hp]\n{hp}\n')
    with pytest.raises(CatdogError) as info:
        sweepfile.search_spaces(sweepfile.load(path))
    assert str(info.value).startswith("baseline: ") and needle in str(info.value)


def test_opt_in_tricks_within_bounds_pass_the_check(tmp_path):
    path = tmp_path / "tricks.toml"
    path.write_text(
        'archs = ["baseline"]\n[hp]\nema = [0.0, 0.99]\nrotate = { min = 0, max = 30 }\n'
        "weight_decay = { min = 0.0, max = 0.4 }\ntranslate = 0.1\nlabel_smoothing = 0.1\n"
    )
    space = sweepfile.search_spaces(sweepfile.load(path))["baseline"]
    assert {"ema", "rotate", "weight_decay", "translate", "label_smoothing"} <= set(space.values)


def test_the_cli_reports_a_bad_sweep_file_in_one_line(workdir):
    (workdir / "bad.toml").write_text("trials = -3\n")
    result = CliRunner().invoke(main, ["sweep", "bad.toml"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: trials must be a positive integer, got -3 (in bad.toml)"
    ]


# ------------------------------------------------------------------------------------ secrets
def test_a_kaggle_key_in_the_environment_reaches_no_run_and_no_output(
    workdir, monkeypatch, tiny_prepared, capfd
):
    """Runs record parameters, tags, environments and models: none of it may carry the key."""
    canary = "kaggle-canary-7d1e4f0b9a"
    monkeypatch.setenv("KAGGLE_USERNAME", "whiskers")
    monkeypatch.setenv("KAGGLE_KEY", canary)
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--arch",
            "baseline",
            "--data",
            str(tiny_prepared),
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--batch-size",
            "8",
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    captured = capfd.readouterr()
    assert canary not in result.output + captured.out + captured.err
    files = [p for p in (workdir / "mlruns").rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and len(files) > 10, "a store to search"
    leaked = [p for p in files if canary.encode() in p.read_bytes()]
    assert not leaked, leaked
