"""Shared fixtures: every test gets its own working directory and MLflow store, and tiny
generated datasets are built the real way (generated JPEGs -> zip -> `prepare`)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "dogs-vs-cats-mini"

sys.path.insert(0, str(REPO))  # `tests.imagegen` importable from any test

from catdog import runtime  # noqa: E402

# TensorFlow starts as in the CLI: quietly, before any test imports it. Models are built with
# `pretrained=False` (the registry's default), so no test downloads ImageNet weights.
runtime.start()
# On a GPU, pytest's workers and the processes tests start share it: each takes memory as it needs
# it instead of all of it (set before TensorFlow creates its devices; children inherit the env).
os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
runtime.allow_memory_growth()


@pytest.fixture
def logs(caplog):
    # The CLI's log.setup() stops "catdog" propagating to the root logger caplog listens on.
    logger = logging.getLogger("catdog")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="catdog")
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh project directory: its own mlruns/ (sqlite store), data/ and .tuner/."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for var in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(var, raising=False)
    import mlflow

    yield tmp_path
    mlflow.set_tracking_uri(None)
    from catdog import pipeline

    pipeline.clear_cache()


def _make_prepared(root: Path, n_per_class: int, size=(40, 30)) -> Path:
    from catdog.data.prepare import prepare
    from tests.imagegen import make_layout

    src = make_layout(root / "raw", "salader", n_per_class, seed=7)
    return prepare(src, root / "prepared").root


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory) -> Path:
    """A prepared dataset of generated photos, shared read-only by the tests of a session."""
    return _make_prepared(tmp_path_factory.mktemp("tiny"), n_per_class=12)


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    """A real 10-class set with no network: scikit-learn's 1,797 handwritten digits as 32 px
    PNGs in the plain layout <class>/*, classes 0-9."""
    from tests.imagegen import write_digits

    return write_digits(tmp_path_factory.mktemp("digits") / "digits", size=32)


@pytest.fixture(scope="session")
def legacy_model(tmp_path_factory) -> Path:
    """A binary model saved the old way (its last layer the sigmoid p_dog), as a .keras file."""
    import keras

    from tests.legacy import old_binary_model

    path = tmp_path_factory.mktemp("legacy") / "old-binary-32.keras"
    old_binary_model(32).save(path)
    keras.backend.clear_session()
    return path


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(
            f"real photos not found at {REAL_DATA}: the smoke test needs "
            "../shared/data/dogs-vs-cats-mini beside the repository"
        )
    return REAL_DATA
