"""Turn a labelled image download (zip or folder, in any layout `sources` knows) into a prepared
dataset.

A prepared dataset is a folder that everything downstream reads instead of the raw download
(its format: `catdog.data.prepared`):

    DEST/manifest.csv     path,label,split,sha256,width,height (path relative to DEST)
    DEST/summary.json     name, classes, counts, class balance, what was dropped/converted and why,
                          split settings, digest
    DEST/images/<split>/<label>/<name>.jpg   checked RGB JPEGs

Its `classes` (sorted) are the one truth downstream of what the classes are and in which order:
class i is the model's output i.
Every file is decoded once; unusable files are dropped, non-RGB or non-JPEG files converted,
photos over 1024 px a side downscaled (images.MAX_SIDE), exact duplicates removed, and a
stratified seeded val (and, if the source has none, test) split drawn; imbalanced classes are
warned about, and keep enough photos of each class in val and test (`balance`). The dataset's
name (`identity`) names its registered model and experiment. The folder appears under its final
name only when complete.

The steps live in their own modules: `sources` reads the zip or folder safely and detects its
layout, `checks` checks and dedupes the photos, `prepared` writes, installs and reads the folder.
This module draws the split and runs the steps in order.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from catdog import keys
from catdog.data.balance import BALANCE, held_out_floor
from catdog.data.balance import describe as describe_balance
from catdog.data.balance import warning as imbalance_warning
from catdog.data.checks import Checked, check_all, dedupe
from catdog.data.identity import NAME, derive_name
from catdog.data.images import check_image
from catdog.data.prepared import (  # noqa: F401  (re-exported: imported from here across catdog)
    COLUMNS,
    MANIFEST,
    SPLITS,
    SUMMARY,
    PreparedDataset,
    check_dest,
    install,
    is_prepared,
    load_manifest,
    manifest_bytes,
    read_summary,
    write_images,
)
from catdog.data.sources import LAYOUTS, Found, Member, detect, empty_folders, is_junk, open_source  # noqa: F401
from catdog.errors import CatdogError
from catdog.log import get_logger

log = get_logger(__name__)

__all__ = [
    "COLUMNS",
    "LAYOUTS",
    "MANIFEST",
    "SPLITS",
    "SUMMARY",
    "PreparedDataset",
    "is_prepared",
    "load_manifest",
    "prepare",
    "read_summary",
]


# ---------------------------------------------------------------- splitting


def _share(n: int, fraction: float, floor: int = 0) -> int:
    """How many of N go to a held-out split: FRACTION of them, at least one and FLOOR, and never
    all of them."""
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, floor, round(n * fraction)))


def _check_class_sizes(
    kept: list[Checked], classes: tuple[str, ...], source: Path, source_has_test: bool,
    val_fraction: float, test_fraction: float,
) -> None:
    """One sentence for the first class with too few usable images to give every split one."""
    for label in classes:
        items = [r for r in kept if r.member.label == label]
        if not items:
            raise CatdogError(f"{source} has no usable {label} images; check that the download is complete")
        tests = sum(r.member.source_split == "test" for r in items)
        pool = len(items) - tests if source_has_test else len(items)
        need = 1 + (val_fraction > 0) + (test_fraction > 0 and not source_has_test)
        if pool < need:
            where = "outside the test folder " if source_has_test else ""
            raise CatdogError(
                f"class {label!r} has {pool} usable image{'s' if pool != 1 else ''} {where}in {source},"
                f" too few to split into train{', val' if val_fraction > 0 else ''}"
                f"{' and test' if need == 3 else ''} (it needs at least {need}); add images or leave the class out")
        if source_has_test and not tests:
            raise CatdogError(
                f"class {label!r} has no usable images in the test folder of {source}, so it could not be"
                f" tested; add some there, or move every test image into the train folders")


def _assign_splits(
    kept: list[Checked], classes: tuple[str, ...], source_has_test: bool, val_fraction: float,
    test_fraction: float, seed: int, imbalanced: bool = False,
) -> dict[int, str]:
    """Stratified, seeded split: {index: split}. Deterministic because `kept` is in path order
    and the classes in sorted order. In an imbalanced dataset each held-out split keeps at least
    `balance.held_out_floor` of every class, and at most half of what is left for training."""
    rng = random.Random(seed)
    splits = {}
    for label in classes:
        items = [r for r in kept if r.member.label == label]
        floor = held_out_floor(len(items)) if imbalanced else 0
        if source_has_test:
            test = [r for r in items if r.member.source_split == "test"]
            pool = [r for r in items if r.member.source_split == "train"]
        else:
            rng.shuffle(items)
            n_test = _share(len(items), test_fraction, floor)
            test, pool = items[:n_test], items[n_test:]
        rng.shuffle(pool)
        n_val = _share(len(pool), val_fraction, min(floor, len(pool) // 2))
        for split, records in (("test", test), ("val", pool[:n_val]), ("train", pool[n_val:])):
            splits.update((r.index, split) for r in records)
    return splits


# ---------------------------------------------------------------- preparing


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {n}" for key, n in counts.items()) or "none"


def _check_arguments(source: Path, val_fraction: float, test_fraction: float) -> None:
    if not source.exists():
        raise CatdogError(f"{source} does not exist; pass a dataset zip or folder (see `catdog download`)")
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise CatdogError(f"{name} must be at least 0 and below 1, got {fraction}")
    if val_fraction + test_fraction >= 1:
        raise CatdogError(
            f"val_fraction + test_fraction must stay below 1 to leave images for training,"
            f" got {val_fraction + test_fraction}"
        )


def _build(
    tmp: Path,
    source: Path,
    read: Callable[[str], bytes],
    found: Found,
    junk: list[str],
    fractions: tuple[float, float],
    seed: int,
) -> tuple[dict, dict]:
    """Check, dedupe, split and write everything into `tmp`: (counts, summary)."""
    val_fraction, test_fraction = fractions
    staging = tmp / ".staging"
    staging.mkdir(parents=True)
    # check_image is looked up here, in this module, so a test or fault drill can substitute it.
    checked = check_all(found.members, read, staging, check_image)
    kept, dup_reasons, cross = dedupe([r for r in checked if r.ok])
    source_has_test = any(r.member.source_split == "test" for r in kept)
    _check_class_sizes(kept, found.classes, source, source_has_test, val_fraction, test_fraction)
    usable = Counter(r.member.label for r in kept)
    balance = describe_balance({label: usable[label] for label in found.classes})
    splits = _assign_splits(kept, found.classes, source_has_test, val_fraction, test_fraction, seed,
                            balance["imbalanced"])
    rows, counts = write_images(tmp, staging, kept, splits, found.classes)
    shutil.rmtree(staging)

    dropped_files = sorted(
        [{"path": f, "reason": "ignored"} for f in junk]
        + [{"path": r.member.path, "reason": r.reason} for r in checked if not r.ok]
        + [{"path": r.member.path, "reason": dup_reasons[r.index]} for r in checked if r.index in dup_reasons],
        key=lambda d: d["path"],
    )
    converted = [{"path": r.member.path, "converted_from": r.converted_from} for r in kept if r.converted_from]
    manifest = manifest_bytes(rows)
    digest = hashlib.sha256(manifest).hexdigest()
    summary = {
        "source": str(source.resolve()),
        NAME: derive_name(source.resolve(), found.layout, found.classes),
        "layout": found.layout,
        keys.CLASSES: list(found.classes),
        "counts": counts,
        BALANCE: balance,
        "dropped": dict(sorted(Counter(d["reason"] for d in dropped_files).items())),
        "dropped_files": dropped_files,
        "converted": len(converted),
        "converted_files": converted,
        "cross_split_duplicates": cross,
        "not_in_layout": {"count": len(found.outside), "examples": found.outside[:10]},
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": None if source_has_test else test_fraction,
        "digest": digest,
    }
    (tmp / MANIFEST).write_bytes(manifest)
    (tmp / SUMMARY).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                               encoding="utf-8")
    return counts, summary


def _log_result(source: Path, dest: Path, summary: dict, started: float) -> None:
    cross, counts = summary["cross_split_duplicates"], summary["counts"]
    if cross:
        log.warning(
            "%d pictures appear in both the train and test folders of %s (e.g. %s); dropped their train"
            " copies so the test split stays unseen",
            len(cross),
            source,
            " = ".join(cross[0]["paths"]),
        )
    if summary[BALANCE]["imbalanced"]:
        log.warning("%s", imbalance_warning(source, summary[BALANCE]))
    per_split = {split: sum(counts[split].values()) for split in SPLITS}
    log.info(
        "prepared %s in %.1f s: %s; dropped %s; converted %d; cross-split duplicates %d; digest %s",
        dest,
        time.monotonic() - started,
        _describe(per_split),
        _describe(summary["dropped"]),
        summary["converted"],
        len(cross),
        summary["digest"][:16],
    )


def prepare(
    source: str | Path,
    dest: str | Path,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 1337,
    overwrite: bool = False,
) -> PreparedDataset:
    """Check, convert, dedupe and split SOURCE (zip or folder) into the prepared dataset DEST.

    val_fraction is the share of the non-test images per class that goes to val. test_fraction
    applies only when the source has no test split of its own (petimages, flat, `<class>/*`).
    """
    source, dest = Path(source), Path(dest)
    _check_arguments(source, val_fraction, test_fraction)
    check_dest(dest, overwrite)

    started = time.monotonic()
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    with open_source(source) as (files, read):
        junk = [f for f in files if is_junk(f)]
        found = detect([f for f in files if not is_junk(f)], source, empty_folders(source))
        log.info("preparing %s (%s layout, %d classes, %d files) into %s", source, found.layout,
                 len(found.classes), len(found.members), dest)
        if found.outside:
            log.info("ignoring %d files outside the %s layout, e.g. %s", len(found.outside), found.layout,
                     found.outside[0])
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run whose pid was reused
        try:
            counts, summary = _build(tmp, source, read, found, junk, (val_fraction, test_fraction), seed)
            install(tmp, dest)
        except OSError as exc:  # sources are read inside check_all, which keeps its errors per file
            shutil.rmtree(tmp, ignore_errors=True)
            raise CatdogError(
                f"cannot write the prepared dataset to {dest} ({exc.strerror or exc});"
                f" choose a destination in a writable folder with free space"
            ) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    _log_result(source, dest, summary, started)
    return PreparedDataset(dest, summary["digest"], counts, summary)
