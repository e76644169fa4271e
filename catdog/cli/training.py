"""`catdog train`, `catdog sweep` and `catdog distributed`: the commands that fit models."""

from __future__ import annotations

import json
import os
import sys
import types
import typing

import click

from catdog import keys, settings
from catdog.cli.common import (
    DATA_HELP,
    IMAGE_SIZE,
    LEARNING_RATE,
    PORT,
    POSITIVE,
    SEED,
    _friendly,
    _tensorflow,
)
from catdog.errors import CatdogError
from catdog.runtime import PRECISIONS
from catdog.search import strategies
from catdog.settings import default


@click.command()
@click.option("--arch", required=True, help="A registered architecture (see `catdog archs`).")
@click.option("--data", default=None, help=DATA_HELP)
@click.option(
    "--image-size", type=IMAGE_SIZE, default=None, help="Default: the architecture's own."
)
@click.option("--batch-size", type=POSITIVE, default=default("batch_size"), show_default=True)
@click.option("--epochs", type=POSITIVE, default=default("epochs"), show_default=True)
@click.option("--lr", type=LEARNING_RATE, default=None, help="Default: the architecture's default.")
@click.option("--seed", type=SEED, default=default("seed"), show_default=True)
@click.option(
    "--patience",
    type=POSITIVE,
    default=default("patience"),
    show_default=True,
    help="Early-stopping patience on val_accuracy (best weights are restored).",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default=default("precision"),
    show_default=True,
    help="auto: fp16 on a GPU, fp32 on a CPU (only a sweep's plan times bf16 against "
    "fp32, per architecture, on a CPU with AMX).",
)
@click.option(
    "--pretrained/--no-pretrained",
    default=default("pretrained"),
    show_default=True,
    help="ImageNet weights for the families that have them (transfer).",
)
@click.option(
    "--experiment",
    default=None,
    help="MLflow experiment (default: one per dataset, named as the dataset is).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="NAME=VALUE",
    help="Fix any hyperparameter, e.g. --set dropout=0.3 --set optimizer=sgd.",
)
@_friendly
@_tensorflow
def train(
    arch,
    data,
    image_size,
    batch_size,
    epochs,
    lr,
    seed,
    patience,
    precision,
    pretrained,
    experiment,
    overrides,
):
    """Train one architecture and record the run in MLflow."""
    from catdog.train import train as run_train

    result = run_train(
        arch,
        data,
        image_size=image_size,
        batch_size=batch_size,
        epochs=epochs,
        lr=lr,
        seed=seed,
        patience=patience,
        precision=precision,
        pretrained=pretrained,
        experiment=experiment,
        hparams=_parse_overrides(overrides),
    )
    click.echo(
        json.dumps(
            {
                "run_id": result.run_id,
                "model_uri": result.model_uri,
                **result.summary,
                "fit_verdict": result.verdict,
                "seconds": round(result.seconds, 1),
            },
            indent=2,
            ensure_ascii=False,
        )
    )


def _parse_overrides(pairs) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise CatdogError(f"--set expects NAME=VALUE, got {pair!r}")
        name, raw = pair.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[name.strip()] = value
    return out


def setting_options(model: type = settings.SweepConfig, choices: dict | None = None):
    """A decorator adding an option for each of MODEL's settings that has one (`Setting.option`),
    with the setting's help and default. CHOICES: the choices of a setting whose values are
    checked in a layer above the settings' (the strategy). Every option defaults to None, so
    an option left out never overrides the sweep file."""

    def decorate(fn):
        for name, (info, setting) in reversed(settings.declared(model).items()):
            if setting.option:
                fn = _setting_option(name, info, setting, (choices or {}).get(name))(fn)
        return fn

    return decorate


def _setting_option(name: str, info, setting: settings.Setting, choices):
    """The option of one setting: a --x/--no-x pair for a bool, repeatable for a list, a choice
    for a Literal, an integer range where the setting gives bounds."""
    flag = f"--{name.replace('_', '-')}" if setting.option is True else setting.option
    value = _bare(info.annotation)
    kind = typing.get_origin(value)
    extra: dict = {}
    if value is bool:
        flag = f"{flag}/--no-{flag.removeprefix('--')}"
    elif kind is tuple:
        extra = {"multiple": True}
    elif choices or kind is typing.Literal:
        extra = {"type": click.Choice(choices or typing.get_args(value))}
    elif setting.bounds:
        extra = {"type": click.IntRange(*setting.bounds)}
    shown = info.get_default(call_default_factory=True)
    shown = {True: "on", False: "off"}.get(shown, shown) if isinstance(shown, bool) else shown
    said = "" if shown in (None, ()) else f" Default: {shown}."
    more = " Repeat the option for several." if kind is tuple else ""
    return click.option(
        flag,
        name,
        default=None,
        metavar=setting.metavar,
        help=info.description + said + more,
        **extra,
    )


def _bare(annotation):
    """The type under Annotated[...] and Optional[...]: bool, int, str, tuple or Literal."""
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        else:
            return annotation


def sweep_command(model: type = settings.SweepConfig) -> click.Command:
    """`catdog sweep`, with an option for each of MODEL's settings that has one: a subclass of
    SweepConfig that declares another setting has it on the command line too."""

    @click.command(name="sweep")
    @click.argument("sweep_file", required=False, type=click.Path())
    @setting_options(model, choices={"strategy": strategies.names()})
    @click.option("--fresh", is_flag=True, help="Start over instead of resuming this sweep.")
    @click.option(
        "--dry-run",
        is_flag=True,
        help="Measure this machine, print the plan, and stop before the first trial.",
    )
    @click.option(
        "--register",
        "then_register",
        is_flag=True,
        help="Then register the sweep's champion (as `catdog register --sweep RUN_ID`).",
    )
    @click.option(
        "--name",
        "model_name",
        default=None,
        help="With --register: the registered model's name (default: the dataset's "
        "name, catdog for Dogs-vs-Cats).",
    )
    @_friendly
    @_tensorflow
    def sweep(sweep_file, fresh, dry_run, then_register, model_name, **options):
        """Run (or resume) a KerasTuner sweep over architectures, tracked in MLflow."""
        from catdog import sweepfile
        from catdog.data.identity import check_name

        if model_name:  # refused now, not after the sweep
            check_name(model_name)
        _run_sweep(
            sweepfile.load(sweep_file, model, **options), fresh, dry_run, then_register, model_name
        )

    return sweep


def _run_sweep(cfg, fresh: bool, dry_run: bool, then_register: bool, model_name) -> None:
    from catdog.search import sweep as sweep_mod

    # Without a budget the plan's estimate is the only warning of a long sweep: ask, but only
    # a person at a terminal (never CI, a pipe or make -j).
    def ask(plan):
        if cfg.budget is None and sys.stdin.isatty() and not os.environ.get("CI"):
            return click.confirm(
                f"no budget given; {plan.summary()}. Start?", default=True, err=True
            )
        return True

    result = sweep_mod.run(cfg, fresh=fresh, confirm=ask, dry_run=dry_run)
    if not result.started:
        click.echo(
            "dry run: the plan above is what `catdog sweep` without --dry-run would do"
            if dry_run
            else "sweep not started; give it a budget (--budget 45m) to plan "
            "it to the time you have",
            err=True,
        )
        return
    click.echo(
        json.dumps(
            {
                "sweep": result.key,
                "parent_run_id": result.parent_run_id,
                "stopped_early": result.stopped_early,
                "final_fit": result.final,
                "seconds": round(result.seconds, 1),
                "best": {
                    a: {
                        keys.OBJECTIVE: r.get(keys.best(keys.OBJECTIVE)),
                        "run_id": r.get("run_id"),
                        "hyperparameters": r.get("hyperparameters"),
                    }
                    for a, r in result.archs.items()
                },
            },
            indent=2,
            default=str,
            ensure_ascii=False,
        )
    )
    if then_register:
        from catdog.register import register as run_register

        r = run_register(result.parent_run_id, name=model_name, experiment=result.experiment)
        click.echo(
            f"registered {r.name} version {r.version} ({r.arch}, run {r.run_id}): test "
            f"accuracy {r.test['accuracy']:.4f} (95% interval {r.test_interval[0]:.3f}"
            f"-{r.test_interval[1]:.3f}{', flip TTA' if r.tta else ''}); {r.alias} "
            f"{'is now this version' if r.promoted else 'not moved'}: {r.reason}",
            err=True,
        )
        click.echo(
            f"sweep in MLflow experiment {result.experiment!r}; use the model: catdog "
            f"predict --model models:/{r.name}@{r.alias} PHOTO ..., or make serve "
            f"MODEL={r.name}",
            err=True,
        )


sweep = sweep_command()


@click.command()
@click.argument("sweep_file", required=False, type=click.Path())
@click.option("--data", default=None, help=DATA_HELP)
@click.option("--workers", type=POSITIVE, default=2, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--oracle-port",
    type=PORT,
    default=8000,
    show_default=True,
    help="The chief serves architecture i's oracle on this port + i.",
)
@click.option(
    "--tracking-port",
    type=PORT,
    default=5001,
    show_default=True,
    help="Port of the MLflow server started here (unless MLFLOW_TRACKING_URI is one).",
)
@click.option(
    "--backend-store-uri",
    metavar="URI",
    default=None,
    help="Database of the MLflow server started here, e.g. "
    "postgresql://user@127.0.0.1:5432/mlflow (default: sqlite:///mlruns/mlflow.db);"
    " artifacts stay in mlruns/artifacts.",
)
@click.option("--fresh", is_flag=True, help="Start over instead of resuming this sweep.")
@click.option(
    "--register",
    "then_register",
    is_flag=True,
    help="Then register the sweep's champion in the tracking server's store.",
)
@click.option(
    "--name",
    "model_name",
    default=None,
    help="With --register: the registered model's name (default: the dataset's name).",
)
@_friendly
def distributed(
    sweep_file,
    data,
    workers,
    host,
    oracle_port,
    tracking_port,
    backend_store_uri,
    fresh,
    then_register,
    model_name,
):
    """One sweep as a tracking server, a KerasTuner chief and WORKERS workers on this machine.

    The sweep file's strategy must hand out trials (`compare`, e.g. experiments/cpu-compare.toml;
    not focus or a race). The data is prepared once, here; the chief plans the sweep to its
    budget, stops handing out trials when it is used, and runs the final fit. A worker that
    dies (it crashed or was killed) is restarted under its id and re-runs its trial, in any
    architecture, at most twice; if it dies again the sweep stops, and running the same command
    again resumes it."""
    from catdog.data.identity import check_name
    from catdog.distributed import launch

    if model_name:  # refused now, not after the sweep
        check_name(model_name)

    sys.exit(
        launch(
            sweep_file,
            data,
            workers=workers,
            host=host,
            oracle_port=oracle_port,
            tracking_port=tracking_port,
            backend_store_uri=backend_store_uri,
            fresh=fresh,
            register=then_register,
            name=model_name,
        )
    )
