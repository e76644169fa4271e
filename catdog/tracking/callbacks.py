"""The Keras callback that logs each epoch's metrics to one MLflow run and prints a line.

This module imports Keras: import it only where a model is trained.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from catdog import keys
from catdog.log import format_seconds, get_logger
from catdog.metrics import mlflow_metric_name

log = get_logger(__name__)


class EpochLogger(keras.callbacks.Callback):
    """Logs every epoch (step = epoch) to `run_id`, keeps the history and each epoch's seconds
    (training and validation), and prints one progress line with the fit's ETA (and the
    OBJECTIVE the fit is judged by, where it is not val accuracy).

    A fit kept to time passes ETA, the seconds it has left; its epochs are then a guess, by
    default as many as those seconds hold at this fit's mean pace. EPOCHS_LEFT, given that
    pace, guesses better where the fit's later epochs cost more (a long fit's larger sizes)."""

    def __init__(
        self,
        run_id: str,
        label: str,
        epochs: int,
        initial_epoch: int = 0,
        eta=None,
        objective: str = keys.OBJECTIVE,
        epochs_left=None,
    ):
        super().__init__()
        self.run_id, self.label, self.objective = run_id, label, objective
        self.epochs, self.initial_epoch = epochs, initial_epoch
        self.eta = eta  # () -> seconds left, for a fit kept to time (its epochs are a guess)
        self.epochs_left = epochs_left  # (mean seconds per epoch) -> epochs still to come
        self.history: dict[str, list[float]] = {}
        self.seconds: list[float] = []

    def __deepcopy__(self, memo):
        # KerasTuner deep-copies a trial's callbacks before fitting; the trial must read back the
        # history and timings of the very logger it handed over (one execution per trial).
        return self

    def on_train_begin(self, logs=None):
        import mlflow

        self.client = mlflow.MlflowClient()
        self.history, self.seconds = {}, []

    def on_epoch_begin(self, epoch, logs=None):
        self._t_epoch = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        from mlflow.entities import Metric

        logs = dict(logs or {})
        seconds = time.perf_counter() - self._t_epoch
        self.seconds.append(seconds)
        now = int(time.time() * 1000)
        metrics = [
            Metric(mlflow_metric_name(k), float(v), now, epoch)
            for k, v in logs.items()
            if k != "learning_rate"
        ]
        metrics.append(Metric("epoch_seconds", seconds, now, epoch))
        # The rate this epoch trained at, whatever schedule set it: a final fit replays it.
        metrics.append(
            Metric(
                keys.LEARNING_RATE,
                float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
                now,
                epoch,
            )
        )
        self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))
        mean = float(np.mean(self.seconds))
        if self.eta is not None:  # kept to time: the epochs are as many as the time holds
            left = self.eta()
            more = self.epochs_left(mean) if self.epochs_left else int(left // mean)
            total = epoch + 1 + more
        else:
            total = max(self.epochs, epoch + 1)
            left = (total - epoch - 1) * mean
        val = ""
        if "val_loss" in logs:
            val = (
                f" | val_loss {logs['val_loss']:.4f} "
                f"val_acc {logs.get(keys.VAL_ACCURACY, np.nan):.4f}"
            )
            if "val_auc" in logs:  # two classes: Keras's AUC (softmax heads have none)
                val += f" val_auc {logs['val_auc']:.4f}"
            if self.objective != keys.VAL_ACCURACY and self.objective in logs:
                val += f" {self.objective} {logs[self.objective]:.4f}"
        log.info(
            "[%s] epoch %d/%s  loss %.4f acc %.4f%s | %.1fs, ETA %s",
            self.label,
            epoch + 1,
            f"{total}" if self.eta is None else f"~{total}",
            logs.get("loss", np.nan),
            logs.get("accuracy", np.nan),
            val,
            seconds,
            format_seconds(left),
        )

    @property
    def seconds_per_epoch(self) -> float:
        return float(np.mean(self.seconds)) if self.seconds else float("nan")


def fit_callbacks(
    run_id: str,
    label: str,
    epochs: int,
    patience: int,
    initial_epoch: int = 0,
    monitor: str = keys.OBJECTIVE,
):
    """Early stopping on MONITOR (best weights restored) and the epoch logger, as train and
    sweep use them: MONITOR is the sweep's objective (`catdog.data.balance.objective`)."""
    logger = EpochLogger(run_id, label, epochs, initial_epoch, objective=monitor)
    stop = keras.callbacks.EarlyStopping(
        monitor=monitor, mode="max", patience=patience, restore_best_weights=True
    )
    return [stop, logger], logger
