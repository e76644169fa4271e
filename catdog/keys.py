"""Every param and metric key, defined once: Keras names its history by them, `metrics` summarises
them, and MLflow holds them as params and metrics (tag keys live in
`tags`). These are column names in `mlflow ui` and in every comparison, so they are stable.
"""

from __future__ import annotations

import re

# -- metrics
OBJECTIVE = "val_accuracy"  # what every search maximises and every choice is made on
VAL_ACCURACY = OBJECTIVE
TEST_ACCURACY = "test_accuracy"
BEST_EPOCH = "best_epoch"
SECONDS_PER_EPOCH = "seconds_per_epoch"
LEARNING_RATE = "lr"  # per epoch: the final fit replays it
OVERFIT_EPOCH = "overfit_epoch"


def best(metric: str) -> str:
    """The summary metric holding a fit's best value of METRIC (e.g. best_val_accuracy)."""
    return f"best_{metric}"


def per_class(metric: str, name: str) -> str:
    """A per-class metric (precision_<class>, recall_<class>), with the characters MLflow does
    not take in a metric name replaced by _."""
    return f"{metric}_{re.sub(r'[^0-9A-Za-z_ ./:-]', '_', name)}"


# -- the class names, in their fixed order (output i is class i): a prepared dataset's summary and
# a logged model's metadata (and the serving model's config) hold them under this key
CLASSES = "classes"

# -- predictions: the per-image CSV, `catdog predict` and the serving model's output columns
LABEL = "label"
PREDICTED = "predicted"
PROBABILITY_PREFIX = "p_"


def probability(name: str) -> str:
    """The column holding the probability of class NAME (p_<class>)."""
    return f"{PROBABILITY_PREFIX}{name}"


# -- a sweep's parent run
SEARCH_STRATEGY = "search_strategy"  # which strategy (catdog.search.strategies) ran the sweep
DATA = "data"  # the prepared dataset's folder
IMAGE_SIZES = "image_sizes"
BUDGET_SECONDS = "budget_seconds"
SWEEP_SECONDS = "sweep_seconds"
PLANNED_TRIALS = "planned_trials"
TRIALS_RUN = "trials_run"

# -- how a run ran (not which model it was): never read back as a hyperparameter
IMAGE_SIZE = "image_size"
EPOCHS = "epochs"
PARAM_COUNT = "param_count"
RUN_PARAMS = frozenset({"arch", "tuner", IMAGE_SIZE, "batch_size", "seed", "precision",
                        "pretrained", "strategy", PARAM_COUNT, EPOCHS, "patience", "n_train",
                        "n_val", "trained_on", "schedule_epochs", "repeat", "tta",
                        "phases"})


def hyperparameters(params: dict) -> dict:
    """The hyperparameters among a run's params: what is left once the run settings and
    KerasTuner's bookkeeping (tuner/...) are taken out."""
    return {k: v for k, v in params.items()
            if k not in RUN_PARAMS and not k.startswith("tuner/")}


def run_settings(**values) -> dict:
    """A run's settings as params: only the names in RUN_PARAMS (so every builder of them,
    `catdog train`, trials, repeats and final fits, logs the same keys), None left out."""
    unknown = set(values) - RUN_PARAMS
    if unknown:
        raise KeyError(f"not a run setting: {', '.join(sorted(unknown))}")
    return {k: v for k, v in values.items() if v is not None}
