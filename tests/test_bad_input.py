"""Bad input at the command line: missing, empty, one-class and misnamed folders for `data prepare`
and `evaluate`, unreadable files and folders, read-only destinations, and `predict` on a mix of
good and bad files. A user's mistake is one sentence and exit code 2; a bad file costs only itself.

Permission problems are tested twice: for real with chmod (skipped as root, which reads and writes
whatever the mode says) and with the system call made to fail, which runs as root too.
"""

from __future__ import annotations

import errno
import json
import os
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from catdog.cli import main
from catdog.data import load_manifest, read_summary
from tests.imagegen import make_layout, write_jpeg, zip_dir

AS_ROOT = os.geteuid() == 0
ROOT_IGNORES_MODES = "running as root, which reads and writes whatever a file's mode says; the monkeypatch variant covers it"
HOW = [
    "monkeypatch",
    pytest.param("chmod", marks=pytest.mark.skipif(AS_ROOT, reason=ROOT_IGNORES_MODES)),
]
CORRUPT = b"\xff\xd8\xff\xe0" + random.Random(1).randbytes(300)  # a JPEG header, garbage after


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def assert_one_sentence(result, *fragments: str) -> str:
    """Exit code 2 and a single `error: ...` line on stderr holding every fragment."""
    assert result.exit_code == 2, (result.output, result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0]
    return errors[0]


def denied(path: str | Path) -> PermissionError:
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))


def deny_reading(path: Path, how: str, monkeypatch) -> None:
    """Make opening the file `path` fail with "Permission denied"."""
    if how == "chmod":
        path.chmod(0)
        return
    real_open = Path.open  # read_bytes() opens through it too

    def refusing_open(self, *args, **kwargs):
        if Path(os.path.abspath(self)) == path.absolute():
            raise denied(self)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refusing_open)


def deny_listing(folder: Path, how: str, monkeypatch) -> None:
    """Make listing the folder `folder` fail with "Permission denied"."""
    if how == "chmod":
        folder.chmod(0)
        return
    real_scandir = os.scandir  # os.walk lists through it

    def refusing_scandir(path="."):
        if isinstance(path, (str, os.PathLike)) and Path(path) == folder:
            raise denied(path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refusing_scandir)


@pytest.fixture
def restore_modes(tmp_path):
    """Give every folder and file back its permissions, so pytest can delete tmp_path."""
    yield
    for path in [tmp_path, *tmp_path.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


# ---------------------------------------------------------------- catdog data prepare


def one_class(root: Path) -> None:
    for i in range(3):
        write_jpeg(root / f"train/cats/cat.{i}.jpg", i)


def other_animals(root: Path) -> None:
    for i, animal in enumerate(("horses", "birds")):
        write_jpeg(root / f"train/{animal}/{animal}.1.jpg", i)


def horses_only(root: Path) -> None:
    for i in range(3):
        write_jpeg(root / f"train/horses/{i}.jpg", i)


def classes_in_two_cases(root: Path) -> None:
    for i, folder in enumerate(("train/horses", "train/zebras", "test/Horses", "test/zebras")):
        for k in range(3):
            write_jpeg(root / folder / f"{k}.jpg", 10 * i + k)


def an_empty_class(root: Path) -> None:
    for i, animal in enumerate(("horses", "zebras")):
        for k in range(3):
            write_jpeg(root / animal / f"{k}.jpg", 10 * i + k)
    (root / "donkeys").mkdir()


def only_system_files(root: Path) -> None:
    root.mkdir(parents=True)
    (root / ".DS_Store").write_bytes(b"\x00" * 16)
    (root / "Thumbs.db").write_bytes(b"\x00" * 16)


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "zip"])
@pytest.mark.parametrize(
    "build, fragments",
    [
        (lambda root: root.mkdir(parents=True), ["contains no files"]),
        (only_system_files, ["contains no files (hidden and system files aside)"]),
        (
            one_class,
            ["has cat images but no dog images in the salader layout", "catdog needs both classes"],
        ),
        (
            other_animals,
            [
                "class 'birds' has 1 usable image in ",
                "too few to split into train, val and test",
                "(it needs at least 3)",
            ],
        ),
        (horses_only, ["has images of one class only ('horses'", "needs at least two classes"]),
        (
            classes_in_two_cases,
            ["has class folders 'Horses' and 'horses', which differ only in case"],
        ),
        (an_empty_class, ["the class folder donkeys in ", "is empty"]),
    ],
    ids=[
        "empty",
        "system-files-only",
        "cats-only",
        "horses-and-birds",
        "horses-only",
        "case-clash",
        "empty-class",
    ],
)
def test_prepare_refuses_what_is_not_a_dataset(tmp_path, build, fragments, packed):
    source = tmp_path / "src"
    build(source)
    if packed:
        source = zip_dir(
            source, tmp_path / "src.zip", {"donkeys/": b""} if build is an_empty_class else None
        )
    message = assert_one_sentence(
        cli("data", "prepare", str(source), "--dest", str(tmp_path / "out")), *fragments
    )
    assert str(source) in message
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {"src", source.name}
    )  # no temp folder left


def test_prepare_of_a_missing_path(tmp_path):
    result = cli("data", "prepare", str(tmp_path / "nope"), "--dest", str(tmp_path / "out"))
    assert_one_sentence(result, f"{tmp_path / 'nope'} does not exist", "catdog download")


@pytest.mark.parametrize("how", HOW)
def test_prepare_drops_an_unreadable_file_and_keeps_the_rest(
    tmp_path, monkeypatch, restore_modes, how
):
    src = make_layout(tmp_path / "src", "salader", 4)
    deny_reading(src / "train/dogs/dog.2.jpg", how, monkeypatch)
    result = cli(
        "data", "prepare", str(src), "--dest", str(tmp_path / "out"), "--val-fraction", "0"
    )
    assert result.exit_code == 0, (result.output, result.exception)
    summary = read_summary(tmp_path / "out")
    assert summary["dropped_files"] == [{"path": "train/dogs/dog.2.jpg", "reason": "unreadable"}]
    assert summary["counts"]["train"] == {"cat": 4, "dog": 3}
    assert len(load_manifest(tmp_path / "out")) == 15


@pytest.mark.parametrize("how", HOW)
def test_prepare_refuses_a_folder_it_cannot_list(tmp_path, monkeypatch, restore_modes, how):
    # os.walk skips such a folder silently: the dataset would lose every photo in it unnoticed.
    src = make_layout(tmp_path / "src", "salader", 4)
    deny_listing(src / "test/dogs", how, monkeypatch)
    result = cli("data", "prepare", str(src), "--dest", str(tmp_path / "out"))
    assert_one_sentence(result, f"cannot list the folder {src / 'test/dogs'} (Permission denied)")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("how", HOW)
def test_prepare_into_a_read_only_folder(tmp_path, monkeypatch, restore_modes, how):
    src = make_layout(tmp_path / "src", "flat", 4)
    read_only = tmp_path / "mnt"
    read_only.mkdir()
    dest = read_only / "prepared"
    if how == "chmod":
        read_only.chmod(0o555)
        reason = "Permission denied"
    else:  # a read-only mount: every write below it fails with EROFS
        real_mkdir = Path.mkdir

        def mkdir(self, *args, **kwargs):
            if read_only in Path(os.path.abspath(self)).parents:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
        reason = os.strerror(errno.EROFS)
    result = cli("data", "prepare", str(src), "--dest", str(dest))
    assert_one_sentence(
        result, f"cannot write the prepared dataset to {dest} ({reason})", "writable folder"
    )
    assert list(read_only.iterdir()) == []


# ---------------------------------------------------------------- catdog evaluate


def labelled(root: Path, cats: int = 2, dogs: int = 2) -> Path:
    for i in range(cats):
        write_jpeg(root / f"cats/{i}.jpg", 100 + i)
    for i in range(dogs):
        write_jpeg(root / f"dogs/{i}.jpg", 200 + i)
    return root


def animal_folders(root: Path) -> None:
    for animal in ("horses", "birds"):
        write_jpeg(root / animal / "1.jpg", len(animal))


def no_dog_images(root: Path) -> None:
    labelled(root, dogs=0)
    (root / "dogs").mkdir()
    (root / "dogs" / "readme.txt").write_text("photos to follow")


@pytest.mark.parametrize(
    "build, fragments",
    [
        (None, ["does not exist; pass a labelled folder (<class>/* or <split>/<class>/*"]),
        (lambda root: root.write_bytes(b"x"), ["is a file, not a folder"]),
        (lambda root: root.mkdir(), ["is empty; pass a labelled folder"]),
        (
            lambda root: labelled(root, dogs=0),
            ["has images of one class only ('cats'", "at least two classes"],
        ),
        (
            animal_folders,
            ["has images of class 'birds', which the model does not know (its classes: cat, dog)"],
        ),
        (no_dog_images, ["has no image files (.bmp, ", "of class 'dogs'"]),
    ],
    ids=["missing", "a-file", "empty", "cats-only", "horses-and-birds", "no-dog-images"],
)
def test_evaluate_refuses_what_is_not_labelled(tmp_path, build, fragments, legacy_model):
    data = tmp_path / "data"
    if build:
        build(data)
    # The folder is checked before the model is loaded, so a model is needed only to match classes.
    result = cli("evaluate", "--model", str(legacy_model), "--data", str(data))
    assert str(data) in assert_one_sentence(result, *fragments)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """catdog's baseline CNN at 32 px, untrained, saved the way `predict --model path` loads it."""
    import keras

    from catdog import models

    path = tmp_path_factory.mktemp("model") / "baseline-32.keras"
    models.get("baseline").build(image_size=32).save(path)
    keras.backend.clear_session()
    return path


@pytest.mark.parametrize("how", HOW)
def test_evaluate_skips_unreadable_files_and_names_them(
    tmp_path, monkeypatch, restore_modes, tiny_model, how
):
    data = labelled(tmp_path / "data")
    (data / "cats/broken.jpg").write_bytes(CORRUPT)
    locked = write_jpeg(data / "dogs/locked.jpg", 300)
    deny_reading(locked, how, monkeypatch)
    result = cli("evaluate", "--model", str(tiny_model), "--data", str(data), "--format", "json")
    assert result.exit_code == 0, (result.output, result.exception)
    report = json.loads(result.stdout)
    assert report["n"] == 4 and sum(map(sum, report["confusion"])) == 4
    assert report["skipped"] == [
        {"path": str(data / "cats/broken.jpg"), "reason": "corrupt"},
        {"path": str(locked), "reason": "permission denied"},
    ]
    assert f"skipped {locked}: permission denied" in result.stderr.splitlines()

    for good in [*data.glob("cats/?.jpg"), *data.glob("dogs/?.jpg")]:
        good.unlink()
    result = cli("evaluate", "--model", str(tiny_model), "--data", str(data))
    assert_one_sentence(
        result, f"none of the 2 images in {data} could be used (corrupt: 1, permission denied: 1)"
    )


# ---------------------------------------------------------------- catdog predict


@pytest.mark.parametrize("how", HOW)
def test_predict_labels_good_files_and_names_each_bad_one(
    tmp_path, monkeypatch, restore_modes, tiny_model, how
):
    good = [write_jpeg(tmp_path / "cat.jpg", 1), write_jpeg(tmp_path / "gray.jpg", 2, mode="L")]
    bad = {
        tmp_path / "corrupt.jpg": "corrupt",
        tmp_path / "empty.jpg": "empty",
        tmp_path / "notes.jpg": "not an image",
        tmp_path / "locked.jpg": "permission denied",
        tmp_path / "missing.jpg": "no such file or directory",
    }
    (tmp_path / "corrupt.jpg").write_bytes(CORRUPT)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("shopping list: cat food")
    deny_reading(write_jpeg(tmp_path / "locked.jpg", 3), how, monkeypatch)
    paths = [str(p) for p in [good[0], *bad, good[1]]]

    table = cli("predict", *paths, "--model", str(tiny_model))
    assert table.exit_code == 1, (table.output, table.exception)
    rows = [line.split("\t") for line in table.stdout.splitlines()]
    assert [row[0] for row in rows] == [str(p) for p in good]
    # No class names came with the bare .keras file: its outputs are called 0 and 1.
    assert all(
        row[1] in ("0", "1") and row[2].startswith("p_0=") and row[3].startswith("p_1=")
        for row in rows
    )
    errors = [line for line in table.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: cannot read {path}: {why}" for path, why in bad.items()] + [
        "error: 5 of 7 images could not be read"
    ]

    as_json = cli("predict", *paths, "--model", str(tiny_model), "--format", "json")
    assert as_json.exit_code == 1
    predictions = {p["path"]: p for p in json.loads(as_json.stdout)}
    assert list(predictions) == paths
    for path, why in bad.items():
        assert predictions[str(path)] == {
            "path": str(path),
            "label": None,
            "p_0": None,
            "p_1": None,
            "error": why,
        }
    for path in good:
        assert (
            predictions[str(path)]["label"] in ("0", "1")
            and predictions[str(path)]["error"] is None
        )
