"""The held-out test split, touched only for models already chosen on validation.

A sweep run's model is evaluated on its sweep's test split once: test metrics, confusion matrix
and ROC, and the per-image predictions (`test_predictions.csv`: path, true label, predicted
label, and p_<class> for each of the dataset's classes) are logged to that run. Every later
question (`register`, `compare --test`, `report`, McNemar between two models) reads those
predictions back, so the numbers never change and anyone can redo the
analysis from the CSV.

A model is tested as it ships: with flip TTA when it is part of it (`modelstore.tta_of`), so
`register`, `report`, `compare --test`, `catdog evaluate` and the served model give one figure.
Those predictions are `test_predictions_tta.csv` and `test_tta_*` metrics.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from catdog import keys, metrics, pipeline
from catdog.data.prepare import load_manifest
from catdog.data.prepared import classes as dataset_classes
from catdog.errors import CatdogError
from catdog.log import get_logger
from catdog.tracking import artifacts, modelstore, runlog, runs, tags

log = get_logger(__name__)

PREDICTIONS = "test_predictions.csv"
PREDICTIONS_TTA = "test_predictions_tta.csv"  # with test-time augmentation (image + mirror)
ALPHA = 0.05  # significance level of the McNemar statements


def require_validation_metric(metric: str) -> None:
    """The one rule: a model is chosen on validation, and only a chosen model is tested."""
    if not metric.startswith("val_"):
        raise CatdogError(
            f"--metric must be a validation metric (val_*), got {metric!r}: the "
            "test split is never used to choose a model"
        )


def logged_model_uri(run) -> str:
    return modelstore.logged_model_uri(run)


def predictions_file(tta: bool) -> str:
    return PREDICTIONS_TTA if tta else PREDICTIONS


def test_predictions(run, parent, model=None, tta: bool | None = None) -> pd.DataFrame:
    """Per-image test predictions of a sweep run's model: read back if logged, else made once
    (and logged with the test metrics and plots; with test-time augmentation, as `test_tta_*`
    metrics and their own file, so it is recorded which was used). TTA None: the model's own
    setting. MODEL is a Keras model or an `inference.Classifier`; the classes are the
    dataset's."""
    tta = modelstore.tta_of(run) if tta is None else tta
    name = predictions_file(tta)
    data_root = parent.data.params.get(keys.DATA)
    classes = dataset_classes(data_root)
    if runlog.has_file(run.info.run_id, name):
        return _complete(
            pd.read_csv(
                io.StringIO(runlog.read_text(run.info.run_id, name)),
                dtype={keys.LABEL: str, keys.PREDICTED: str},
            ),
            classes,
        )
    if model is None:
        from catdog.inference import load_classifier

        model = load_classifier(logged_model_uri(run))
    splits = pipeline.load(data_root, int(run.data.params["image_size"]), 64, splits=("test",))
    labels, probs = splits.predict(getattr(model, "model", model), "test", tta)
    # The pipeline decodes a split in manifest order sorted by path: the same order here.
    manifest = load_manifest(data_root)
    test_rows = manifest[manifest["split"] == "test"].sort_values("path")
    frame = pd.DataFrame(
        {
            "path": test_rows["path"].to_numpy(),
            keys.LABEL: [classes[int(y)] for y in labels],
            keys.PREDICTED: [classes[k] for k in metrics.predicted(probs)],
            **{keys.probability(c): probs[:, k] for k, c in enumerate(classes)},
        }
    )
    if list(frame[keys.LABEL]) != list(test_rows["label"]):
        raise CatdogError(f"the decoded test split of {data_root} does not match its manifest")
    log.info(
        "evaluating run %s (%s) once on the %d held-out test images",
        run.info.run_id,
        run.data.tags.get(tags.ARCH),
        len(frame),
    )
    with runs.reopened(run.info.run_id):
        artifacts.log_evaluation(
            labels,
            probs,
            "test_tta" if tta else "test",
            run.data.tags.get(tags.ARCH, "model"),
            classes,
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            frame.to_csv(path, index=False)
            runlog.log_file(path)
    return frame


def _complete(frame: pd.DataFrame, classes: tuple[str, ...]) -> pd.DataFrame:
    """A logged predictions file as it is written now: files logged before class names were
    recorded hold only the second class's probability (and no predicted label)."""
    first, second = (keys.probability(c) for c in classes[:2])
    if len(classes) == 2 and first not in frame and second in frame:
        frame.insert(frame.columns.get_loc(second), first, 1.0 - frame[second])
    if keys.PREDICTED not in frame:
        frame.insert(
            2, keys.PREDICTED, [classes[k] for k in metrics.predicted(probabilities(frame))]
        )
    return frame


def classes_of(frame: pd.DataFrame) -> list[str]:
    """The classes of a predictions frame, in order: its p_<class> columns."""
    prefix = keys.PROBABILITY_PREFIX
    return [c[len(prefix) :] for c in frame.columns if c.startswith(prefix)]


def probabilities(frame: pd.DataFrame) -> np.ndarray:
    """The (n, classes) probabilities of a predictions frame."""
    return frame[[keys.probability(c) for c in classes_of(frame)]].to_numpy(float)


def correct(frame: pd.DataFrame) -> np.ndarray:
    """Per image: was the predicted class the true one?"""
    classes = classes_of(frame)
    predicted = np.array(classes, dtype=object)[metrics.predicted(probabilities(frame))]
    return predicted == frame[keys.LABEL].astype(str).to_numpy()


def true_indices(frame: pd.DataFrame) -> np.ndarray:
    """The true class of each image as an index into `classes_of(frame)`."""
    index = {c: i for i, c in enumerate(classes_of(frame))}
    return np.array([index[str(lbl)] for lbl in frame[keys.LABEL]])


def test_metrics(frame: pd.DataFrame) -> dict:
    """The figures of `metrics.summary` (the numbers only) over a predictions frame."""
    summary = metrics.summary(true_indices(frame), probabilities(frame), classes_of(frame))
    return {k: v for k, v in summary.items() if isinstance(v, float)}


def runner_up_significance(
    table: pd.DataFrame, parent, champion=None, tta: bool | None = None
) -> dict | None:
    """McNemar between the champion (the top row's run, or CHAMPION, its final fit) and the next
    row that has a model, on the same test images; None (with a note) when there is none. Both
    with TTA or both without: TTA, else the champion's own setting."""
    if len(table) < 2:
        return None
    champion = champion or runlog.get(table.iloc[0]["run_id"])
    tta = modelstore.tta_of(champion) if tta is None else tta
    first = test_predictions(champion, parent, tta=tta)
    for i in range(1, len(table)):
        try:
            second = test_predictions(runlog.get(table.iloc[i]["run_id"]), parent, tta=tta)
        except CatdogError as exc:
            log.info("not testing against %s: %s", table.iloc[i]["arch"], exc)
            continue
        return significance(first, second, (table.iloc[0]["arch"], table.iloc[i]["arch"]))
    return None


def significance(
    champion: pd.DataFrame, runner_up: pd.DataFrame, names=("champion", "runner-up")
) -> dict:
    """McNemar's exact test between two models' predictions on the same test images."""
    a, b = champion.sort_values("path"), runner_up.sort_values("path")
    if list(a["path"]) != list(b["path"]):
        raise CatdogError(
            "the two models were tested on different images; McNemar needs the same test split"
        )
    result = metrics.mcnemar(correct(a), correct(b))
    result.update(
        {
            "a": names[0],
            "b": names[1],
            "accuracy_a": float(correct(a).mean()),
            "accuracy_b": float(correct(b).mean()),
            "significant": result["p_value"] < ALPHA,
        }
    )
    return result


def describe(sig: dict) -> str:
    """One sentence a person reads: is the first model better than the second, beyond chance?"""
    head = (
        f"{sig['a']} {sig['accuracy_a']:.4f} vs {sig['b']} {sig['accuracy_b']:.4f} on "
        f"{sig['images']} test images: they disagree on {sig['disagreements']} "
        f"({sig['only_a_right']} right only by {sig['a']}, {sig['only_b_right']} only by "
        f"{sig['b']}), McNemar exact p = {sig['p_value']:.3g}"
    )
    if sig["significant"]:
        better = sig["a"] if sig["only_a_right"] > sig["only_b_right"] else sig["b"]
        return f"{head}: a real difference at the {ALPHA} level, in favour of {better}"
    return f"{head}: not significantly different at the {ALPHA} level"


def with_test(table: pd.DataFrame) -> dict | None:
    """Evaluate the top two rows' models on the held-out test split (once; read back after) and
    test them against each other, both with flip TTA where it is part of the top model. Adds
    `test_accuracy` to those rows; returns McNemar's result. They were chosen on validation, so
    touching test here chooses nothing."""
    from catdog import runtime

    require_validation_metric(table.attrs.get("metric", keys.OBJECTIVE))
    runtime.start()
    parent = runlog.get(table.attrs["sweep_run_id"])
    tta = modelstore.tta_of(runlog.get(table.iloc[0]["run_id"]))  # the top model's, for both
    sig = runner_up_significance(table, parent, tta=tta) if len(table) > 1 else None
    table[keys.TEST_ACCURACY] = np.nan
    for i in range(len(table)):
        if i == 0 or (sig and table.iloc[i]["arch"] == sig["b"]):
            frame = test_predictions(runlog.get(table.iloc[i]["run_id"]), parent, tta=tta)
            table.loc[i, keys.TEST_ACCURACY] = test_metrics(frame)["accuracy"]
    table.attrs["significance"] = sig
    return sig
