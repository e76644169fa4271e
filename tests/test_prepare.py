"""prepare(): layouts, bad files, duplicates, splits, atomic output; resolve_data(); a real-photo smoke test."""

from __future__ import annotations

import hashlib
import importlib
import io
import logging
import random
import threading
from pathlib import Path

import pytest
from PIL import Image

from catdog.data import (
    LABELS,
    ImageCheck,
    check_image,
    is_prepared,
    load_manifest,
    prepare,
    read_summary,
    prepared_dir,
    resolve_data,
)
from catdog.errors import CatdogError
from tests.imagegen import class_path, image_bytes, make_layout, write_jpeg, zip_dir

# catdog.data re-exports the function prepare(), which shadows the submodule's attribute name.
prepare_mod = importlib.import_module("catdog.data.prepare")
resolve_mod = importlib.import_module("catdog.data.resolve")

N = 10  # generated images per label per split folder

# After the bad files below: kept cats = N (+N test for salader) + 2 converted; dogs = N (+N).
EXPECTED_COUNTS = {
    "salader": {"train": {"cat": 10, "dog": 8}, "val": {"cat": 2, "dog": 2}, "test": {"cat": 10, "dog": 10}},
    "petimages": {"train": {"cat": 8, "dog": 6}, "val": {"cat": 2, "dog": 2}, "test": {"cat": 2, "dog": 2}},
    "flat": {"train": {"cat": 8, "dog": 6}, "val": {"cat": 2, "dog": 2}, "test": {"cat": 2, "dog": 2}},
}
EXPECTED_DROPPED = {"corrupt": 1, "duplicate": 1, "empty": 1, "ignored": 2, "not an image": 1, "truncated": 1}


@pytest.fixture
def logs(caplog):
    # The CLI's log.setup() stops "catdog" propagating to the root logger caplog listens on.
    logger = logging.getLogger("catdog")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="catdog")
    yield caplog
    logger.removeHandler(caplog.handler)


def bad_files(layout: str) -> dict[str, bytes]:
    """One of each problem, filed as cats, keyed by their path in `layout`."""
    first_cat = image_bytes(0)  # make_layout's seed-0 cat.1
    cat = lambda k: class_path(layout, "cat", 900 + k)  # noqa: E731
    cat_dir = cat(0).rsplit("/", 1)[0]
    return {
        cat(1): b"\xff\xd8\xff\xe0" + random.Random(1).randbytes(500),  # JPEG header, garbage after
        cat(2): b"",
        cat(3): first_cat[: len(first_cat) // 2],
        cat(4): first_cat,  # exact duplicate of cat.1
        cat(5): image_bytes(5, mode="L"),  # grayscale JPEG
        cat(6): image_bytes(6, mode="RGBA", fmt="PNG"),  # PNG with a .jpg name
        cat(7): b"plain text, no picture " + random.Random(7).randbytes(300),
        f"{cat_dir}/Thumbs.db": b"\x00" * 64,
        f"__MACOSX/{cat_dir}/._cat.1.jpg": b"\x00\x05\x16\x07",
    }


def dataset_zip(tmp_path: Path, layout: str, extra: dict[str, bytes] | None = None) -> Path:
    src = make_layout(tmp_path / f"src-{layout}", layout, N)
    return zip_dir(src, tmp_path / f"{layout}.zip", {**bad_files(layout), **(extra or {})})


def temp_leftovers(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def assert_valid_dataset(root: Path) -> None:
    df = load_manifest(root)
    assert list(df.columns) == ["path", "label", "split", "sha256", "width", "height", "abspath"]
    assert set(df["split"]) <= {"train", "val", "test"} and set(df["label"]) <= set(LABELS)
    assert df["path"].is_unique
    for row in df.itertuples():
        data = Path(row.abspath).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256
        assert row.path == f"images/{row.split}/{row.label}/{Path(row.path).name}"
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (row.width, row.height))


def test_check_image_keeps_rgb_jpegs_byte_for_byte():
    rgb = image_bytes(1)
    assert check_image(rgb) == ImageCheck(True, None, rgb, 40, 30, None)
    assert check_image(image_bytes(2, size=(7, 30))).reason == "too small"


@pytest.mark.parametrize(
    "mode, fmt", [("L", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("P", "GIF"), ("RGB", "BMP"), ("RGB", "WEBP")]
)
def test_check_image_converts_everything_else_to_rgb_jpeg(mode, fmt):
    result = check_image(image_bytes(3, mode=mode, fmt=fmt))
    assert (result.ok, result.converted_from, result.width, result.height) == (True, f"{fmt}/{mode}", 40, 30)
    with Image.open(io.BytesIO(result.data)) as img:
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (40, 30))


def test_check_image_puts_transparency_on_white():
    out = io.BytesIO()
    Image.new("RGBA", (16, 16), (0, 0, 0, 0)).save(out, "PNG")
    with Image.open(io.BytesIO(check_image(out.getvalue()).data)) as img:
        assert min(img.getpixel((8, 8))) >= 250


@pytest.mark.parametrize("layout", ["salader", "petimages", "flat"])
def test_prepare_zip_layouts(tmp_path, layout):
    zip_path = dataset_zip(tmp_path, layout)
    result = prepare(zip_path, tmp_path / "out", seed=7)

    assert result.root == tmp_path / "out" and is_prepared(result.root)
    assert_valid_dataset(result.root)
    summary = read_summary(result.root)
    assert summary["layout"] == layout
    assert result.counts == summary["counts"] == EXPECTED_COUNTS[layout]
    assert summary["dropped"] == EXPECTED_DROPPED
    assert sum(summary["dropped"].values()) == len(summary["dropped_files"])
    assert summary["converted"] == 2
    assert sorted(c["converted_from"] for c in summary["converted_files"]) == ["JPEG/L", "PNG/RGBA"]
    assert summary["cross_split_duplicates"] == []
    assert summary["test_fraction"] == (None if layout == "salader" else 0.2)
    assert summary["not_in_layout"]["count"] == (2 if layout == "flat" else 0)  # flat's unlabeled test1/
    assert result.digest == summary["digest"] == hashlib.sha256((result.root / "manifest.csv").read_bytes()).hexdigest()
    assert not temp_leftovers(tmp_path)

    # Same seed, same manifest; another seed draws another val set.
    again = prepare(zip_path, tmp_path / "again", seed=7)
    assert again.digest == result.digest
    other = load_manifest(prepare(zip_path, tmp_path / "other", seed=8).root)
    val = lambda df: set(df.loc[df["split"] == "val", "path"])  # noqa: E731
    assert val(other) != val(load_manifest(result.root))
    assert other.groupby("split").size().to_dict() == load_manifest(result.root).groupby("split").size().to_dict()


def test_folder_source_read_only(tmp_path):
    src = make_layout(tmp_path / "src", "salader", N)
    for name, data in bad_files("salader").items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    dirs = [src, *(p for p in src.rglob("*") if p.is_dir())]
    for d in dirs:
        d.chmod(0o555)
    try:
        result = prepare(src, tmp_path / "out", seed=7)
    finally:
        for d in dirs:
            d.chmod(0o755)
    assert result.counts == EXPECTED_COUNTS["salader"]
    assert read_summary(result.root)["dropped"] == EXPECTED_DROPPED
    assert_valid_dataset(result.root)


def test_wrapper_folder_and_name_clash(tmp_path):
    src = make_layout(tmp_path / "src" / "kagglecatsanddogs_5340", "petimages", 4)
    png = image_bytes(99, mode="P", fmt="PNG")
    (src / "PetImages/Cat/1.png").write_bytes(png)  # becomes 1.jpg, next to the real 1.jpg
    (src / "readme[1].txt").write_text("not part of the dataset")
    # No val or test: everything lands in train, so the two names must clash.
    result = prepare(tmp_path / "src", tmp_path / "out", val_fraction=0, test_fraction=0)

    assert result.summary["layout"] == "petimages"
    assert result.counts["train"] == {"cat": 5, "dog": 4}
    cats = load_manifest(result.root).query("label == 'cat'")["path"].tolist()
    assert "images/train/cat/1.jpg" in cats
    assert f"images/train/cat/1-{hashlib.sha256(png).hexdigest()[:8]}.jpg" in cats
    assert result.summary["converted_files"] == [
        {"path": "kagglecatsanddogs_5340/PetImages/Cat/1.png", "converted_from": "PNG/P"}
    ]
    assert result.summary["not_in_layout"]["count"] == 1
    assert_valid_dataset(result.root)


def test_cross_split_duplicate_is_reported_and_train_copy_dropped(tmp_path, logs):
    leaked = image_bytes(0)  # the bytes of train/cats/cat.1.jpg
    zip_path = dataset_zip(tmp_path, "salader", {"test/cats/cat.999.jpg": leaked})
    result = prepare(zip_path, tmp_path / "out")

    sha = hashlib.sha256(leaked).hexdigest()
    assert result.summary["cross_split_duplicates"] == [
        {"sha256": sha, "paths": ["test/cats/cat.999.jpg", "train/cats/cat.1.jpg", "train/cats/cat.904.jpg"]}
    ]
    assert result.summary["dropped"]["cross-split duplicate"] == 2
    assert "duplicate" not in result.summary["dropped"]
    kept = load_manifest(result.root).query("sha256 == @sha")
    assert kept[["path", "split"]].values.tolist() == [["images/test/cat/cat.999.jpg", "test"]]
    assert "appear in both the train and test folders" in logs.text


def test_same_picture_under_both_labels_is_dropped(tmp_path):
    zip_path = dataset_zip(tmp_path, "flat", {"train/dog.900.jpg": image_bytes(0)})
    summary = prepare(zip_path, tmp_path / "out").summary
    conflicting = [d["path"] for d in summary["dropped_files"] if d["reason"] == "duplicate with other label"]
    assert conflicting == ["train/cat.1.jpg", "train/cat.904.jpg", "train/dog.900.jpg"]


@pytest.mark.parametrize("member", ["../evil.jpg", "/abs.jpg", "C:/evil.jpg", "PetImages/Cat/../../evil.jpg"])
def test_unsafe_zip_is_refused_whole(tmp_path, member):
    zip_path = dataset_zip(tmp_path, "petimages", {member: image_bytes(1)})
    with pytest.raises(CatdogError, match="unsafe path; refusing to extract anything"):
        prepare(zip_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not temp_leftovers(tmp_path)


class Crash(Exception):
    pass


def crash_after(monkeypatch, n_calls: int) -> None:
    calls, lock = [0], threading.Lock()

    def flaky_check(raw):
        with lock:
            calls[0] += 1
            if calls[0] > n_calls:
                raise Crash("simulated crash mid-prepare")
        return check_image(raw)

    monkeypatch.setattr(prepare_mod, "check_image", flaky_check)


def test_interrupted_prepare_leaves_nothing(tmp_path, monkeypatch):
    zip_path = dataset_zip(tmp_path, "salader")
    crash_after(monkeypatch, 15)
    with pytest.raises(Crash):
        prepare(zip_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not temp_leftovers(tmp_path)


def test_existing_dataset_needs_overwrite_and_survives_a_failed_one(tmp_path, monkeypatch):
    zip_path = dataset_zip(tmp_path, "flat")
    first = prepare(zip_path, tmp_path / "out")
    with pytest.raises(CatdogError, match="already holds a prepared dataset"):
        prepare(zip_path, tmp_path / "out")

    crash_after(monkeypatch, 5)
    with pytest.raises(Crash):
        prepare(zip_path, tmp_path / "out", seed=2, overwrite=True)
    assert read_summary(tmp_path / "out")["digest"] == first.digest
    assert not temp_leftovers(tmp_path)

    monkeypatch.setattr(prepare_mod, "check_image", check_image)
    replaced = prepare(zip_path, tmp_path / "out", seed=2, overwrite=True)
    assert replaced.digest != first.digest == first.summary["digest"]
    assert read_summary(tmp_path / "out")["seed"] == 2
    assert not temp_leftovers(tmp_path)


def test_non_dataset_dest_is_never_replaced(tmp_path):
    zip_path = dataset_zip(tmp_path, "flat")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(CatdogError, match="not a prepared dataset"):
        prepare(zip_path, tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_unknown_layout(tmp_path):
    # Like dogs-vs-cats-mini/test: class folders without a split folder above them.
    for label in LABELS:
        write_jpeg(tmp_path / "src" / f"{label}s" / f"{label}.1.jpg", seed=len(label))
    with pytest.raises(CatdogError, match=r"salader .*petimages .*flat ") as excinfo:
        prepare(tmp_path / "src", tmp_path / "out")
    assert "\n" not in str(excinfo.value)
    assert not (tmp_path / "out").exists() and not temp_leftovers(tmp_path)


def test_bad_arguments(tmp_path):
    with pytest.raises(CatdogError, match="does not exist"):
        prepare(tmp_path / "nope.zip", tmp_path / "out")
    (tmp_path / "fake.zip").write_bytes(b"not a zip")
    with pytest.raises(CatdogError, match="neither a folder nor a zip"):
        prepare(tmp_path / "fake.zip", tmp_path / "out")
    with pytest.raises(CatdogError, match="below 1"):
        prepare(tmp_path / "fake.zip", tmp_path / "out", val_fraction=0.6, test_fraction=0.5)


def test_resolve_data_prepares_once(tmp_path, monkeypatch, logs):
    zip_path = dataset_zip(tmp_path, "petimages")
    data_root = tmp_path / "data"
    first = resolve_data(zip_path, data_root)
    # One naming rule for `catdog data prepare`, train, sweep and the benchmark.
    assert first == data_root / "prepared" / "petimages" == prepared_dir(zip_path, data_root)
    assert is_prepared(first) and "preparing it into" in logs.text

    def must_not_run(*args, **kwargs):
        raise AssertionError("resolve_data prepared the same source twice")

    monkeypatch.setattr(resolve_mod, "prepare", must_not_run)
    assert resolve_data(zip_path, data_root) == first
    assert "reusing" in logs.text
    assert resolve_data(first, data_root) == first  # a prepared dataset is used as it is
    with pytest.raises(CatdogError, match="does not exist"):
        resolve_data(tmp_path / "missing.zip", data_root)


def test_same_name_from_another_source_gets_its_own_folder(tmp_path):
    data_root = tmp_path / "data"
    first = resolve_data(dataset_zip(tmp_path, "petimages"), data_root)
    other = tmp_path / "elsewhere"
    other.mkdir()
    second = resolve_data(dataset_zip(other, "petimages"), data_root)
    assert first.name == "petimages" and second.name.startswith("petimages-")
    assert is_prepared(first) and is_prepared(second)


def test_no_data_uses_the_latest_prepared_dataset(tmp_path):
    data_root = tmp_path / "data"
    prepared = resolve_data(dataset_zip(tmp_path, "salader"), data_root)
    assert resolve_data(None, data_root) == prepared


@pytest.mark.real_data
def test_real_photos_smoke(tmp_path, real_data):  # real_data (conftest) skips with a reason when absent
    result = prepare(real_data, tmp_path / "mini")
    counts = {split: sum(by_label.values()) for split, by_label in result.counts.items()}
    dropped = sum(result.summary["dropped"].values())
    assert result.summary["layout"] == "salader"
    assert counts["train"] + counts["val"] + dropped == 4000
    assert counts["test"] == 1000
    assert 780 <= counts["val"] <= 800
    assert not result.summary["cross_split_duplicates"]
