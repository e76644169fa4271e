"""Item 4 of the benchmark: the notebook's model as written against catdog's bn_dropout, at the
same size, batch and seed (epoch-2 wall time and validation accuracy), and the notebook's model
itself, which item 7 (`benchmarks.accuracy`) trains too."""

from __future__ import annotations

from pathlib import Path

from benchmarks.probes import (
    _build,
    _clock,
    _notebook_dataset,
    _split_sizes,
    precision,
    train_throughput,
    training_flops,
)
from benchmarks.settings import BATCH, SEED, Settings
from catdog.log import get_logger

log = get_logger(__name__)


# ------------------------------------------------------- 4. one epoch end to end vs notebook
def notebook_model(size: int):
    """The notebooks' CNN as written: no Rescaling layer (the map divides), no augmentation."""
    import keras
    from keras import layers

    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    stack: list = [keras.Input((size, size, 3))]
    for filters in (32, 64, 128):
        stack += [
            layers.Conv2D(filters, 3, padding="valid", activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D(2, strides=2),
        ]
    stack += [
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dropout(0.1),
        layers.Dense(64, activation="relu"),
        layers.Dropout(0.1),
        layers.Dense(1, activation="sigmoid"),
    ]
    model = keras.Sequential(stack, name="notebook")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"]
    )
    return model


def _fit_epochs(model, train, val, epochs: int) -> dict:
    clock = _clock()
    history = model.fit(train, validation_data=val, epochs=epochs, verbose=0, callbacks=[clock])
    h = history.history
    return {
        "epoch_seconds": clock.epoch_seconds,
        "epoch_last_seconds": clock.epoch_seconds[-1],
        "epoch_others_cpu_share": clock.epoch_others,
        "val_accuracy": float(h["val_accuracy"][-1]),
        "accuracy": float(h["accuracy"][-1]),
    }


def versus_notebook(root: Path, settings: Settings, pipe: dict) -> dict:
    """The last of N epochs (training + validation) of the notebook and of catdog's bn_dropout."""
    from catdog import pipeline

    size, epochs = settings.notebook_size, settings.notebook_epochs
    sizes = _split_sizes(root)
    runs: dict[str, dict] = {}

    log.info("notebook as written: %d epochs at %dpx", epochs, size)
    model = notebook_model(size)
    runs["notebook fp32"] = _fit_epochs(
        model, _notebook_dataset(root, "train", size), _notebook_dataset(root, "val", size), epochs
    )
    flops = training_flops(model)
    for prec in ("fp32", "bf16"):
        log.info("catdog bn_dropout %s: %d epochs at %dpx", prec, epochs, size)
        with precision(prec):
            splits = pipeline.load(root, size, BATCH, seed=SEED)
            model = _build("bn_dropout", size)
            runs[f"catdog {prec}"] = _fit_epochs(model, splits.train, splits.val, epochs)
    base = runs["notebook fp32"]
    for name, run in runs.items():
        run["batch"] = BATCH
        run["vs_notebook"] = run["epoch_last_seconds"] / base["epoch_last_seconds"]
        run["val_accuracy_delta"] = run["val_accuracy"] - base["val_accuracy"]
        log.info(
            "%s: epoch %d %.1fs (x%.2f of the notebook), val_accuracy %.4f",
            name,
            epochs,
            run["epoch_last_seconds"],
            run["vs_notebook"],
            run["val_accuracy"],
        )

    # Levers, as training throughput only (same model, cached pipeline): precision x batch.
    dec = pipeline.decoded(root, "train", size)
    levers = []
    for prec in ("fp32", "bf16"):
        for batch in (32, 64):
            with precision(prec):
                model = _build("bn_dropout", size)
                ds = pipeline.dataset(dec, batch, shuffle=True, seed=SEED).repeat()
                m = train_throughput(model, ds, batch, settings)
            levers.append(
                {
                    "precision": prec,
                    "batch": batch,
                    **m,
                    "gflops": flops["train_gflop"] * m["images_per_s"],
                }
            )
            log.info(
                "lever bn_dropout %dpx %s batch %d: %.1f images/s",
                size,
                prec,
                batch,
                m["images_per_s"],
            )
    ref = levers[0]["images_per_s"]
    for lever in levers:
        lever["speedup"] = lever["images_per_s"] / ref
    at_batch = {lv["precision"]: lv for lv in levers if lv["batch"] == BATCH}

    # Why: the share of the notebook's epoch that is model compute, which no pipeline touches.
    pipe_row = next((r for r in pipe.get("rows", []) if r["size"] == size), {})
    nb_rate = pipe_row.get("notebook_images_per_s")
    compute = {prec: sizes["train"] / lv["images_per_s"] for prec, lv in at_batch.items()}
    why = {
        "train_images": sizes["train"],
        "val_images": sizes["val"],
        "compute_seconds": compute,
        "compute_others_cpu_share": {prec: lv["others_cpu_share"] for prec, lv in at_batch.items()},
        "compute_share_of_notebook_epoch": {
            prec: c / base["epoch_last_seconds"] for prec, c in compute.items()
        },
        "catdog_decode_seconds_once": (sizes["train"] + sizes["val"])
        / pipe_row["first_pass_images_per_s"]
        if pipe_row
        else None,
        "notebook_pipeline_seconds": (sizes["train"] + sizes["val"]) / nb_rate if nb_rate else None,
    }
    return {
        "size": size,
        "epochs": epochs,
        "train_gflop_per_image": flops["train_gflop"],
        "runs": runs,
        "levers": levers,
        "why": why,
    }
