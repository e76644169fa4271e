"""The `catdog` command: a thin click layer. Each command parses options, calls one library
function that returns a value, and prints it. Policy (which data, which metric may choose a
model, what is logged where) lives in those functions, so Python callers get the same rules.
Errors a user can cause are one sentence and a non-zero exit.

The commands live by group in `data`, `training`, `results` and `curve`; what they share
(option types, the error and TensorFlow decorators) in `common`. This module is the `main`
group that holds them: the entry point `catdog.cli:main`."""

from __future__ import annotations

import os

import click

from catdog.cli import curve, data, results, training
from catdog.log import VERBOSE_ENV
from catdog.log import setup as setup_logging

EPILOG = """\b
Also here, not as subcommands:
  make bench       the performance benchmark (python -m benchmarks, beside the package)
  make ui          mlflow ui on the project's store, to compare runs
  make serve       mlflow models serve for models:/catdog@champion
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(package_name="catdog")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help=f"Debug lines, and TensorFlow's own start-up logs (or {VERBOSE_ENV}=1).",
)
def main(verbose):
    """Compare CNN architectures on your labelled images (Dogs-vs-Cats first), every experiment
    tracked in MLflow."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # subprocesses (distributed workers) inherit it
    setup_logging()


for _command in (
    data.data,
    data.archs,
    training.train,
    training.sweep,
    training.distributed,
    results.compare,
    results.report,
    results.register,
    results.evaluate,
    results.predict,
    curve.curve,
):
    main.add_command(_command)
del _command
