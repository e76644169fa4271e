"""The `catdog` command: a thin click layer. Each command parses options, calls one library
function that returns a value, and prints it. Policy (which data, which metric may choose a
model, what is logged where) lives in those functions, so Python callers get the same rules.
Errors a user can cause are one sentence and a non-zero exit."""

from __future__ import annotations

import functools
import json
import os
import sys

import click

from catdog.compare import FORMATS as COMPARE_FORMATS
from catdog.data.download import SOURCES
from catdog.errors import CatdogError
from catdog.log import VERBOSE_ENV, setup as setup_logging
from catdog.runtime import PRECISIONS
from catdog.sweepfile import STRATEGIES, TUNERS
from catdog.tracking.runs import Terminated

EPILOG = """\b
Also here, not as subcommands:
  make bench       the performance benchmark (python -m benchmarks, beside the package)
  make ui          mlflow ui on the project's store, to compare runs
  make serve       mlflow models serve for models:/catdog@champion
"""

IMAGE_SIZE = click.IntRange(32, 1024)  # the notebook CNN's three valid convs need 32 px
POSITIVE = click.IntRange(min=1)
PORT = click.IntRange(1, 65535)
LEARNING_RATE = click.FloatRange(min=0, min_open=True, max=10)
SEED = click.IntRange(0, 2**32 - 1)  # what keras.utils.set_random_seed accepts


def _friendly(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CatdogError as exc:
            click.echo(f"error: {exc}" if exc.exit_code else str(exc), err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:  # runs were closed as KILLED on the way out
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Terminated:
            click.echo("terminated", err=True)
            sys.exit(143)

    return wrapper


def _tensorflow(fn):
    """For commands that use TensorFlow: start it quietly before anything imports it."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from catdog import runtime

        runtime.start()
        return fn(*args, **kwargs)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(package_name="catdog")
@click.option("-v", "--verbose", is_flag=True,
              help=f"Debug lines, and TensorFlow's own start-up logs (or {VERBOSE_ENV}=1).")
def main(verbose):
    """Compare CNN architectures on Dogs-vs-Cats, every experiment tracked in MLflow."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # subprocesses (distributed workers) inherit it
    setup_logging()


# ---------------------------------------------------------------------------------------- data
@main.group()
def data():
    """Get and prepare the photos."""


@data.command("download")
@click.option("--source", type=click.Choice(SOURCES), default=None,
              help="Default: kaggle when credentials exist, else Microsoft's PetImages.")
@click.option("--dataset", default="salader/dogs-vs-cats", show_default=True,
              help="Kaggle dataset slug.")
@click.option("--dest", default="data", show_default=True, type=click.Path())
@_friendly
def data_download(source, dataset, dest):
    """Download the photos (Kaggle API, or PetImages without an account)."""
    from catdog.data.download import download

    click.echo(download(source=source, dataset=dataset, dest=dest))


@data.command("prepare")
@click.argument("source", type=click.Path())
@click.option("--dest", type=click.Path(), default=None,
              help="Default: data/prepared/<source name>.")
@click.option("--val-fraction", type=float, default=0.2, show_default=True)
@click.option("--test-fraction", type=float, default=0.2, show_default=True,
              help="Held out only where the source has no test split.")
@click.option("--seed", type=int, default=1337, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing prepared dataset.")
@_friendly
def data_prepare(source, dest, val_fraction, test_fraction, seed, overwrite):
    """Validate, clean, de-duplicate and split a zip or folder (salader, PetImages or flat)."""
    from catdog.data import prepare, prepared_dir

    result = prepare(source, dest or prepared_dir(source), val_fraction=val_fraction,
                     test_fraction=test_fraction, seed=seed, overwrite=overwrite)
    click.echo(json.dumps({"root": str(result.root), "digest": result.digest,
                           "counts": result.counts}, indent=2))


# --------------------------------------------------------------------------------------- archs
@main.command()
@click.option("--image-size", type=IMAGE_SIZE, default=None,
              help="Count parameters at this size (default: each architecture's own).")
@click.option("--pattern", default="*", show_default=True, help="Filter names, e.g. 'res*'.")
@_friendly
@_tensorflow
def archs(image_size, pattern):
    """List the registered architectures with their parameter counts."""
    from catdog import models

    click.echo(f"{'name':<11} {'family':<9} {'size':>4} {'params':>11}  description")
    for name in models.names(pattern):
        entry = models.get(name)
        size = image_size or entry.default_image_size
        click.echo(f"{name:<11} {entry.family:<9} {size:>4} {entry.param_count(size):>11,}  "
                   f"{entry.description}")


# --------------------------------------------------------------------------------------- train
DATA_HELP = ("A prepared dataset, or a zip/folder to prepare once. Default: the latest prepared "
             "dataset, else download one.")


@main.command()
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


# --------------------------------------------------------------------------------------- sweep
@main.command()
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
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None,
              help="compare: every architecture the same budget (the fair comparison); best: "
                   "race them with Hyperband for the best model in the budget.")
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
    from catdog import sweep as sweep_mod
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
                           "best": {a: {"val_accuracy": r.get("best_val_accuracy"),
                                        "run_id": r.get("run_id"),
                                        "hyperparameters": r.get("hyperparameters")}
                                    for a, r in result.archs.items()}}, indent=2, default=str))
    if then_register:
        from catdog.register import register as run_register

        r = run_register(result.parent_run_id, experiment=cfg.experiment)
        click.echo(f"registered {r.name} version {r.version} ({r.arch}, run {r.run_id}): test "
                   f"accuracy {r.test['accuracy']:.4f}; {r.alias} "
                   f"{'is now this version' if r.promoted else 'not moved'}: {r.reason}",
                   err=True)


@main.command()
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

    A worker that dies during the first architecture's search is restarted and re-runs its
    trial; later on, the sweep is stopped, and running the same command again resumes it."""
    from catdog.distributed import launch

    sys.exit(launch(sweep_file, data, workers=workers, host=host, oracle_port=oracle_port,
                    tracking_port=tracking_port, backend_store_uri=backend_store_uri,
                    fresh=fresh))


# ------------------------------------------------------------------------------------- compare
@main.command()
@click.option("--sweep", default="latest", show_default=True, help="A sweep's parent run id.")
@click.option("--arch", "archs", multiple=True, help="Architectures to show side by side.")
@click.option("--metric", default="val_accuracy", show_default=True)
@click.option("--format", "fmt", type=click.Choice(COMPARE_FORMATS), default="table",
              show_default=True)
@click.option("--plot", "plot_path", type=click.Path(), default="comparison.png",
              show_default=True, help="Where to write the comparison plot.")
@click.option("--test", "test", is_flag=True,
              help="Also test the top two on the held-out split: test accuracy and McNemar's "
                   "exact test between them.")
@click.option("--experiment", default="catdog", show_default=True)
@_friendly
def compare(sweep, archs, metric, fmt, plot_path, test, experiment):
    """Compare a sweep's architectures: best trial, mean ± std over repeats, fit verdict."""
    from catdog import compare as compare_mod
    from catdog.heldout import describe

    result = compare_mod.compare_and_plot(sweep, tuple(archs), metric, experiment, plot_path,
                                          test=test)
    click.echo(compare_mod.render(result.table, fmt))
    if fmt in ("table", "markdown"):
        click.echo(f"\nranked by the {result.table.attrs['ranked_by']}; \"within noise\": the "
                   "95% intervals overlap the top architecture's; search strategy "
                   f"{result.table.attrs['strategy']!r}: "
                   f"{compare_mod.strategy_note(result.table.attrs['strategy'])}")
        if result.significance:
            click.echo(describe(result.significance))
    where = f" and logged to sweep run {result.logged_to}" if result.logged_to else ""
    click.echo(f"plot written to {result.plot}{where}", err=True)


@main.command()
@click.option("--sweep", default="latest", show_default=True, help="A sweep's parent run id.")
@click.option("--out", type=click.Path(), default=None,
              help="Default: reports/<sweep name>-<run id>.html.")
@click.option("--metric", default="val_accuracy", show_default=True)
@click.option("--experiment", default="catdog", show_default=True)
@_friendly
@_tensorflow
def report(sweep, out, metric, experiment):
    """Write a sweep's report: one self-contained HTML file, also logged to the sweep's run."""
    from catdog.report import write_report

    path = write_report(sweep, out, metric=metric, experiment=experiment)
    click.echo(str(path))


# ------------------------------------------------------------------------------------ register
@main.command()
@click.option("--sweep", default="latest", show_default=True, help="A sweep's parent run id.")
@click.option("--arch", default=None, help="Only consider this architecture.")
@click.option("--metric", default="val_accuracy", show_default=True,
              help="Validation metric that picks the model (never a test metric).")
@click.option("--name", default="catdog", show_default=True, help="Registered model name.")
@click.option("--alias", default="champion", show_default=True)
@click.option("--force", is_flag=True, help="Move the alias even if the model is not better.")
@click.option("--experiment", default="catdog", show_default=True)
@click.option("--tta", is_flag=True,
              help="Test-time augmentation: average each test photo with its mirror image.")
@_friendly
@_tensorflow
def register(sweep, arch, metric, name, alias, force, experiment, tta):
    """Register a sweep's best model; make it the champion if it beats the current one on test."""
    from catdog.register import register as run_register

    r = run_register(sweep, arch, metric, name, alias, force, experiment, tta=tta)
    click.echo(json.dumps({"name": r.name, "version": r.version, "arch": r.arch,
                           "run_id": r.run_id, metric: r.val_metric, "test": r.test,
                           "alias": r.alias, "promoted": r.promoted, "reason": r.reason,
                           "new_version": r.created, "vs_runner_up": r.significance},
                          indent=2))


# ------------------------------------------------------------------------- evaluate / predict
@main.command()
@click.option("--model", "model_uri", default="models:/catdog@champion", show_default=True,
              help="models:/, runs:/ or a logged model's URI, or a local path.")
@click.option("--data", required=True, type=click.Path(),
              help="cats/ and dogs/ folders, a salader root (uses test/), or a prepared dataset.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.option("--tta", is_flag=True,
              help="Test-time augmentation: average each photo with its mirror image.")
@_friendly
@_tensorflow
def evaluate(model_uri, data, fmt, tta):
    """Evaluate a model on any labelled folder."""
    from catdog.inference import evaluate as run_evaluate

    r = run_evaluate(model_uri, data, tta=tta)
    for skipped in r["skipped"]:
        click.echo(f"skipped {skipped['path']}: {skipped['reason']}", err=True)
    if fmt == "json":
        click.echo(json.dumps(r, indent=2))
        return
    cm = r["confusion"]
    click.echo(f"model     {r['model']}\ndata      {r['data']} ({r['n']} images, "
               f"{len(r['skipped'])} unreadable skipped)\n"
               f"accuracy  {r['accuracy']:.4f}\nloss      {r['loss']:.4f}\n"
               f"roc_auc   {r['auc']:.4f}\n\n"
               f"class  precision  recall\n"
               f"cat    {r['precision_cat']:9.4f}  {r['recall_cat']:6.4f}\n"
               f"dog    {r['precision_dog']:9.4f}  {r['recall_dog']:6.4f}\n\n"
               f"confusion (rows true, cols predicted)\n"
               f"        cat    dog\ncat  {cm[0][0]:6d} {cm[0][1]:6d}\n"
               f"dog  {cm[1][0]:6d} {cm[1][1]:6d}")


@main.command()
# readable=False: click would refuse the whole command over one unreadable file; predict reports it.
@click.argument("paths", nargs=-1, required=True, type=click.Path(readable=False))
@click.option("--model", "model_uri", default="models:/catdog@champion", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)
@click.option("--tta", is_flag=True,
              help="Test-time augmentation: average each photo with its mirror image.")
@_friendly
@_tensorflow
def predict(paths, model_uri, fmt, tta):
    """Label images (files or folders) as cat or dog, with the probability of "dog".

    A file that cannot be read gets an error line of its own on stderr, the others are still
    labelled, and the exit status is 1."""
    import csv
    import io
    from dataclasses import asdict

    from catdog.inference import predict as run_predict

    preds = run_predict(list(paths), model_uri, tta=tta)
    if fmt == "json":
        click.echo(json.dumps([asdict(p) for p in preds], indent=2))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["path", "label", "p_dog", "error"])
        writer.writeheader()
        writer.writerows(asdict(p) for p in preds)
        click.echo(buf.getvalue().rstrip())
    else:
        for p in preds:
            if not p.error:
                click.echo(f"{p.path}\t{p.label}\tp_dog={p.p_dog:.4f}")
    failed = [p for p in preds if p.error]
    for p in failed:  # json and csv carry the errors too; stderr names them in every format
        click.echo(f"error: cannot read {p.path}: {p.error}", err=True)
    if failed:
        click.echo(f"error: {len(failed)} of {len(preds)} images could not be read", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
