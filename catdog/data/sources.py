"""Read a Dogs-vs-Cats download safely: a zip archive or a folder, in any of three layouts.

`open_source` lists a source's files and reads them one at a time, refusing archives with unsafe
member paths or a zip-bomb's declared size, and capping what any one file may unpack to.
`detect` finds which layout the files are in and which photos it holds.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from catdog.data.images import LABELS
from catdog.errors import CatdogError

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
_JUNK_NAMES = {"thumbs.db", "desktop.ini"}
_FLAT_NAME = re.compile(r"(cat|dog)\.", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")


class TooLarge(Exception):
    """A source file over MAX_MEMBER_BYTES; it is dropped without being read in full."""


@dataclass(frozen=True)
class Member:
    path: str  # POSIX path inside the source
    label: str
    source_split: str  # "train" or "test", as the source lays it out


def _unsafe(name: str) -> bool:
    parts = re.split(r"[\\/]", name)
    return name.startswith(("/", "\\")) or bool(_DRIVE.match(name)) or ".." in parts


def is_junk(path: str) -> bool:
    """Hidden files, macOS resource forks and Windows thumbnails: ignored, never checked."""
    parts = PurePosixPath(path).parts
    return any(p.startswith(".") or p.lower() == "__macosx" for p in parts) or parts[-1].lower() in _JUNK_NAMES


def _size(n: int) -> str:
    for unit, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= unit:
            return f"{n / unit:.1f}".removesuffix(".0") + f" {name}"
    return f"{n} bytes"


def _read_capped(f: BinaryIO) -> bytes:
    """All of `f`, in chunks, raising TooLarge as soon as it yields more than MAX_MEMBER_BYTES."""
    chunks, size = [], 0
    while chunk := f.read(_READ_CHUNK):
        size += len(chunk)
        if size > MAX_MEMBER_BYTES:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _read_file(path: Path) -> bytes:
    if path.stat().st_size > MAX_MEMBER_BYTES:
        raise TooLarge
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
def open_source(source: Path) -> Iterator[tuple[list[str], Callable[[str], bytes]]]:
    """Yield the source's file paths (relative, POSIX, sorted) and a function reading one of them.

    The function raises TooLarge for a file over MAX_MEMBER_BYTES, having read at most that much.
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
                raise TooLarge
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


def detect(files: list[str], source: Path) -> tuple[str, list[Member], list[str]]:
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
                members = [Member(f, *placed[f]) for f in files if f in placed]
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
