"""`catdog train`, `catdog sweep` and `catdog distributed`: the commands that fit models."""

from __future__ import annotations

import json
import os
import sys

import click

from catdog import keys
from catdog.cli.common import (DATA_HELP, IMAGE_SIZE, LEARNING_RATE, PORT, POSITIVE, SEED,
                               _friendly, _tensorflow)
from catdog.errors import CatdogError
from catdog.runtime import PRECISIONS
from catdog.search import strategies
from catdog.sweepfile import TUNERS


@click.command()
@click.option("--arch", required=True, help="A registered architecture (see `catdog archs`).")
@click.option("--data", default=None, help=DATA_HELP)
@click.option("--image-size", type=IMAGE_SIZE, default=None,
              help="Default: the architecture's own.")
@click.option("--batch-size", type=POSITIVE, default=32, show_default=True)
@click.option("--epochs", type=POSITIVE, default=10, show_default=True)
@click.option("--lr", type=LEARNING_RATE, default=None,
              help="Default: the architecture's default.")
@click.option("--seed", type=SEED, default=1337, show_default=True)
@click.option("--patience", type=POSITIVE, default=3, show_default=True,
              help="Early-stopping patience on val_accuracy (best weights are restored).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="auto: fp16 on GPUs, fp32 on CPUs (bf16 measured no faster there).")
@click.option("--pretrained/--no-pretrained", default=True, show_default=True,
              help="ImageNet weights for the families that have them (transfer).")
@click.option("--experiment", default="catdog", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="NAME=VALUE",
              help="Fix any hyperparameter, e.g. --set dropout=0.3 --set optimizer=sgd.")
@_friendly
@_tensorflow
def train(arch, data, image_size, batch_size, epochs, lr, seed, patience, precision, pretrained,
          experiment, overrides):
    """Train one architecture and record the run in MLflow."""
    from catdog.train import train as run_train

    result = run_train(arch, data, image_size=image_size, batch_size=batch_size, epochs=epochs,
                       lr=lr, seed=seed, patience=patience, precision=precision,
                       pretrained=pretrained, experiment=experiment,
                       hparams=_parse_overrides(overrides))
    click.echo(json.dumps({"run_id": result.run_id, "model_uri": result.model_uri,
                           **result.summary, "fit_verdict": result.verdict,
                           "seconds": round(result.seconds, 1)}, indent=2))


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


@click.command()
@click.argument("sweep_file", required=False, type=click.Path())
@click.option("--arch", "archs", multiple=True, help="Architectures to sweep (repeat).")
@click.option("--tuner", type=click.Choice(TUNERS), default=None)
@click.option("--max-trials", "trials", type=POSITIVE, default=None,
              help="Trials per architecture.")
@click.option("--epochs", type=POSITIVE, default=None, help="Maximum epochs per trial.")
@click.option("--repeats", type=click.IntRange(0, 100), default=None,
              help="Retrain each architecture's best configuration this many times (0, or 2 "
                   "and more) with other seeds: mean, std and 95% CI in `compare`.")
@click.option("--image-size", type=IMAGE_SIZE, default=None)
@click.option("--batch-size", type=POSITIVE, default=None)
@click.option("--seed", type=SEED, default=None)
@click.option("--budget", default=None, metavar="DURATION",
              help="Time for the whole sweep, e.g. 45m or 2h: speeds are measured first and "
                   "trials and epochs planned to fit it.")
@click.option("--strategy", type=click.Choice(strategies.names()), default=None,
              help="focus: a short screen, then one long fit of the winner (the best model in "
                   "the budget); compare: every architecture the same budget (the fair "
                   "comparison); best: race them with Hyperband.")
@click.option("--final-fit/--no-final-fit", default=None,
              help="Retrain the winner on train+val for its best epoch count (default: on).")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None)
@click.option("--pretrained/--no-pretrained", default=None,
              help="ImageNet weights for the families that have them (default: on).")
@click.option("--data", default=None, help=DATA_HELP)
@click.option("--experiment", default=None, help="MLflow experiment (default: catdog).")
@click.option("--fresh", is_flag=True, help="Start over instead of resuming this sweep.")
@click.option("--dry-run", is_flag=True,
              help="Measure this machine, print the plan, and stop before the first trial.")
@click.option("--register", "then_register", is_flag=True,
              help="Then register the sweep's champion (as `catdog register --sweep RUN_ID`).")
@_friendly
@_tensorflow
def sweep(sweep_file, fresh, dry_run, then_register, **options):
    """Run (or resume) a KerasTuner sweep over architectures, tracked in MLflow."""
    from catdog.search import sweep as sweep_mod
    from catdog import sweepfile

    cfg = sweepfile.load(sweep_file, **options)
    # Without a budget the plan's estimate is the only warning of a long sweep: ask, but only
    # a person at a terminal (never CI, a pipe or make -j).
    def ask(plan):
        if dry_run:
            raise sweep_mod.NotStarted("dry run: the plan above is what `catdog sweep` without "
                                       "--dry-run would do")
        if cfg.budget is None and sys.stdin.isatty() and not os.environ.get("CI"):
            return click.confirm(f"no budget given; {plan.summary()}. Start?", default=True,
                                 err=True)
        return True

    result = sweep_mod.run(cfg, fresh=fresh, confirm=ask)
    click.echo(json.dumps({"sweep": result.key, "parent_run_id": result.parent_run_id,
                           "stopped_early": result.stopped_early, "final_fit": result.final,
                           "seconds": round(result.seconds, 1),
                           "best": {a: {keys.OBJECTIVE: r.get(keys.best(keys.OBJECTIVE)),
                                        "run_id": r.get("run_id"),
                                        "hyperparameters": r.get("hyperparameters")}
                                    for a, r in result.archs.items()}}, indent=2, default=str))
    if then_register:
        from catdog.register import register as run_register

        r = run_register(result.parent_run_id, experiment=cfg.experiment)
        click.echo(f"registered {r.name} version {r.version} ({r.arch}, run {r.run_id}): test "
                   f"accuracy {r.test['accuracy']:.4f} (95% interval {r.test_interval[0]:.3f}"
                   f"-{r.test_interval[1]:.3f}{', flip TTA' if r.tta else ''}); {r.alias} "
                   f"{'is now this version' if r.promoted else 'not moved'}: {r.reason}",
                   err=True)


@click.command()
@click.argument("sweep_file", required=False, type=click.Path())
@click.option("--data", default=None, help=DATA_HELP)
@click.option("--workers", type=POSITIVE, default=2, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--oracle-port", type=PORT, default=8000, show_default=True,
              help="The chief serves architecture i's oracle on this port + i.")
@click.option("--tracking-port", type=PORT, default=5001, show_default=True,
              help="Port of the MLflow server started here (unless MLFLOW_TRACKING_URI is one).")
@click.option("--backend-store-uri", metavar="URI", default=None,
              help="Database of the MLflow server started here, e.g. "
                   "postgresql://user@127.0.0.1:5432/mlflow (default: sqlite:///mlruns/mlflow.db);"
                   " artifacts stay in mlruns/artifacts.")
@click.option("--fresh", is_flag=True, help="Start over instead of resuming this sweep.")
@_friendly
def distributed(sweep_file, data, workers, host, oracle_port, tracking_port, backend_store_uri,
                fresh):
    """One sweep as a tracking server, a KerasTuner chief and WORKERS workers on this machine.

    The sweep file's strategy must hand out trials (`compare`, e.g. experiments/cpu-compare.toml;
    not a race). A worker that dies (it crashed or was killed) is restarted under its id and
    re-runs its trial, in any architecture, at most twice; if it dies again the sweep stops, and
    running the same command again resumes it."""
    from catdog.distributed import launch

    sys.exit(launch(sweep_file, data, workers=workers, host=host, oracle_port=oracle_port,
                    tracking_port=tracking_port, backend_store_uri=backend_store_uri,
                    fresh=fresh))
