"""Every `catdog.*` tag key, defined once: runs, trials and registered model versions carry them,
`mlflow ui` shows them as columns, and `compare`/`register` find runs by them.

A run's `KIND` says which level of the record it is: a plain training run, a sweep's parent run,
an architecture's run under it, and under that one run per tuner trial and per repeat (the best
configuration retrained with another seed).
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import catdog

_PREFIX = "catdog."

# -- what a run is
KIND = "catdog.kind"
KIND_TRAIN = "train"
KIND_SWEEP = "sweep"
KIND_ARCH = "arch"
KIND_TRIAL = "trial"
KIND_REPEAT = "repeat"
KIND_FINAL = "final"  # the winner retrained on train+val: what `register` promotes
KIND_CURVE = "curve"  # the champion's configuration on a fraction of the train split

ARCH = "catdog.arch"
DATASET_DIGEST = "catdog.dataset_digest"
FIT_VERDICT = "catdog.fit_verdict"  # "underfitting", "good fit" or "overfitting from epoch N"

# -- a sweep's runs
SWEEP_KEY = "catdog.sweep_key"  # identity of a sweep for resuming (config + data digest)
TRIAL_ID = "catdog.trial_id"
TUNER_ID = "catdog.tuner_id"  # which KerasTuner worker ran the trial
ORPHANED = "catdog.orphaned"  # a trial run interrupted and superseded by a re-run
BEST_TRIAL = "catdog.best_trial"  # "true" on each architecture's best trial run
BEST_RUN_ID = "catdog.best_run_id"  # on an architecture's run and on the sweep's parent run
BEST_ARCH = "catdog.best_arch"  # on the sweep's parent run
TIME_LIMITED = "catdog.time_limited"
# On a distributed sweep's parent run: the Unix time its chief ends the search at; workers stop a
# trial there (their clocks are the hosts', so keep them in step, e.g. NTP).
SEARCH_DEADLINE = "catdog.search_deadline"
TTA = "catdog.tta"  # flip TTA is part of the model: a run's (modelstore.set_tta), a version's
SOURCE_RUN_ID = "catdog.source_run_id"  # on a final fit: the trial run it retrains
REPEAT = "catdog.repeat"  # which repeat (0, 1, ...) of the architecture's best configuration
CURVE_VERDICT = "catdog.curve_verdict"  # on the sweep's parent run: would more photos help?

# -- registered model versions
RUN_ID = "catdog.run_id"  # the run whose model the version holds
SWEEP_RUN_ID = "catdog.sweep_run_id"

# -- the environment a run ran in
VERSION = "catdog.version"
PACKAGES = ("tensorflow", "keras", "keras-tuner", "mlflow", "numpy")
GIT_COMMIT = "mlflow.source.git.commit"
PARENT_RUN_ID = "mlflow.parentRunId"

TRUE, FALSE = "true", "false"


def package(name: str) -> str:
    """The tag holding an installed package's version."""
    return f"{_PREFIX}pkg.{name}"


def metric(name: str) -> str:
    """A metric copied onto a registered model version as a tag (e.g. val_accuracy)."""
    return f"{_PREFIX}{name}"


def environment_tags() -> dict[str, str]:
    """catdog's version, the versions of the packages that decide results, and the git commit."""
    tags = {VERSION: catdog.__version__}
    for pkg in PACKAGES:
        try:
            tags[package(pkg)] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(catdog.__file__).parent,
            timeout=5,
        )
        if commit.returncode == 0:
            tags[GIT_COMMIT] = commit.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return tags
