"""Flip TTA, once kept for a model, is part of it: `register`, `report`, `catdog evaluate`,
`catdog predict` and the serving pyfunc give the same probabilities and the same test accuracy
for the same photos, and `--tta/--no-tta` only ask about another model, saying so."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from catdog import choose, heldout, keys, sweepfile
from catdog.cli import main
from catdog.data.prepare import load_manifest
from catdog.register import register
from catdog.report import gather_report
from catdog.search import sweep
from catdog.tracking import modelstore, runlog

TOLERANCE = 1e-5  # the same model on the same pixels, in batches of other sizes


def cli(*args):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def _probabilities(frame: pd.DataFrame, classes) -> np.ndarray:
    return frame[[keys.probability(c) for c in classes]].to_numpy(float)


def test_a_model_with_flip_tta_gives_one_figure_everywhere(tiny_prepared, workdir, logs):
    cfg = sweepfile.load(
        None,
        archs=("baseline",),
        tuner="random",
        trials=1,
        epochs=1,
        image_size=32,
        batch_size=8,
        data=str(tiny_prepared),
    )
    sweep.run(cfg)
    chosen = choose.champion(choose.table("latest", (), keys.OBJECTIVE, "catdog"))
    plain = heldout.test_predictions(chosen.run, chosen.parent)  # logged by the sweep, no TTA
    modelstore.set_tta(chosen.run.info.run_id, True)  # as the focus long fit records it

    reg = register()
    assert reg.tta and reg.run_id == chosen.run.info.run_id
    run = runlog.get(reg.run_id)
    tested = heldout.test_predictions(run, chosen.parent)  # read back: the register's figure
    assert len(tested) == 24 and not tested.equals(plain)
    assert heldout.test_metrics(tested)["accuracy"] == reg.test["accuracy"]
    classes = heldout.classes_of(tested)
    assert np.abs(_probabilities(tested, classes) - _probabilities(plain, classes)).max() > 1e-4, (
        "the mirror images changed the probabilities"
    )

    # the registered serving model, loaded as `mlflow models serve` loads it
    test = load_manifest(tiny_prepared).query("split == 'test'").sort_values("path")
    assert list(test["path"]) == list(tested["path"])
    photos = [open(p, "rb").read() for p in test["abspath"]]
    champion = f"models:/{reg.name}@{reg.alias}"
    served = mlflow.pyfunc.load_model(champion).predict(pd.DataFrame({"image": photos}))
    np.testing.assert_allclose(
        _probabilities(served, classes), _probabilities(tested, classes), atol=TOLERANCE
    )
    assert list(served[keys.LABEL]) == list(tested[keys.PREDICTED])

    # catdog evaluate: the registered model and the run's own Keras model, as they ship
    for uri in (champion, f"runs:/{reg.run_id}/model"):
        ev = json.loads(
            cli("evaluate", "--model", uri, "--data", str(tiny_prepared), "--format", "json").stdout
        )
        assert ev["tta"] and ev["model_tta"] and ev["n"] == 24
        assert ev["accuracy"] == reg.test["accuracy"]
        assert ev["loss"] == pytest.approx(reg.test["loss"], abs=TOLERANCE)

    # catdog predict: the same probabilities, photo by photo
    preds = json.loads(cli("predict", *test["abspath"], "--format", "json").stdout)
    np.testing.assert_allclose(
        _probabilities(pd.DataFrame(preds), classes),
        _probabilities(tested, classes),
        atol=TOLERANCE,
    )

    # --no-tta asks about another model: the plain figures, with a warning that says so
    no_tta = cli("predict", *test["abspath"], "--no-tta", "--format", "json")
    np.testing.assert_allclose(
        _probabilities(pd.DataFrame(json.loads(no_tta.stdout)), classes),
        _probabilities(plain, classes),
        atol=TOLERANCE,
    )
    assert "not the served model's" in logs.text
    ev = json.loads(
        cli(
            "evaluate",
            "--model",
            champion,
            "--data",
            str(tiny_prepared),
            "--no-tta",
            "--format",
            "json",
        ).stdout
    )
    assert not ev["tta"] and ev["model_tta"]
    assert ev["accuracy"] == heldout.test_metrics(plain)["accuracy"]

    # the report shows the same figure
    page = gather_report()
    assert page["tta"] and page["test"]["accuracy"] == reg.test["accuracy"]


@pytest.mark.slow
def test_a_forced_setting_is_what_ships(tiny_prepared, workdir):
    """`register --no-tta` on a model that kept TTA registers it without: a new version whose
    serving model does not flip, so its figure still describes what serves."""
    cfg = sweepfile.load(
        None,
        archs=("baseline",),
        tuner="random",
        trials=1,
        epochs=1,
        image_size=32,
        batch_size=8,
        data=str(tiny_prepared),
    )
    sweep.run(cfg)
    chosen = choose.champion(choose.table("latest", (), keys.OBJECTIVE, "catdog"))
    modelstore.set_tta(chosen.run.info.run_id, True)
    with_tta, without = register(), register(tta=False, force=True)
    assert with_tta.tta and not without.tta and without.created
    assert without.version != with_tta.version
    model, _, tta = modelstore.load(f"models:/{without.name}/{without.version}")
    assert tta is False
    assert modelstore.load(f"models:/{with_tta.name}/{with_tta.version}")[2] is True
    assert not register(tta=False).created, "the same run and setting: the same version"
