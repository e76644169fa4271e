"""Any labelled folder, two classes or many: the plain layouts, Dogs-vs-Cats under other names
(the same results as under cats/ and dogs/), a real 10-class set (scikit-learn's handwritten
digits, written out as image files) swept, compared, registered, evaluated, predicted and
reported, and a binary model logged and registered before class names were recorded, still
loading and predicting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from catdog.cli import main
from catdog.data import classes, load_manifest, prepare
from catdog.errors import CatdogError
from tests.imagegen import write_jpeg

DIGITS_CHANCE = 0.1
DIGITS_FLOOR = 0.5  # the champion's test accuracy must be well above chance (conftest: the set)


def cli(*args, code=0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, (result.output, result.exception)
    return result


def folders(root: Path, layout: dict[str, int], seed: int = 0) -> Path:
    """Generated photos: {"train/horses": 3, ...} -> that many JPEGs in each folder."""
    n = seed * 1000
    for folder, count in layout.items():
        for i in range(count):
            write_jpeg(root / folder / f"{i}.jpg", n)
            n += 1
    return root


# ---------------------------------------------------------------- layouts


def test_split_class_folders_with_any_names(tmp_path):
    src = folders(
        tmp_path / "src",
        {
            "train/horses": 6,
            "train/zebras": 6,
            "train/Okapi": 6,
            "val/horses": 2,
            "test/horses": 2,
            "test/zebras": 2,
            "test/Okapi": 2,
        },
    )
    result = prepare(src, tmp_path / "out")
    assert result.summary["layout"] == "split_folders"
    assert classes(result.root) == ("Okapi", "horses", "zebras")  # sorted, spelled as the folders
    assert result.counts["test"] == {"Okapi": 2, "horses": 2, "zebras": 2}
    # The source's val folder joins the pool the stratified val split is drawn from.
    assert sum(result.counts["train"].values()) + sum(result.counts["val"].values()) == 20
    assert all(n >= 1 for n in result.counts["val"].values())
    assert set(load_manifest(result.root)["label"]) == {"Okapi", "horses", "zebras"}


def test_class_folders_inside_a_wrapper_zip(tmp_path):
    from tests.imagegen import zip_dir

    src = folders(tmp_path / "src", {"birds/robin": 5, "birds/wren": 5, "birds/finch": 5})
    (tmp_path / "src" / "README.txt").write_text("three birds")
    zipped = zip_dir(src, tmp_path / "birds.zip")
    result = prepare(zipped, tmp_path / "out", seed=3)
    assert result.summary["layout"] == "folders"
    assert result.summary["classes"] == ["finch", "robin", "wren"]
    # No test folder in the source: a stratified test split is drawn, one per class at least.
    assert all(
        result.counts[split][c] >= 1
        for split in ("train", "val", "test")
        for c in ("finch", "robin", "wren")
    )
    assert result.summary["not_in_layout"]["count"] == 1  # README.txt


def test_too_few_images_to_split_names_the_class(tmp_path):
    src = folders(tmp_path / "src", {"horses": 5, "zebras": 2})
    with pytest.raises(
        CatdogError,
        match=r"class 'zebras' has 2 usable images in .*, too few to "
        r"split into train, val and test \(it needs at least 3\)",
    ):
        prepare(src, tmp_path / "out")
    src = folders(tmp_path / "src2", {"train/horses": 4, "train/zebras": 4, "test/horses": 2})
    with pytest.raises(
        CatdogError, match=r"class 'zebras' has no usable images in the test folder"
    ):
        prepare(src, tmp_path / "out")


def test_dogs_vs_cats_layouts_are_read_as_before(tmp_path):
    # Cats and dogs in the salader layout keep their classes cat and dog (and their manifest);
    # the same photos in plain folders take the folders' names.
    salader = folders(
        tmp_path / "salader", {"train/cats": 4, "train/dogs": 4, "test/cats": 2, "test/dogs": 2}
    )
    plain = tmp_path / "plain"
    shutil.copytree(salader / "train", plain / "train" / "pets")
    a = prepare(salader, tmp_path / "a")
    assert a.summary["layout"] == "salader" and classes(a.root) == ("cat", "dog")
    b = prepare(plain / "train", tmp_path / "b")
    assert b.summary["layout"] == "folders" and classes(b.root) == ("cats", "dogs")


# ---------------------------------------------------------------- a dataset's name


def test_a_dataset_is_named_after_its_source_and_dogs_vs_cats_stays_catdog(tmp_path):
    from catdog.data import dataset_name, resolve_name
    from catdog.data.identity import safe_name
    from tests.imagegen import zip_dir

    horses = prepare(
        folders(tmp_path / "Horses & Zebras", {"horses": 3, "zebras": 3}), tmp_path / "out1"
    )
    assert horses.summary["name"] == dataset_name(horses.root) == "horses-zebras"
    zipped = zip_dir(folders(tmp_path / "z", {"thé": 3, "café": 3}), tmp_path / "Café Crème.zip")
    assert dataset_name(prepare(zipped, tmp_path / "out2").root) == "cafe-creme"
    # Dogs-vs-Cats keeps `catdog`: its download layouts, and plain folders of cats and dogs.
    salader = folders(
        tmp_path / "kaggle-download",
        {"train/cats": 3, "train/dogs": 3, "test/cats": 2, "test/dogs": 2},
    )
    assert dataset_name(prepare(salader, tmp_path / "out3").root) == "catdog"
    plain = prepare(folders(tmp_path / "pets", {"Cats": 3, "Dogs": 3}), tmp_path / "out4")
    assert dataset_name(plain.root) == "catdog"
    # Prepared before names were recorded: derived from the summary the same way.
    summary = json.loads((horses.root / "summary.json").read_text())
    del summary["name"]
    (horses.root / "summary.json").write_text(json.dumps(summary))
    assert dataset_name(horses.root) == "horses-zebras"

    assert resolve_name(None, horses.root) == "horses-zebras"
    assert resolve_name("zoo-v2", horses.root) == "zoo-v2"
    for bad in ("a/b", "a:b", "x@y", "two words"):
        with pytest.raises(CatdogError, match="cannot name a registered model"):
            resolve_name(bad, horses.root)
    assert safe_name("..") == "" and safe_name("x" * 100) == "x" * 64


def test_sweep_refuses_a_bad_name_before_it_starts(tmp_path):
    bad = cli("sweep", "--name", "my/model", "--data", tmp_path / "nowhere", code=2)
    assert bad.output.startswith("error: ") and "cannot name a registered model" in bad.output


# ---------------------------------------------------------------- Dogs-vs-Cats under other names


def copy_mini(real: Path, dest: Path, names: dict[str, str], train: int = 40, test: int = 10):
    """The first photos of each class of the mini set, in the salader layout under NAMES."""
    for split, n in (("train", train), ("test", test)):
        for old, new in names.items():
            folder = dest / split / new
            folder.mkdir(parents=True)
            for photo in sorted((real / split / old).iterdir())[:n]:
                shutil.copyfile(photo, folder / photo.name)
    return dest


@pytest.mark.real_data
def test_kitties_and_puppies_give_the_same_results_as_cats_and_dogs(real_data, workdir):
    from catdog import pipeline
    from catdog.train import train

    ours = copy_mini(real_data, workdir / "cats-dogs", {"cats": "cats", "dogs": "dogs"})
    theirs = copy_mini(
        real_data, workdir / "kitties-puppies", {"cats": "kitties", "dogs": "puppies"}
    )
    a, b = prepare(ours, workdir / "a", seed=11), prepare(theirs, workdir / "b", seed=11)
    assert (a.summary["layout"], b.summary["layout"]) == ("salader", "split_folders")
    assert (classes(a.root), classes(b.root)) == (("cat", "dog"), ("kitties", "puppies"))
    rename = {"cat": "kitties", "dog": "puppies"}
    assert {s: {rename[c]: n for c, n in by.items()} for s, by in a.counts.items()} == b.counts
    ma, mb = load_manifest(a.root), load_manifest(b.root)
    assert list(ma["split"]) == list(mb["split"]) and list(ma["sha256"]) == list(mb["sha256"])
    assert list(ma["label"].map(rename)) == list(mb["label"])

    runs = [
        train("baseline", root, image_size=32, batch_size=16, epochs=1, seed=5, pretrained=False)
        for root in (a.root, b.root)
    ]
    same = {k: v for k, v in runs[0].summary.items() if k != "seconds_per_epoch"}
    assert same == {k: v for k, v in runs[1].summary.items() if k != "seconds_per_epoch"}
    from catdog.inference import load_classifier

    probs = []
    for run, root in zip(runs, (a.root, b.root)):
        classifier = load_classifier(run.model_uri)
        splits = pipeline.load(root, 32, 16, splits=("test",))
        probs.append(splits.predict(classifier.model, "test")[1])
    assert load_classifier(runs[1].model_uri).classes == ("kitties", "puppies")
    np.testing.assert_array_equal(probs[0], probs[1])


# ---------------------------------------------------------------- ten classes: the digits


@pytest.mark.slow
@pytest.mark.heavy
def test_a_quick_sweep_on_ten_real_classes_trains_compares_registers_and_predicts(
    digits_folder, workdir, capsys
):
    import mlflow

    from catdog import sweepfile
    from catdog.search import sweep

    prepared = json.loads(
        cli("data", "prepare", digits_folder, "--dest", workdir / "digits").stdout
    )
    assert prepared["layout"] == "folders" and prepared["classes"] == [str(d) for d in range(10)]
    assert sum(sum(by.values()) for by in prepared["counts"].values()) == 1797
    cfg = sweepfile.load(
        None,
        archs=("baseline", "bn_dropout"),
        tuner="random",
        trials=1,
        epochs=4,
        image_size=32,
        batch_size=32,
        data=str(workdir / "digits"),
    )
    result = sweep.run(cfg)

    rows = json.loads(cli("compare", "--format", "json", "--plot", "cmp.png").stdout)["rows"]
    assert {r["arch"] for r in rows} == {"baseline", "bn_dropout"}
    # A dataset registers under its own name (the folder's), so its champion never stands in for
    # the cats-and-dogs one, and never has to beat it.
    reg = json.loads(cli("register").stdout)
    assert reg["name"] == "digits" and reg["promoted"] and reg["reason"] == "no current champion"
    test_accuracy = reg["test"]["accuracy"]
    with capsys.disabled():  # the figure the notes quote
        print(
            f"\n[digits] champion {reg['arch']}: test accuracy {test_accuracy:.4f} on "
            f"{reg['vs_runner_up']['images'] if reg['vs_runner_up'] else '?'} test images "
            f"(chance {DIGITS_CHANCE:.0%}); final fit {result.final}"
        )
    assert test_accuracy >= DIGITS_FLOOR, f"{test_accuracy} is not well above chance"
    assert {f"precision_{d}" for d in range(10)} <= set(reg["test"])
    assert 0 <= reg["test"]["auc"] <= 1 and 0 <= reg["test"]["macro_f1"] <= 1
    assert reg["vs_runner_up"]["images"] == sum(prepared["counts"]["test"].values())

    # The registered model says what it answers: a label and p_0 ... p_9.
    version = mlflow.MlflowClient().get_model_version_by_alias("digits", "champion")
    served = mlflow.models.get_model_info(f"models:/digits/{version.version}")
    assert served.signature.outputs.input_names() == [
        "label",
        *(f"p_{d}" for d in range(10)),
        "error",
    ]
    assert served.metadata["classes"] == [str(d) for d in range(10)]

    # The per-image test predictions: the true label, the predicted one, a probability per class.
    import pandas as pd

    frame = pd.read_csv(
        mlflow.artifacts.download_artifacts(f"runs:/{reg['run_id']}/test_predictions.csv"),
        dtype={"label": str, "predicted": str},
    )
    assert list(frame.columns) == ["path", "label", "predicted", *(f"p_{d}" for d in range(10))]
    assert (frame["label"] == frame["predicted"]).mean() == pytest.approx(test_accuracy)

    # The default model is the cats-and-dogs champion; the error names the one there is.
    missing = cli("predict", digits_folder / "3", code=2).output
    assert "models:/catdog@champion" in missing and "registered there: digits" in missing
    model = ("--model", "models:/digits@champion")
    ev = json.loads(
        cli("evaluate", *model, "--data", workdir / "digits", "--format", "json").stdout
    )
    assert ev["classes"] == [str(d) for d in range(10)] and len(ev["confusion"]) == 10
    assert ev["accuracy"] == pytest.approx(test_accuracy)
    assert ev["balanced_accuracy"] == pytest.approx(reg["test"]["balanced_accuracy"])
    assert "(one-vs-rest)" in cli("evaluate", *model, "--data", workdir / "digits").stdout

    preds = json.loads(cli("predict", *model, digits_folder / "3", "--format", "json").stdout)
    assert {p["label"] for p in preds} <= {str(d) for d in range(10)}
    assert all(sum(p[f"p_{d}"] for d in range(10)) == pytest.approx(1, abs=1e-4) for p in preds)
    assert np.mean([p["label"] == "3" for p in preds]) >= DIGITS_FLOOR

    page = (workdir / cli("report", "--out", "r.html").stdout.strip()).read_text()
    assert "most confidently wrong" in page.lower() and "(one-vs-rest)" in page
    assert "Grad-CAM" in page or "saliency" in page


# ---------------------------------------------------------------- a model from before


def test_an_old_binary_model_registered_before_class_names_still_loads_and_predicts(workdir):
    import mlflow
    import pandas as pd

    from catdog.inference import load_classifier, to_pixels
    from catdog.tracking import store
    from tests.legacy import OUTPUT, log_old_keras_model, log_old_serving_model, old_binary_model

    store.configure()
    model = old_binary_model(32)
    photos = [write_jpeg(workdir / "photos" / f"{i}.jpg", i, size=(60, 45)) for i in range(3)]
    pixels, _ = to_pixels([p.read_bytes() for p in photos], 32)
    with mlflow.start_run():
        logged = log_old_keras_model(model, pixels)  # no class names, as it was
        serving = log_old_serving_model(model, photos[0].read_bytes())
    version = mlflow.register_model(serving.model_uri, "catdog")
    mlflow.MlflowClient().set_registered_model_alias("catdog", "champion", version.version)
    assert model.layers[-1].name == OUTPUT

    p_dog = model.predict(pixels, verbose=0).ravel()
    for uri in ("models:/catdog@champion", logged.model_uri):
        assert load_classifier(uri).classes == ("cat", "dog")
        preds = json.loads(cli("predict", *photos, "--model", uri, "--format", "json").stdout)
        assert [p["label"] for p in preds] == ["dog" if p >= 0.5 else "cat" for p in p_dog]
        assert [p["p_dog"] for p in preds] == pytest.approx(p_dog, abs=1e-6)
        assert [p["p_cat"] for p in preds] == pytest.approx(1 - p_dog, abs=1e-6)

    # The serving model itself, loaded by MLflow, answers with a probability per class.
    answer = mlflow.pyfunc.load_model("models:/catdog@champion").predict(
        pd.DataFrame({"image": [p.read_bytes() for p in photos] + [b"junk"]})
    )
    assert list(answer.columns) == ["label", "p_cat", "p_dog", "error"]
    assert answer["error"].tolist()[-1] == "not an image"

    labelled = workdir / "labelled"
    for i in range(2):
        write_jpeg(labelled / "cats" / f"{i}.jpg", 10 + i)
        write_jpeg(labelled / "dogs" / f"{i}.jpg", 20 + i)
    ev = json.loads(cli("evaluate", "--data", labelled, "--format", "json").stdout)
    assert ev["classes"] == ["cat", "dog"] and ev["n"] == 4


def test_a_bare_keras_file_without_class_names_evaluates_on_sorted_folders(workdir):
    import keras

    from catdog import models

    path = workdir / "three.keras"
    models.get("baseline").build(image_size=32, num_classes=3).save(path)
    keras.backend.clear_session()
    data = folders(workdir / "data", {"ant": 2, "bee": 2, "moth": 2})
    ev = json.loads(cli("evaluate", "--model", path, "--data", data, "--format", "json").stdout)
    assert ev["classes"] == ["ant", "bee", "moth"] and len(ev["confusion"]) == 3
    preds = json.loads(cli("predict", data / "ant", "--model", path, "--format", "json").stdout)
    assert set(preds[0]) == {"path", "label", "p_0", "p_1", "p_2", "error"}
    bad = cli(
        "evaluate", "--model", path, "--data", folders(workdir / "two", {"a": 2, "b": 2}), code=2
    )
    assert "has 2 classes and the model 3 outputs" in bad.output
