"""Every sweep setting is declared once, as a field of `catdog.settings.SweepConfig`: a setting
declared there (here: in a subclass, the way the real ones are) is checked in sweep files,
offered by `catdog sweep`, logged as a param and part of the resume key, without a second
place to edit. Resume keys and params stay the ones earlier releases gave, and a typo under
the global [hp] table is refused."""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path
from typing import Annotated

import pytest
from click.testing import CliRunner
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from catdog import settings, sweepfile
from catdog.cli import main, training
from catdog.errors import CatdogError
from catdog.settings import KEY_UNLESS_DEFAULT, Positive, Setting, SweepConfig

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class WithWarmup(SweepConfig):
    """SweepConfig plus one setting, declared the way SweepConfig declares its own."""

    warmup: Annotated[
        Positive, Setting(KEY_UNLESS_DEFAULT, param=True, option=True, bounds=(1, None))
    ] = Field(2, description="Epochs of learning-rate warm-up before the schedule starts.")


def test_a_new_setting_is_checked_in_the_sweep_file(tmp_path):
    good, bad, typo = (tmp_path / f"{n}.toml" for n in ("good", "bad", "typo"))
    good.write_text('archs = ["baseline"]\nwarmup = 5\n')
    bad.write_text("warmup = 0\n")
    typo.write_text("warmpu = 5\n")
    assert sweepfile.load(good, WithWarmup).warmup == 5
    assert sweepfile.load(None, WithWarmup, archs=("baseline",)).warmup == 2, "its default"
    with pytest.raises(
        CatdogError, match=re.escape(f"warmup must be a positive integer, got 0 (in {bad})")
    ):
        sweepfile.load(bad, WithWarmup)
    with pytest.raises(CatdogError) as unknown:
        sweepfile.load(typo, WithWarmup)
    assert str(unknown.value).startswith(f"unknown key(s) warmpu in {typo}; known keys: ")
    assert "warmup" in str(unknown.value).split("known keys: ")[1].split(", ")
    with pytest.raises(CatdogError, match="unknown key.s. warmup"):
        sweepfile.load(good)  # the plain settings do not have it


def test_a_new_setting_is_an_option_of_catdog_sweep(monkeypatch):
    command = training.sweep_command(WithWarmup)
    help_text = CliRunner().invoke(command, ["--help"], terminal_width=200).output
    assert re.search(
        r"--warmup INTEGER RANGE\s+Epochs of learning-rate warm-up before the "
        r"schedule starts\. Default: 2\.",
        help_text,
    ), help_text
    refused = CliRunner().invoke(command, ["--warmup", "0"])
    assert refused.exit_code == 2 and "--warmup" in refused.output
    seen = []
    monkeypatch.setattr(training, "_run_sweep", lambda cfg, *rest: seen.append(cfg))
    for args in (["--arch", "baseline", "--warmup", "4"], ["--arch", "baseline"]):
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 0, result.output
    assert [cfg.warmup for cfg in seen] == [4, 2], "given, then left out: the default"
    assert "--warmup" not in CliRunner().invoke(main, ["sweep", "--help"]).output


def test_a_new_setting_is_a_param_and_part_of_the_resume_key():
    plain = sweepfile.load(None, WithWarmup, archs=("baseline",))
    longer = sweepfile.load(None, WithWarmup, archs=("baseline",), warmup=5)
    assert longer.params(searches_size=False)["warmup"] == 5
    assert plain.params(searches_size=False)["warmup"] == 2
    assert longer.key("d1") != plain.key("d1")
    # KEY_UNLESS_DEFAULT: at its default the key is the one sweeps had before it existed.
    assert plain.key("d1") == sweepfile.load(None, archs=("baseline",)).key("d1")


# Keys computed by the code before the settings were declared once (catdog/sweepfile.py at the
# commit before this test): a sweep started then must resume under the same key.
HP = {
    "lr": {"min": 0.0005, "max": 0.003, "sampling": "log"},
    "augment": 0.1,
    "vgg": {"width": [16, 32]},
}


@pytest.mark.parametrize(
    "overrides, key",
    [
        (dict(archs=("baseline",)), "sweep-75283f054d"),
        (
            dict(
                archs=("baseline", "vgg"),
                tuner="random",
                trials=2,
                epochs=2,
                image_size=32,
                batch_size=8,
                data="somewhere",
                budget="10m",
                repeats=2,
                experiment="x",
                device="gpu",
                final_fit=False,
            ),
            "sweep-0c3b3c0b0f",
        ),
        (
            dict(
                archs=("baseline", "resnet"),
                strategy="best",
                image_sizes=(64, 96),
                precision="auto",
                seed=7,
                patience=5,
                hyperband_factor=4,
                pretrained=False,
                hp=HP,
            ),
            "sweep-e78789ff11",
        ),
    ],
)
def test_resume_keys_are_the_ones_earlier_releases_gave(overrides, key):
    assert sweepfile.load(None, **overrides).key("d1") == key


def test_a_sweep_files_resume_key_is_the_one_earlier_releases_gave(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text(
        'archs = ["vgg", "baseline"]\nstrategy = "focus"\n'
        'image_sizes = [96, 128]\nbudget = "42m"\n[hp]\n'
        'lr = { min = 0.0005, max = 0.003, sampling = "log" }\naugment = 0.15\n'
        "[hp.vgg]\nwidth = [16, 32]\n"
    )
    assert sweepfile.load(path).key("abc123") == "exp-b8b65a29dc"


def test_params_are_the_ones_earlier_releases_logged():
    cfg = sweepfile.load(
        None,
        archs=("baseline", "resnet"),
        strategy="best",
        image_sizes=(64, 96),
        precision="auto",
        seed=7,
        patience=5,
        pretrained=False,
        budget="1h",
        repeats=2,
    )
    before = {
        "archs": "baseline,resnet",
        "tuner": "hyperband",
        "trials": 10,
        "epochs": 10,
        "image_size": 128,
        "batch_size": 32,
        "seed": 7,
        "patience": 5,
        "precision": "auto",
        "pretrained": False,
        "search_strategy": "best",
    }
    assert cfg.params(searches_size=False) == before
    assert cfg.params(searches_size=True) == {**before, "image_sizes": "64,96"}
    one_size = sweepfile.load(None, archs=("baseline",), strategy="best")
    assert one_size.params(searches_size=True)["image_sizes"] == "128", "the sizes searched"


def test_catdog_sweep_keeps_every_option_it_had():
    sweep = training.sweep
    options = {opt: p.name for p in sweep.params for opt in (*p.opts, *p.secondary_opts)}
    assert options == {
        "--arch": "archs",
        "--tuner": "tuner",
        "--max-trials": "trials",
        "--epochs": "epochs",
        "--repeats": "repeats",
        "--image-size": "image_size",
        "--batch-size": "batch_size",
        "--seed": "seed",
        "--budget": "budget",
        "--strategy": "strategy",
        "--final-fit": "final_fit",
        "--no-final-fit": "final_fit",
        "--precision": "precision",
        "--pretrained": "pretrained",
        "--no-pretrained": "pretrained",
        "--data": "data",
        "--experiment": "experiment",
        "--fresh": "fresh",
        "--dry-run": "dry_run",
        "--register": "then_register",
        "--name": "model_name",
        "sweep_file": "sweep_file",
    }
    runner = CliRunner()
    for args, needle in (
        (["--image-size", "16"], "--image-size"),
        (["--seed", "-1"], "--seed"),
        (["--repeats", "101"], "--repeats"),
        (["--strategy", "fastest"], "--strategy"),
        (["--precision", "fp8"], "--precision"),
    ):
        result = runner.invoke(sweep, args)
        assert result.exit_code == 2 and needle in result.output, (args, result.output)


def test_options_left_out_never_override_the_file(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(training, "_run_sweep", lambda cfg, *rest: seen.append(cfg))
    path = tmp_path / "exp.toml"
    path.write_text(
        'archs = ["vgg"]\ntrials = 3\nfinal_fit = false\npretrained = false\ntuner = "random"\n'
    )
    for args in (
        [str(path)],
        [str(path), "--final-fit", "--max-trials", "5", "--arch", "baseline", "--arch", "vgg"],
    ):
        result = CliRunner().invoke(training.sweep, args)
        assert result.exit_code == 0, result.output
    kept, given = seen
    assert (kept.archs, kept.trials, kept.final_fit, kept.pretrained, kept.tuner) == (
        ("vgg",),
        3,
        False,
        False,
        "random",
    )
    assert (given.archs, given.trials, given.final_fit, given.pretrained) == (
        ("baseline", "vgg"),
        5,
        True,
        False,
    )


def test_every_setting_has_help_and_catdog_train_shares_the_defaults():
    from catdog.train import train

    for name, (info, _) in settings.declared().items():
        assert info.description, f"{name} has no help"
    signature = inspect.signature(train).parameters
    options = {p.name: p.default for p in training.train.params}
    for name in (
        "batch_size",
        "epochs",
        "seed",
        "patience",
        "precision",
        "pretrained",
        "experiment",
    ):
        assert signature[name].default == options[name] == settings.default(name), name


def test_the_docs_list_every_key_with_its_default():
    text = (ROOT / "docs" / "sweeps.md").read_text()
    block = text.split("Every other key of a sweep file, with its default")[1]
    block = block.split("```toml\n")[1].split("```")[0]
    listed = {}
    for line in block.splitlines():
        key, _, rest = line.partition(" = ")
        listed[key.strip()] = rest
    assert set(listed) == set(settings.declared()) - {"hp"}, "every key but [hp] (its section)"
    for key, rest in listed.items():
        value, _, comment = rest.partition("#")
        if "default:" in comment or key == "name":
            continue  # a computed default, stated in words
        expected = settings.default(key)
        expected = list(expected) if isinstance(expected, tuple) else expected  # TOML's lists
        assert tomllib.loads(f"v = {value}")["v"] == expected, key


# ---------------------------------------------------------------------------- the [hp] table
def test_a_typo_under_the_global_hp_table_is_refused_naming_the_declared_names(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('archs = ["baseline", "vgg"]\n[hp]\ndropuot = 0.3\n')
    with pytest.raises(CatdogError) as info:
        sweepfile.search_spaces(sweepfile.load(path))
    assert str(info.value) == (
        "hyperparameter(s) 'dropuot' under [hp] are declared by none of baseline, vgg; they "
        "declare: augment, blocks, dropout, ema, label_smoothing, lr, lr_schedule, optimizer, rotate, "
        "translate, weight_decay, width"
    )


def test_a_global_name_some_architecture_declares_is_fine(tmp_path):
    path = tmp_path / "narrow.toml"
    path.write_text('archs = ["baseline", "vgg"]\n[hp]\ndropout = 0.3\nwidth = [16, 32]\n')
    spaces = sweepfile.search_spaces(sweepfile.load(path))
    assert spaces["vgg"].values["dropout"] == 0.3
    assert [h.values for h in spaces["vgg"].space if h.name == "width"] == [[16, 32]]
    assert not {"dropout", "width"} & set(spaces["baseline"].values), "baseline leaves them out"


def test_the_cli_refuses_a_global_hp_typo_in_one_line_before_reading_data(workdir):
    (workdir / "typo.toml").write_text('archs = ["baseline"]\n[hp]\nlrr = 0.01\n')
    result = CliRunner().invoke(main, ["sweep", "typo.toml", "--data", "nowhere"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: hyperparameter(s) 'lrr' under [hp] are declared by none of baseline; they "
        "declare: augment, ema, label_smoothing, lr, lr_schedule, optimizer, rotate, translate, "
        "weight_decay"
    ]
