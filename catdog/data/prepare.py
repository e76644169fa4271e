"""Turn a Dogs-vs-Cats download (zip or folder, in any of three layouts) into a prepared dataset.

A prepared dataset is a folder that everything downstream reads instead of the raw download:

    DEST/manifest.csv     path,label,split,sha256,width,height (path relative to DEST)
    DEST/summary.json     counts, what was dropped/converted and why, split settings, digest
    DEST/images/<split>/<label>/<name>.jpg   checked RGB JPEGs

Every file is decoded once; unusable files are dropped, non-RGB or non-JPEG files converted,
photos over 1024 px a side downscaled (images.MAX_SIDE), exact duplicates removed, and a
stratified seeded val (and, if the source has none, test) split drawn. The folder appears under
its final name only when complete.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import re
import shutil
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import pandas as pd

from catdog.data.images import LABELS, check_image
from catdog.errors import CatdogError
from catdog.log import get_logger

log = get_logger(__name__)

MANIFEST = "manifest.csv"
SUMMARY = "summary.json"
COLUMNS = ("path", "label", "split", "sha256", "width", "height")
SPLITS = ("train", "val", "test")
LAYOUTS = {
    "salader": "train|test/cats|dogs/*",
    "petimages": "PetImages/Cat|Dog/*",
    "flat": "train/cat.N.jpg, train/dog.N.jpg",
}

# Zip bombs: a member declaring more than MAX_MEMBER_BYTES unpacked is dropped unread as "too large"
# (no real photo comes near it), and reading stops as soon as one produces more, whatever its
# header says. An archive declaring more than MAX_ARCHIVE_BYTES in all is refused whole; the full
# Kaggle download unpacks to under 1 GB.
MAX_MEMBER_BYTES = 64 << 20
MAX_ARCHIVE_BYTES = 32 << 30

_READ_CHUNK = 1 << 20
_PROGRESS_EVERY = 500
_WORKERS = min(4, max(2, os.cpu_count() or 2))
_JUNK_NAMES = {"thumbs.db", "desktop.ini"}
_FLAT_NAME = re.compile(r"(cat|dog)\.", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")


class _TooLarge(Exception):
    """A source file over MAX_MEMBER_BYTES; it is dropped without being read in full."""


@dataclass(frozen=True)
class PreparedDataset:
    root: Path
    digest: str
    counts: dict
    summary: dict


@dataclass(frozen=True)
class _Member:
    path: str  # POSIX path inside the source
    label: str
    source_split: str  # "train" or "test", as the source lays it out


@dataclass(frozen=True)
class _Checked:
    index: int  # position in sorted member order; also names the staged file
    member: _Member
    reason: str | None
    sha256: str = ""  # of the original bytes: what duplicates are judged by
    out_sha256: str = ""  # of the bytes written, so the manifest can verify its files
    width: int = 0
    height: int = 0
    converted_from: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


# ---------------------------------------------------------------- reading the source


def _unsafe(name: str) -> bool:
    parts = re.split(r"[\\/]", name)
    return name.startswith(("/", "\\")) or bool(_DRIVE.match(name)) or ".." in parts


def _is_junk(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return any(p.startswith(".") or p.lower() == "__macosx" for p in parts) or parts[-1].lower() in _JUNK_NAMES


def _size(n: int) -> str:
    for unit, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= unit:
            return f"{n / unit:.1f}".removesuffix(".0") + f" {name}"
    return f"{n} bytes"


def _read_capped(f: BinaryIO) -> bytes:
    """All of `f`, in chunks, raising _TooLarge as soon as it yields more than MAX_MEMBER_BYTES."""
    chunks, size = [], 0
    while chunk := f.read(_READ_CHUNK):
        size += len(chunk)
        if size > MAX_MEMBER_BYTES:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _read_file(path: Path) -> bytes:
    if path.stat().st_size > MAX_MEMBER_BYTES:
        raise _TooLarge
    with path.open("rb") as f:  # streamed too: a file can grow, or be a device like /dev/zero
        return _read_capped(f)


def _list_folder(source: Path) -> list[str]:
    def unlistable(exc: OSError) -> None:
        # os.walk skips what it cannot list; that would silently lose a whole class of photos.
        raise CatdogError(f"cannot list the folder {exc.filename} ({exc.strerror}); check its permissions") from None

    files = []
    for dirpath, _dirnames, filenames in os.walk(source, onerror=unlistable):
        rel = Path(dirpath).relative_to(source)
        files += [(rel / name).as_posix() for name in filenames]
    return sorted(files)


@contextmanager
def _open_source(source: Path) -> Iterator[tuple[list[str], Callable[[str], bytes]]]:
    """Yield the source's file paths (relative, POSIX, sorted) and a function reading one of them.

    The function raises _TooLarge for a file over MAX_MEMBER_BYTES, having read at most that much.
    """
    if source.is_dir():
        yield _list_folder(source), lambda rel: _read_file(source / rel)
        return
    if not zipfile.is_zipfile(source):
        raise CatdogError(f"{source} is neither a folder nor a zip archive; pass a dataset zip or its unpacked folder")
    with zipfile.ZipFile(source) as zf:
        names = sorted({n for n in zf.namelist() if not n.endswith("/")})
        # Members are only read, never extracted, but a crafted name means the archive cannot be trusted.
        for name in names:
            if _unsafe(name):
                raise CatdogError(
                    f"archive member {name!r} has an unsafe path; refusing to extract anything from {source.name}"
                )
        declared = {info.filename: info.file_size for info in zf.infolist() if not info.is_dir()}
        total = sum(declared.values())
        if total > MAX_ARCHIVE_BYTES:
            raise CatdogError(
                f"{source} would unpack to {_size(total)}, more than the {_size(MAX_ARCHIVE_BYTES)} catdog accepts"
                " from one archive, so it may be a zip bomb; refusing to extract anything from it"
            )

        def read(name: str) -> bytes:
            if declared[name] > MAX_MEMBER_BYTES:
                raise _TooLarge
            with zf.open(name) as member:  # the declared size can lie: count what comes out
                return _read_capped(member)

        yield names, read


def _place(layout: str, parts: tuple[str, ...]) -> tuple[str, str] | None:
    """(label, source split) of a file at `parts` below the layout's root, or None if outside it."""
    p = [part.lower() for part in parts]
    if layout == "salader" and len(p) >= 3 and p[0] in ("train", "test") and p[1] in ("cats", "dogs"):
        return p[1][:-1], p[0]
    if layout == "petimages" and len(p) >= 3 and p[0] == "petimages" and p[1] in ("cat", "dog"):
        return p[1], "train"
    if layout == "flat" and len(p) == 2 and p[0] == "train" and (m := _FLAT_NAME.match(p[1])):
        return m.group(1), "train"
    return None


def _detect(files: list[str], source: Path) -> tuple[str, list[_Member], list[str]]:
    """Find the layout at the top or inside one wrapper folder: (layout, its files, files outside it)."""
    if not files:
        raise CatdogError(f"{source} contains no files (hidden and system files aside); pass the dataset zip or folder")
    split_paths = [PurePosixPath(f).parts for f in files]
    wrappers = sorted({parts[0] for parts in split_paths if len(parts) > 1})
    one_class = []
    for prefix in [()] + [(w,) for w in wrappers]:
        for layout in LAYOUTS:
            placed = {
                f: where
                for f, parts in zip(files, split_paths, strict=True)
                if parts[: len(prefix)] == prefix and (where := _place(layout, parts[len(prefix) :]))
            }
            labels = {label for label, split in placed.values() if split == "train"}
            if labels == set(LABELS):
                members = [_Member(f, *placed[f]) for f in files if f in placed]
                return layout, members, [f for f in files if f not in placed]
            if labels:
                one_class.append((layout, labels.pop()))
    if one_class:
        layout, found = one_class[0]
        missing = next(label for label in LABELS if label != found)
        raise CatdogError(
            f"{source} has {found} images but no {missing} images in the {layout} layout ({LAYOUTS[layout]});"
            f" catdog needs both classes, so check that the download is complete"
        )
    expected = ", ".join(f"{name} ({pattern})" for name, pattern in LAYOUTS.items())
    folders = sorted({"/".join(parts[:-1][:2]) for parts in split_paths if len(parts) > 1})
    found = f"folders {', '.join(folders[:6])}" + (", ..." if len(folders) > 6 else "") if folders else "no folders"
    raise CatdogError(
        f"{source} is not a Dogs-vs-Cats dataset in a layout catdog knows (found {found}); expected one of"
        f" {expected}, optionally inside one top-level folder"
    )


# ---------------------------------------------------------------- checking, dedup, splitting


def _check_all(members: list[_Member], read: Callable[[str], bytes], staging: Path) -> list[_Checked]:
    def check(indexed: tuple[int, _Member]) -> _Checked:
        index, member = indexed
        try:
            raw = read(member.path)
        except _TooLarge:
            return _Checked(index, member, "too large")
        except Exception:  # bad CRC, encrypted member, permission denied: lose this file only
            return _Checked(index, member, "unreadable")
        result = check_image(raw)
        if not result.ok:
            return _Checked(index, member, result.reason)
        (staging / f"{index}.jpg").write_bytes(result.data)
        return _Checked(
            index,
            member,
            None,
            hashlib.sha256(raw).hexdigest(),
            hashlib.sha256(result.data).hexdigest(),
            result.width,
            result.height,
            result.converted_from,
        )

    checked = []
    # PIL and hashlib release the GIL while decoding and hashing, so threads use all cores.
    with ThreadPoolExecutor(_WORKERS) as pool:
        try:
            for n, record in enumerate(pool.map(check, enumerate(members)), 1):
                checked.append(record)
                if n % _PROGRESS_EVERY == 0 or n == len(members):
                    log.info("checked %d/%d images", n, len(members))
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return checked


def _dedupe(good: list[_Checked]) -> tuple[list[_Checked], dict[int, str], list[dict]]:
    """Keep one file per content: (kept, {index: drop reason}, cross-split duplicate report)."""
    groups: dict[str, list[_Checked]] = {}
    for record in good:  # sorted by path, so "first" is deterministic
        groups.setdefault(record.sha256, []).append(record)
    kept, dropped, cross = [], {}, []
    for sha, group in groups.items():
        if len({r.member.label for r in group}) > 1:
            # Same picture filed as cat and dog: no way to tell which label is right.
            dropped.update((r.index, "duplicate with other label") for r in group)
            continue
        tests = [r for r in group if r.member.source_split == "test"]
        keep = tests[0] if tests else group[0]
        kept.append(keep)
        if tests and len(tests) < len(group):
            cross.append({"sha256": sha, "paths": [r.member.path for r in group]})
        for r in group:
            if r is not keep:
                # A train copy of a test picture would leak the held-out set into training.
                leak = r.member.source_split == "train" and bool(tests)
                dropped[r.index] = "cross-split duplicate" if leak else "duplicate"
    kept.sort(key=lambda r: r.index)
    return kept, dropped, cross


def _share(n: int, fraction: float) -> int:
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * fraction)))


def _assign_splits(
    kept: list[_Checked], source_has_test: bool, val_fraction: float, test_fraction: float, seed: int
) -> dict[int, str]:
    """Stratified, seeded split: {index: split}. Deterministic because `kept` is in path order."""
    rng = random.Random(seed)
    splits = {}
    for label in LABELS:
        items = [r for r in kept if r.member.label == label]
        if source_has_test:
            test = [r for r in items if r.member.source_split == "test"]
            pool = [r for r in items if r.member.source_split == "train"]
        else:
            rng.shuffle(items)
            n_test = _share(len(items), test_fraction)
            test, pool = items[:n_test], items[n_test:]
        rng.shuffle(pool)
        n_val = _share(len(pool), val_fraction)
        for split, records in (("test", test), ("val", pool[:n_val]), ("train", pool[n_val:])):
            splits.update((r.index, split) for r in records)
    return splits


# ---------------------------------------------------------------- writing


def _write(
    tmp: Path, staging: Path, kept: list[_Checked], splits: dict[int, str]
) -> tuple[list[dict], dict[str, dict[str, int]]]:
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
    counts = {split: {label: 0 for label in LABELS} for split in SPLITS}
    for row in rows:
        counts[row["split"]][row["label"]] += 1
    return rows, counts


def _manifest_bytes(rows: list[dict]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _check_dest(dest: Path, overwrite: bool) -> None:
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
        return
    if not is_prepared(dest):
        raise CatdogError(f"{dest} already exists and is not a prepared dataset; choose another destination")
    if not overwrite:
        raise CatdogError(
            f"{dest} already holds a prepared dataset; pass --overwrite to replace it or choose another destination"
        )


def _install(tmp: Path, dest: Path) -> None:
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


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {n}" for key, n in counts.items()) or "none"


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

    val_fraction is the share of the non-test images per label that goes to val. test_fraction
    applies only when the source has no test split of its own (petimages, flat).
    """
    source, dest = Path(source), Path(dest)
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
    _check_dest(dest, overwrite)

    started = time.monotonic()
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    with _open_source(source) as (files, read):
        junk = [f for f in files if _is_junk(f)]
        layout, members, outside = _detect([f for f in files if not _is_junk(f)], source)
        log.info("preparing %s (%s layout, %d files) into %s", source, layout, len(members), dest)
        if outside:
            log.info("ignoring %d files outside the %s layout, e.g. %s", len(outside), layout, outside[0])
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run whose pid was reused
        try:
            staging = tmp / ".staging"
            staging.mkdir(parents=True)
            checked = _check_all(members, read, staging)
            kept, dup_reasons, cross = _dedupe([r for r in checked if r.ok])
            for label in LABELS:
                if not any(r.member.label == label for r in kept):
                    raise CatdogError(f"{source} has no usable {label} images; check that the download is complete")
            source_has_test = any(r.member.source_split == "test" for r in kept)
            splits = _assign_splits(kept, source_has_test, val_fraction, test_fraction, seed)
            rows, counts = _write(tmp, staging, kept, splits)
            shutil.rmtree(staging)

            dropped_files = sorted(
                [{"path": f, "reason": "ignored"} for f in junk]
                + [{"path": r.member.path, "reason": r.reason} for r in checked if not r.ok]
                + [{"path": r.member.path, "reason": dup_reasons[r.index]} for r in checked if r.index in dup_reasons],
                key=lambda d: d["path"],
            )
            converted = [{"path": r.member.path, "converted_from": r.converted_from} for r in kept if r.converted_from]
            manifest = _manifest_bytes(rows)
            digest = hashlib.sha256(manifest).hexdigest()
            summary = {
                "source": str(source.resolve()),
                "layout": layout,
                "counts": counts,
                "dropped": dict(sorted(Counter(d["reason"] for d in dropped_files).items())),
                "dropped_files": dropped_files,
                "converted": len(converted),
                "converted_files": converted,
                "cross_split_duplicates": cross,
                "not_in_layout": {"count": len(outside), "examples": outside[:10]},
                "seed": seed,
                "val_fraction": val_fraction,
                "test_fraction": None if source_has_test else test_fraction,
                "digest": digest,
            }
            (tmp / MANIFEST).write_bytes(manifest)
            (tmp / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
            _install(tmp, dest)
        except OSError as exc:  # sources are read inside _check_all, which keeps its errors per file
            shutil.rmtree(tmp, ignore_errors=True)
            raise CatdogError(
                f"cannot write the prepared dataset to {dest} ({exc.strerror or exc});"
                f" choose a destination in a writable folder with free space"
            ) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    if cross:
        log.warning(
            "%d pictures appear in both the train and test folders of %s (e.g. %s); dropped their train"
            " copies so the test split stays unseen",
            len(cross),
            source,
            " = ".join(cross[0]["paths"]),
        )
    per_split = {split: sum(counts[split].values()) for split in SPLITS}
    log.info(
        "prepared %s in %.1f s: %s; dropped %s; converted %d; cross-split duplicates %d; digest %s",
        dest,
        time.monotonic() - started,
        _describe(per_split),
        _describe(summary["dropped"]),
        len(converted),
        len(cross),
        digest[:16],
    )
    return PreparedDataset(dest, digest, counts, summary)


# ---------------------------------------------------------------- reading a prepared dataset


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
    return json.loads((root / SUMMARY).read_text())
