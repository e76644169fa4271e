"""The prepared-dataset folder: how it is laid out, written, installed and read back.

    DEST/manifest.csv     path,label,split,sha256,width,height (path relative to DEST)
    DEST/summary.json     name, classes, counts, class balance, what was dropped/converted and why,
                          split settings, digest
    DEST/images/<split>/<label>/<name>.jpg   checked RGB JPEGs

`prepare` builds one in a temporary folder and `install`s it under its final name only when
complete, so `is_prepared` is true only for a whole dataset.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from catdog import keys
from catdog.data.checks import Checked
from catdog.errors import CatdogError

MANIFEST = "manifest.csv"
SUMMARY = "summary.json"
COLUMNS = ("path", "label", "split", "sha256", "width", "height")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PreparedDataset:
    root: Path
    digest: str
    counts: dict
    summary: dict


# ---------------------------------------------------------------- writing


def write_images(
    tmp: Path, staging: Path, kept: list[Checked], splits: dict[int, str], classes: tuple[str, ...]
) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """Move each kept staged file to images/<split>/<label>/: (manifest rows, counts per split and label)."""
    rows, used = [], set()
    for record in kept:
        split, label = splits[record.index], record.member.label
        stem = PurePosixPath(record.member.path).stem
        rel = f"images/{split}/{label}/{stem}.jpg"
        if rel in used:  # e.g. x.png next to x.jpg, or equal names in nested folders
            rel = f"images/{split}/{label}/{stem}-{record.sha256[:8]}.jpg"
        used.add(rel)
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / f"{record.index}.jpg", tmp / rel)
        rows.append(
            {
                "path": rel,
                "label": label,
                "split": split,
                "sha256": record.out_sha256,
                "width": record.width,
                "height": record.height,
            }
        )
    rows.sort(key=lambda row: (SPLITS.index(row["split"]), row["label"], row["path"]))
    counts = {split: {label: 0 for label in classes} for split in SPLITS}
    for row in rows:
        counts[row["split"]][row["label"]] += 1
    return rows, counts


def manifest_bytes(rows: list[dict]) -> bytes:
    """The manifest.csv content; its sha256 is the dataset's digest."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def check_dest(dest: Path, overwrite: bool) -> None:
    """Refuse a destination that holds anything but a prepared dataset, or one without `overwrite`."""
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
        return
    if not is_prepared(dest):
        raise CatdogError(f"{dest} already exists and is not a prepared dataset; choose another destination")
    if not overwrite:
        raise CatdogError(
            f"{dest} already holds a prepared dataset; pass --overwrite to replace it or choose another destination"
        )


def install(tmp: Path, dest: Path) -> None:
    """Move the finished folder to `dest`, replacing what is there, so `dest` is never half-written."""
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    if dest.exists():
        os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        if old.exists():
            os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- reading


def is_prepared(path: str | Path) -> bool:
    """True for a complete prepared dataset (prepare only ever creates it whole)."""
    path = Path(path)
    return (path / MANIFEST).is_file() and (path / SUMMARY).is_file()


def _require_prepared(root: Path) -> None:
    if not is_prepared(root):
        raise CatdogError(f"{root} is not a prepared dataset (no {MANIFEST} and {SUMMARY}); run `catdog prepare` first")


def load_manifest(root: str | Path) -> pd.DataFrame:
    """The manifest as a DataFrame, plus an `abspath` column pointing at each image."""
    root = Path(root)
    _require_prepared(root)
    df = pd.read_csv(root / MANIFEST, dtype={"path": str, "label": str, "split": str, "sha256": str})
    base = root.resolve()
    df["abspath"] = [str(base / p) for p in df["path"]]
    return df


def read_summary(root: str | Path) -> dict:
    root = Path(root)
    _require_prepared(root)
    return json.loads((root / SUMMARY).read_text(encoding="utf-8"))


def classes(root: str | Path) -> tuple[str, ...]:
    """The dataset's class names in their fixed order: class i is a model's output i. Datasets
    prepared before classes were recorded hold the sorted labels of their manifest."""
    recorded = read_summary(root).get(keys.CLASSES)
    if recorded:
        return tuple(recorded)
    return tuple(sorted(set(load_manifest(root)["label"])))
