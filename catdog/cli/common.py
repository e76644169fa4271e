"""What every command module of the click layer shares: option types, the help text of
--data, and the decorators that turn user errors into one sentence and start TensorFlow."""

from __future__ import annotations

import functools
import sys

import click

from catdog.errors import CatdogError
from catdog.tracking.runs import Terminated

IMAGE_SIZE = click.IntRange(32, 1024)  # the notebook CNN's three valid convs need 32 px
POSITIVE = click.IntRange(min=1)
PORT = click.IntRange(1, 65535)
LEARNING_RATE = click.FloatRange(min=0, min_open=True, max=10)
SEED = click.IntRange(0, 2**32 - 1)  # what keras.utils.set_random_seed accepts

DATA_HELP = (
    "A prepared dataset, or a zip/folder to prepare once. Default: the latest prepared "
    "dataset, else download one."
)


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


EXPERIMENT_HELP = (
    "MLflow experiment whose latest sweep is meant (default: the latest sweep in "
    "any experiment; each dataset sweeps in an experiment of its own)."
)
