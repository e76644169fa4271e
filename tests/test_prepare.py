"""prepare(): layouts, bad files, huge images, zip bombs, duplicates, splits, atomic output;
resolve_data(); a real-photo smoke test."""

from __future__ import annotations

import copy
import hashlib
import importlib
import io
import json
import random
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from catdog.data import (
    ImageCheck,
    check_image,
    is_prepared,
    load_manifest,
    prepare,
    prepared_dir,
    read_summary,
    resolve_data,
)
from catdog.errors import CatdogError
from tests.imagegen import class_path, image_bytes, make_layout, write_jpeg, zip_dir

# catdog.data re-exports the function prepare(), which shadows the submodule's attribute name.
prepare_mod = importlib.import_module("catdog.data.prepare")
images_mod = importlib.import_module("catdog.data.images")
sources_mod = importlib.import_module("catdog.data.sources")  # the zip-bomb caps live here
resolve_mod = importlib.import_module("catdog.data.resolve")
REPO = Path(__file__).resolve().parents[1]

N = 10  # generated images per label per split folder
LABELS = ("cat", "dog")  # the classes the Dogs-vs-Cats layouts give

# After the bad files below: kept cats = N (+N test for salader) + 2 converted; dogs = N (+N).
EXPECTED_COUNTS = {
    "salader": {
        "train": {"cat": 10, "dog": 8},
        "val": {"cat": 2, "dog": 2},
        "test": {"cat": 10, "dog": 10},
    },
    "petimages": {
        "train": {"cat": 8, "dog": 6},
        "val": {"cat": 2, "dog": 2},
        "test": {"cat": 2, "dog": 2},
    },
    "flat": {
        "train": {"cat": 8, "dog": 6},
        "val": {"cat": 2, "dog": 2},
        "test": {"cat": 2, "dog": 2},
    },
}
EXPECTED_DROPPED = {
    "corrupt": 1,
    "duplicate": 1,
    "empty": 1,
    "ignored": 2,
    "not an image": 1,
    "truncated": 1,
}


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
    "mode, fmt",
    [
        ("L", "JPEG"),
        ("CMYK", "JPEG"),
        ("RGBA", "PNG"),
        ("P", "GIF"),
        ("RGB", "BMP"),
        ("RGB", "WEBP"),
    ],
)
def test_check_image_converts_everything_else_to_rgb_jpeg(mode, fmt):
    result = check_image(image_bytes(3, mode=mode, fmt=fmt))
    assert (result.ok, result.converted_from, result.width, result.height) == (
        True,
        f"{fmt}/{mode}",
        40,
        30,
    )
    with Image.open(io.BytesIO(result.data)) as img:
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (40, 30))


def test_check_image_puts_transparency_on_white():
    out = io.BytesIO()
    Image.new("RGBA", (16, 16), (0, 0, 0, 0)).save(out, "PNG")
    with Image.open(io.BytesIO(check_image(out.getvalue()).data)) as img:
        assert min(img.getpixel((8, 8))) >= 250


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_check_image_rejects_a_single_pixel(fmt):
    assert check_image(image_bytes(1, size=(1, 1), fmt=fmt)) == ImageCheck(
        False, "too small", None, 1, 1, None
    )


def encoded(img: Image.Image, fmt: str = "JPEG") -> bytes:
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    "size, fmt, stored",
    [
        ((3000, 2000), "JPEG", (1024, 683)),
        ((600, 2400), "PNG", (256, 1024)),
        ((1024, 1024), "JPEG", None),
    ],
)
def test_check_image_downscales_beyond_max_side(size, fmt, stored):
    raw = encoded(Image.new("RGB", size, (200, 120, 40)), fmt)
    result = check_image(raw)
    assert result.ok and images_mod.MAX_SIDE == 1024
    if stored is None:  # at the limit: an RGB JPEG is kept byte for byte
        assert result == ImageCheck(True, None, raw, *size, None)
        return
    assert (result.width, result.height) == stored
    assert result.converted_from == f"{fmt}/RGB downscaled from {size[0]}x{size[1]}"
    with Image.open(io.BytesIO(result.data)) as img:
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", stored)
        assert (
            max(
                abs(a - b)
                for a, b in zip(img.getpixel((stored[0] // 2, stored[1] // 2)), (200, 120, 40))
            )
            <= 3
        )


_PEAK_RSS = """
import json, re, sys
from catdog.data.images import check_image

def kib(field):  # this process's own figures; ru_maxrss would include the parent's peak from before exec
    with open("/proc/self/status") as status:
        return int(re.search(field + r":\\s+(\\d+) kB", status.read()).group(1))

raw = open(sys.argv[1], "rb").read()
before = kib("VmRSS")
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # reset VmHWM, the peak resident size, to the current one
result = check_image(raw)
print(json.dumps({"size": [result.width, result.height], "converted_from": result.converted_from,
                  "peak_mb": (kib("VmHWM") - before) / 1024}))
"""


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="measures peak memory through Linux /proc"
)
def test_huge_jpeg_is_decoded_at_reduced_scale(tmp_path):
    # 10000x10000 RGB decodes to 400 MB in PIL; libjpeg's 1/8 DCT scaling needs 1250x1250 of it.
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (10_000, 10_000), (90, 60, 30)).save(path, quality=80)
    # A fresh process, so its peak resident size measures check_image alone.
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _PEAK_RSS, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result = json.loads(out.stdout)
    assert result["size"] == [1024, 1024]
    assert result["converted_from"] == "JPEG/RGB downscaled from 10000x10000"
    assert 0 < result["peak_mb"] < 100, (
        f"check_image raised peak memory by {result['peak_mb']:.0f} MB"
    )


def test_check_image_refuses_too_many_pixels_before_decoding(monkeypatch):
    monkeypatch.setattr(images_mod, "MAX_PIXELS", 64 * 64)
    png = image_bytes(4, size=(100, 80), fmt="PNG")
    assert check_image(png) == ImageCheck(False, "too large", None, 100, 80, None)
    # Cut off: decoding would say "truncated", so "too large" shows the pixels were never decoded.
    assert check_image(png[: len(png) // 2]).reason == "too large"
    assert check_image(image_bytes(5, size=(60, 60), fmt="PNG")).ok


def test_check_image_keeps_pils_decompression_bomb_limit(monkeypatch):
    monkeypatch.setattr(
        Image, "MAX_IMAGE_PIXELS", 1000
    )  # PIL refuses above twice this, when opening
    assert check_image(image_bytes(6, size=(50, 50))).reason == "too large"


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
    assert summary["not_in_layout"]["count"] == (
        2 if layout == "flat" else 0
    )  # flat's unlabeled test1/
    assert (
        result.digest
        == summary["digest"]
        == hashlib.sha256((result.root / "manifest.csv").read_bytes()).hexdigest()
    )
    assert not temp_leftovers(tmp_path)

    # Same seed, same manifest; another seed draws another val set.
    again = prepare(zip_path, tmp_path / "again", seed=7)
    assert again.digest == result.digest
    other = load_manifest(prepare(zip_path, tmp_path / "other", seed=8).root)
    val = lambda df: set(df.loc[df["split"] == "val", "path"])  # noqa: E731
    assert val(other) != val(load_manifest(result.root))
    assert (
        other.groupby("split").size().to_dict()
        == load_manifest(result.root).groupby("split").size().to_dict()
    )


def test_folder_source_read_only(tmp_path):
    src = make_layout(tmp_path / "src", "salader", N)
    for name, data in bad_files("salader").items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    dirs = [src, *(p for p in src.rglob("*") if p.is_dir())]

    def snapshot() -> dict:
        return {
            p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
            for p in src.rglob("*")
        }

    before = snapshot()
    for d in dirs:
        d.chmod(0o555)
    try:
        result = prepare(src, tmp_path / "out", seed=7)
    finally:
        for d in dirs:
            d.chmod(0o755)
    # Root writes into 0o555 folders anyway, so check that nothing in the source changed either.
    assert snapshot() == before
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
        {
            "sha256": sha,
            "paths": ["test/cats/cat.999.jpg", "train/cats/cat.1.jpg", "train/cats/cat.904.jpg"],
        }
    ]
    assert result.summary["dropped"]["cross-split duplicate"] == 2
    assert "duplicate" not in result.summary["dropped"]
    kept = load_manifest(result.root).query("sha256 == @sha")
    assert kept[["path", "split"]].values.tolist() == [["images/test/cat/cat.999.jpg", "test"]]
    assert "appear in both the train and test folders" in logs.text


def test_same_picture_under_both_labels_is_dropped(tmp_path):
    zip_path = dataset_zip(tmp_path, "flat", {"train/dog.900.jpg": image_bytes(0)})
    summary = prepare(zip_path, tmp_path / "out").summary
    conflicting = [
        d["path"] for d in summary["dropped_files"] if d["reason"] == "duplicate with other label"
    ]
    assert conflicting == ["train/cat.1.jpg", "train/cat.904.jpg", "train/dog.900.jpg"]


@pytest.mark.parametrize(
    "member", ["../evil.jpg", "/abs.jpg", "C:/evil.jpg", "PetImages/Cat/../../evil.jpg"]
)
def test_unsafe_zip_is_refused_whole(tmp_path, member):
    zip_path = dataset_zip(tmp_path, "petimages", {member: image_bytes(1)})
    with pytest.raises(CatdogError, match="unsafe path; refusing to extract anything"):
        prepare(zip_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not temp_leftovers(tmp_path)


JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
BOMB = "train/cats/cat.999.jpg"
MiB = 1 << 20


def add_zeros_member(zip_path: Path, name: str, size: int) -> None:
    """Append `name`: a JPEG header, then zeros up to `size` bytes, deflated about 1000:1 and streamed."""
    zeros = bytes(MiB)
    with zipfile.ZipFile(zip_path, "a", zipfile.ZIP_DEFLATED) as zf, zf.open(name, "w") as out:
        out.write(JPEG_HEAD)
        for left in range(size - len(JPEG_HEAD), 0, -MiB):
            out.write(zeros[: min(left, MiB)])


def forge_declared_size(zip_path: Path, name: str, size: int) -> None:
    """Make `name`'s local header and central directory entry claim `size` unpacked bytes."""
    data = bytearray(zip_path.read_bytes())
    # (signature, offset of the uncompressed size, offset of the file name) in each header.
    for signature, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        at = data.find(signature)
        while data[at + name_at : at + name_at + len(name)] != name.encode():
            at = data.find(signature, at + 1)
            assert at >= 0, f"no {signature!r} header for {name}"
        struct.pack_into("<I", data, at + size_at, size)
    zip_path.write_bytes(bytes(data))


def bomb_zip(tmp_path: Path, size: int = 16 * MiB) -> Path:
    zip_path = zip_dir(make_layout(tmp_path / "src", "salader", N), tmp_path / "bomb.zip")
    add_zeros_member(zip_path, BOMB, size)
    assert zip_path.stat().st_size < size // 100  # it is a bomb: tiny packed, large unpacked
    return zip_path


def prepare_traced(zip_path: Path, dest: Path):
    """prepare(), and the most memory Python held at once meanwhile (every thread's bytes objects)."""
    tracemalloc.start()
    try:
        result = prepare(zip_path, dest)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def reasons(result) -> dict[str, str]:
    return {d["path"]: d["reason"] for d in result.summary["dropped_files"]}


def test_zip_bomb_member_is_dropped_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(sources_mod, "MAX_MEMBER_BYTES", MiB)
    zip_path = bomb_zip(tmp_path)
    opened, real_open = [], zipfile.ZipFile.open

    def recording_open(self, name, *args, **kwargs):
        opened.append(name)
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", recording_open)
    result, peak = prepare_traced(zip_path, tmp_path / "out")
    assert reasons(result) == {BOMB: "too large"}
    assert BOMB not in opened and len(opened) == 4 * N  # its declared size was enough to drop it
    assert result.counts["train"]["cat"] + result.counts["val"]["cat"] == N
    assert peak < 4 * MiB, f"prepare held {peak / MiB:.0f} MiB: the 16 MiB member was read"


def test_lying_size_header_is_stopped_by_what_comes_out(tmp_path, monkeypatch):
    # The declared size is all the pre-check sees; reading must count the bytes really produced.
    monkeypatch.setattr(sources_mod, "MAX_MEMBER_BYTES", MiB)
    real_infolist = zipfile.ZipFile.infolist

    def lying_infolist(self):
        infos = [copy.copy(info) for info in real_infolist(self)]
        for info in infos:
            if info.filename == BOMB:
                info.file_size = 1000
        return infos

    monkeypatch.setattr(zipfile.ZipFile, "infolist", lying_infolist)
    result, peak = prepare_traced(bomb_zip(tmp_path), tmp_path / "out")
    assert reasons(result) == {BOMB: "too large"}
    assert peak < 4 * MiB, f"prepare held {peak / MiB:.0f} MiB: reading did not stop at the cap"


def test_forged_size_in_the_archive_is_not_believed_either(tmp_path, monkeypatch):
    # Headers rewritten on disk: zipfile stops at the declared size and the CRC then fails.
    monkeypatch.setattr(sources_mod, "MAX_MEMBER_BYTES", MiB)
    zip_path = bomb_zip(tmp_path)
    forge_declared_size(zip_path, BOMB, 1000)
    assert zipfile.ZipFile(zip_path).getinfo(BOMB).file_size == 1000
    result, peak = prepare_traced(zip_path, tmp_path / "out")
    assert reasons(result) == {BOMB: "unreadable"}
    assert peak < 4 * MiB


def test_archive_declaring_too_much_is_refused_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(sources_mod, "MAX_ARCHIVE_BYTES", 8 * MiB)
    zip_path = bomb_zip(tmp_path)
    started = time.monotonic()
    with pytest.raises(
        CatdogError, match=r"would unpack to 16\.\d MiB, more than the 8 MiB"
    ) as excinfo:
        prepare(zip_path, tmp_path / "out")
    assert time.monotonic() - started < 1
    assert str(zip_path) in str(excinfo.value) and "\n" not in str(excinfo.value)
    assert not (tmp_path / "out").exists() and not temp_leftovers(tmp_path)


def test_oversized_file_in_a_folder_is_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(sources_mod, "MAX_MEMBER_BYTES", MiB)
    src = make_layout(tmp_path / "src", "salader", N)
    (src / BOMB).write_bytes(JPEG_HEAD + bytes(2 * MiB))
    assert reasons(prepare(src, tmp_path / "out")) == {BOMB: "too large"}


def test_prepare_stores_large_photos_downscaled(tmp_path):
    src = make_layout(tmp_path / "src", "salader", N)
    Image.new("RGB", (3000, 2000), (10, 200, 30)).save(src / "train/dogs/dog.999.jpg")
    result = prepare(src, tmp_path / "out")
    assert_valid_dataset(result.root)  # manifest width/height are those of the stored file
    row = load_manifest(result.root).query("path.str.endswith('dog.999.jpg')").iloc[0]
    assert (row.width, row.height) == (1024, 683)
    assert result.summary["converted_files"] == [
        {"path": "train/dogs/dog.999.jpg", "converted_from": "JPEG/RGB downscaled from 3000x2000"}
    ]


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
    # Loose photos, no class folders: nothing says what they are.
    for label in LABELS:
        write_jpeg(tmp_path / "src" / f"{label}.1.jpg", seed=len(label))
    with pytest.raises(CatdogError, match=r"salader .*petimages .*flat .*<class>/\*") as excinfo:
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


# ---------------------------------------------------------------- class balance


def lopsided(root: Path, counts: dict[str, int]) -> Path:
    """Generated photos in the plain layout <class>/*: {"horses": 150, ...}."""
    n = 0
    for label, count in counts.items():
        for i in range(count):
            write_jpeg(root / label / f"{i}.jpg", 50_000 + n, size=(32, 32))
            n += 1
    return root


def test_imbalanced_classes_are_named_split_with_enough_of_each_and_weighted(tmp_path, logs):
    from catdog.data import class_weights, is_imbalanced, objective

    result = prepare(
        lopsided(tmp_path / "horses-zebras", {"horses": 150, "zebras": 12}), tmp_path / "out"
    )
    warned = [r.getMessage() for r in logs.records if r.levelname == "WARNING"]
    assert any(
        "imbalanced classes" in w and "horses 150, zebras 12" in w and "12.5x" in w for w in warned
    ), warned
    balance = read_summary(result.root)["balance"]
    assert balance["imbalanced"] and balance["ratio"] == 12.5
    assert balance["counts"] == {"horses": 150, "zebras": 12}
    # In proportion, the 12 zebras would leave 2 in test and 2 in val; a quarter of the class
    # each (3) is kept, and half of it still trains. The large class keeps its proportional share.
    assert result.counts["test"] == {"horses": 30, "zebras": 3}
    assert result.counts["val"] == {"horses": 24, "zebras": 3}
    assert result.counts["train"] == {"horses": 96, "zebras": 6}
    manifest = load_manifest(result.root)
    assert manifest.groupby(["split", "label"]).size().to_dict() == {
        (s, c): n for s, by in result.counts.items() for c, n in by.items()
    }

    # Balanced weights over the train split: every class weighs the same in the loss.
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    weights = class_weights(result.root)
    assert weights == pytest.approx({0: 102 / (2 * 96), 1: 102 / (2 * 6)})
    assert list(weights.values()) == pytest.approx(
        list(
            compute_class_weight(
                "balanced", classes=np.array([0, 1]), y=np.array([0] * 96 + [1] * 6)
            )
        )
    )
    assert 96 * weights[0] == pytest.approx(6 * weights[1])
    assert is_imbalanced(result.root) and objective(result.root) == "val_balanced_accuracy"

    # A dataset prepared before the balance was recorded is counted from its manifest.
    summary = json.loads((result.root / "summary.json").read_text())
    del summary["balance"]
    (result.root / "summary.json").write_text(json.dumps(summary))
    assert is_imbalanced(result.root) and class_weights(result.root) == weights


def test_a_balanced_dataset_is_split_in_proportion_without_a_warning(tmp_path, logs):
    from catdog.data import class_weights, is_imbalanced, objective

    # 3x is the limit: 36 and 12 are not imbalanced, and split in proportion as always.
    result = prepare(lopsided(tmp_path / "src", {"a": 36, "b": 12}), tmp_path / "out")
    assert not [r for r in logs.records if r.levelname == "WARNING"]
    assert not is_imbalanced(result.root) and objective(result.root) == "val_accuracy"
    assert result.counts["test"] == {"a": 7, "b": 2} and result.counts["val"] == {"a": 6, "b": 2}
    assert class_weights(result.root)[1] == pytest.approx(31 / (2 * 8))


@pytest.mark.real_data
def test_real_photos_smoke(
    tmp_path, real_data
):  # real_data (conftest) skips with a reason when absent
    result = prepare(real_data, tmp_path / "mini")
    counts = {split: sum(by_label.values()) for split, by_label in result.counts.items()}
    dropped = sum(result.summary["dropped"].values())
    assert result.summary["layout"] == "salader"
    assert counts["train"] + counts["val"] + dropped == 4000
    assert counts["test"] == 1000
    assert 780 <= counts["val"] <= 800
    assert not result.summary["cross_split_duplicates"]
