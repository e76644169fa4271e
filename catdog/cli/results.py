"""`catdog compare`, `report`, `register`, `evaluate` and `predict`: what a sweep produced,
and the chosen model put to use."""

from __future__ import annotations

import json
import sys

import click

from catdog import keys
from catdog.cli.common import EXPERIMENT_HELP, _friendly, _tensorflow
from catdog.compare import FORMATS as COMPARE_FORMATS
from catdog.search import strategies

DEFAULT_MODEL = "models:/catdog@champion"
MODEL_HELP = (
    "models:/, runs:/ or a logged model's URI, or a local path; another dataset's "
    "champion is models:/NAME@champion (`catdog register` prints NAME)."
)
METRIC_HELP = (
    "Validation metric that picks the model (never a test metric). Default: the sweep's "
    f"objective: {keys.VAL_BALANCED_ACCURACY} where its dataset is imbalanced, else "
    f"{keys.OBJECTIVE}."
)
TTA = click.option(
    "--tta/--no-tta",
    default=None,
    help="Flip test-time augmentation (each photo averaged with its mirror image) "
    "on or off; default: as the model ships, which is how it serves.",
)


@click.command()
@click.option("--sweep", default="latest", show_default=True, help="A sweep's parent run id.")
@click.option("--arch", "archs", multiple=True, help="Architectures to show side by side.")
@click.option("--metric", default=None, help=METRIC_HELP)
@click.option(
    "--format", "fmt", type=click.Choice(COMPARE_FORMATS), default="table", show_default=True
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(),
    default="comparison.png",
    show_default=True,
    help="Where to write the comparison plot.",
)
@click.option(
    "--test",
    "test",
    is_flag=True,
    help="Also test the top two on the held-out split: test accuracy and McNemar's "
    "exact test between them.",
)
@click.option("--experiment", default=None, help=EXPERIMENT_HELP)
@_friendly
def compare(sweep, archs, metric, fmt, plot_path, test, experiment):
    """Compare a sweep's architectures: best trial, mean ± std over repeats, fit verdict."""
    from catdog import compare as compare_mod
    from catdog.heldout import describe

    result = compare_mod.compare_and_plot(
        sweep, tuple(archs), metric, experiment, plot_path, test=test
    )
    click.echo(compare_mod.render(result.table, fmt))
    if fmt in ("table", "markdown"):
        click.echo(
            f'\nranked by the {result.table.attrs["ranked_by"]}; "within noise": the '
            "95% intervals overlap the top architecture's; search strategy "
            f"{result.table.attrs['strategy']!r}: "
            f"{strategies.note(result.table.attrs['strategy'])}"
        )
        if result.significance:
            click.echo(describe(result.significance))
    where = f" and logged to sweep run {result.logged_to}" if result.logged_to else ""
    click.echo(f"plot written to {result.plot}{where}", err=True)


@click.command()
@click.option("--sweep", default="latest", show_default=True, help="A sweep's parent run id.")
@click.option(
    "--out", type=click.Path(), default=None, help="Default: reports/<sweep name>-<run id>.html."
)
@click.option("--metric", default=None, help=METRIC_HELP)
@click.option("--experiment", default=None, help=EXPERIMENT_HELP)
@_friendly
@_tensorflow
def report(sweep, out, metric, experiment):
    """Write a sweep's report: one self-contained HTML file, also logged to the sweep's run."""
    from catdog.report import write_report

    path = write_report(sweep, out, metric=metric, experiment=experiment)
    click.echo(str(path))


@click.command()
@click.option("--sweep", default="latest", show_default=True, help="A sweep's parent run id.")
@click.option("--arch", default=None, help="Only consider this architecture.")
@click.option("--metric", default=None, help=METRIC_HELP)
@click.option(
    "--name",
    default=None,
    help="Registered model name (default: the sweep's dataset's name, catdog for Dogs-vs-Cats).",
)
@click.option("--alias", default="champion", show_default=True)
@click.option("--force", is_flag=True, help="Move the alias even if the model is not better.")
@click.option("--experiment", default=None, help=EXPERIMENT_HELP)
@click.option(
    "--tta/--no-tta",
    default=None,
    help="Register the model with or without flip test-time augmentation (each photo "
    "averaged with its mirror image): it serves with it and is tested with it "
    "(default: the model's own setting, on where the sweep found on validation "
    "that it helps).",
)
@_friendly
@_tensorflow
def register(sweep, arch, metric, name, alias, force, experiment, tta):
    """Register a sweep's best model; make it the champion if it beats the current one on test."""
    from catdog.register import register as run_register

    r = run_register(sweep, arch, metric, name, alias, force, experiment, tta=tta)
    click.echo(
        json.dumps(
            {
                "name": r.name,
                "version": r.version,
                "arch": r.arch,
                "run_id": r.run_id,
                metric: r.val_metric,
                "test": r.test,
                "test_accuracy_ci95": r.test_interval,
                "tta": r.tta,
                "alias": r.alias,
                "promoted": r.promoted,
                "reason": r.reason,
                "new_version": r.created,
                "vs_runner_up": r.significance,
            },
            indent=2,
            ensure_ascii=False,
        )
    )
    click.echo(
        f"use it: catdog predict --model models:/{r.name}@{r.alias} PHOTO ..., or make "
        f"serve MODEL={r.name}",
        err=True,
    )


@click.command()
@click.option("--model", "model_uri", default=DEFAULT_MODEL, show_default=True, help=MODEL_HELP)
@click.option(
    "--data",
    required=True,
    type=click.Path(),
    help="A labelled folder (<class>/* or <split>/<class>/*; uses test/ when there is "
    "one), or a prepared dataset (its test split).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@TTA
@_friendly
@_tensorflow
def evaluate(model_uri, data, fmt, tta):
    """Evaluate a model on any labelled folder."""
    from catdog.inference import evaluate as run_evaluate

    r = run_evaluate(model_uri, data, tta=tta)
    for skipped in r["skipped"]:
        click.echo(f"skipped {skipped['path']}: {skipped['reason']}", err=True)
    if fmt == "json":
        click.echo(json.dumps(r, indent=2, ensure_ascii=False))
    else:
        click.echo(evaluation_table(r))
    _say_which_model(model_uri)


def evaluation_table(r: dict) -> str:
    """An evaluation as text: headline figures, precision and recall per class, the confusion
    matrix (rows true, columns predicted)."""
    classes = r["classes"]
    width = max(6, *(len(c) for c in classes))
    auc = "roc_auc   " if len(classes) == 2 else "roc_auc   (one-vs-rest) "
    lines = [
        f"model     {r['model']}",
        f"data      {r['data']} ({r['n']} images, {len(r['skipped'])} unreadable skipped)",
        f"flip TTA  {'on' if r['tta'] else 'off'}"
        + (
            " (as the model ships)"
            if r["tta"] == r["model_tta"]
            else f" (the model ships with it {'on' if r['model_tta'] else 'off'})"
        ),
        f"accuracy  {r['accuracy']:.4f}",
        f"loss      {r['loss']:.4f}",
        f"{auc}{r['auc']:.4f}",
        f"macro_f1  {r[keys.MACRO_F1]:.4f}",
        f"balanced_accuracy (mean recall)  {r[keys.BALANCED_ACCURACY]:.4f}",
        "",
        f"{'class':<{width}}  precision  recall",
    ]
    lines += [
        f"{c:<{width}}  {r[keys.per_class('precision', c)]:9.4f}  "
        f"{r[keys.per_class('recall', c)]:6.4f}"
        for c in classes
    ]
    lines += [
        "",
        "confusion (rows true, cols predicted)",
        " " * width + "".join(f" {c:>{width}}" for c in classes),
    ]
    lines += [
        f"{c:<{width}}" + "".join(f" {n:>{width}d}" for n in row)
        for c, row in zip(classes, r["confusion"])
    ]
    return "\n".join(lines)


@click.command()
# readable=False: click would refuse the whole command over one unreadable file; predict reports it.
@click.argument("paths", nargs=-1, required=True, type=click.Path(readable=False))
@click.option("--model", "model_uri", default=DEFAULT_MODEL, show_default=True, help=MODEL_HELP)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
@TTA
@_friendly
@_tensorflow
def predict(paths, model_uri, fmt, tta):
    """Label images (files or folders) with the model's classes, with a probability per class
    (p_<class>).

    A file that cannot be read gets an error line of its own on stderr, the others are still
    labelled, and the exit status is 1."""
    import csv
    import io

    from catdog.inference import predict as run_predict

    preds = run_predict(list(paths), model_uri, tta=tta)
    rows = [p.row() for p in preds]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        click.echo(buf.getvalue().rstrip())
    else:
        for p in preds:
            if not p.error:
                probs = "\t".join(
                    f"{keys.probability(c)}={v:.4f}" for c, v in p.probabilities.items()
                )
                click.echo(f"{p.path}\t{p.label}\t{probs}")
    _say_which_model(model_uri)
    failed = [p for p in preds if p.error]
    for p in failed:  # json and csv carry the errors too; stderr names them in every format
        click.echo(f"error: cannot read {p.path}: {p.error}", err=True)
    if failed:
        click.echo(f"error: {len(failed)} of {len(preds)} images could not be read", err=True)
        sys.exit(1)


def _say_which_model(model_uri: str) -> None:
    """On stderr, when --model was left at its default: which registered model answered, and
    the others there are to choose from."""
    from click.core import ParameterSource

    from catdog.tracking import modelstore

    if click.get_current_context().get_parameter_source("model_uri") != ParameterSource.DEFAULT:
        return
    others = [n for n in modelstore.registered_names() if not model_uri.startswith(f"models:/{n}@")]
    also = f"; also registered: {', '.join(others)}" if others else ""
    click.echo(
        f"model {model_uri} (the default){also}; --model models:/NAME@champion chooses another",
        err=True,
    )
