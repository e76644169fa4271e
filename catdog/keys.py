"""Every param and metric key, defined once: Keras names its history by them, `metrics` summarises
them, and MLflow holds them as params and metrics (tag keys live in
`tags`). These are column names in `mlflow ui` and in every comparison, so they are stable.
"""

from __future__ import annotations

import re

# -- metrics
# What a search maximises and a choice is made on, unless the dataset is imbalanced: then it is
# VAL_BALANCED_ACCURACY (`catdog.data.balance.objective`), recorded on the sweep (SWEEP_OBJECTIVE).
OBJECTIVE = "val_accuracy"
VAL_ACCURACY = OBJECTIVE
TEST_ACCURACY = "test_accuracy"
BEST_EPOCH = "best_epoch"
SECONDS_PER_EPOCH = "seconds_per_epoch"
LEARNING_RATE = "lr"  # per epoch: the final fit replays it
OVERFIT_EPOCH = "overfit_epoch"
VAL_ACCURACY_PLAIN = "val_accuracy_plain"  # the kept model on validation, without and with flip
VAL_ACCURACY_TTA = "val_accuracy_tta"  # TTA: TTA is kept only where the second is higher
# -- what a logged model costs to run here (`catdog.speed.inference_ms`, at record time)
MS_PER_IMAGE = "ms_per_image"  # one image, alone
MS_PER_IMAGE_BATCH = "ms_per_image_batch32"  # per image, in a batch of 32
MODEL_BYTES = "model_bytes"  # the logged model's artifacts on the store
# Figures that weigh every class the same: an imbalanced dataset is judged by them.
BALANCED_ACCURACY = "balanced_accuracy"  # the mean of the per-class recalls
VAL_BALANCED_ACCURACY = f"val_{BALANCED_ACCURACY}"  # its Keras history key on validation
MACRO_F1 = "macro_f1"


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
# -- whether flip test-time augmentation is part of a model: the serving model's config and
# metadata hold it under this key (see catdog.tracking.modelstore)
TTA = "tta"

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
# The validation metric the sweep searched and chose on, where it is not OBJECTIVE (an imbalanced
# dataset's sweep); a sweep without it chose on OBJECTIVE.
SWEEP_OBJECTIVE = "objective"
# -- the data curve (`catdog curve`): the predicted gain in val accuracy from twice the training
# photos, and its 95% interval, on the sweep's parent run
CURVE_GAIN = "curve_gain_2x"
CURVE_GAIN_LOW = "curve_gain_2x_low"
CURVE_GAIN_HIGH = "curve_gain_2x_high"
# The 2x reading checked on the curve's own points (catdog.curvefit.Backtest).
CURVE_BACKTEST_PREDICTED = "curve_backtest_predicted"
CURVE_BACKTEST_MEASURED = "curve_backtest_measured"

# -- how a run ran (not which model it was): never read back as a hyperparameter
IMAGE_SIZE = "image_size"
EPOCHS = "epochs"
PARAM_COUNT = "param_count"
FRACTION = "fraction"  # a data curve's run: the share of the training split it trained on
DISTRIBUTION = "distribution"  # TensorFlow's distribution strategy a run trained under
# "strategy" is DISTRIBUTION's name in runs logged before it was renamed: still not a
# hyperparameter when read back.
RUN_PARAMS = frozenset(
    {
        "arch",
        "tuner",
        IMAGE_SIZE,
        "batch_size",
        "seed",
        "precision",
        "pretrained",
        DISTRIBUTION,
        "strategy",
        PARAM_COUNT,
        EPOCHS,
        "patience",
        "n_train",
        "n_val",
        "trained_on",
        "schedule_epochs",
        "repeat",
        "tta",
        "phases",
        FRACTION,
    }
)


def hyperparameters(params: dict) -> dict:
    """The hyperparameters among a run's params: what is left once the run settings and
    KerasTuner's bookkeeping (tuner/...) are taken out."""
    return {k: v for k, v in params.items() if k not in RUN_PARAMS and not k.startswith("tuner/")}


def run_settings(**values) -> dict:
    """A run's settings as params: only the names in RUN_PARAMS (so every builder of them,
    `catdog train`, trials, repeats and final fits, logs the same keys), None left out."""
    unknown = set(values) - RUN_PARAMS
    if unknown:
        raise KeyError(f"not a run setting: {', '.join(sorted(unknown))}")
    return {k: v for k, v in values.items() if v is not None}
