"""Read a labelled image download safely: a zip archive or a folder, in one of five layouts.

`open_source` lists a source's files and reads them one at a time, refusing archives with unsafe
member paths or a zip-bomb's declared size, and capping what any one file may unpack to.
`detect` finds which layout the files are in, which classes it names and which photos it holds.

Two layouts fit any labelled folder, with any class names and any number of classes (at least
two): `<split>/<class>/*` and `<class>/*`, as Keras's `image_dataset_from_directory` reads them.
The three Dogs-vs-Cats downloads (Kaggle's salader and competition zips, Microsoft's PetImages)
keep layouts of their own, found first, so they are read exactly as before: classes cat and dog.
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

from catdog.errors import CatdogError

# The classes the three Dogs-vs-Cats layouts give, in their fixed order.
DOGS_VS_CATS = ("cat", "dog")
LAYOUTS = {
    "salader": "train|test/cats|dogs/*",
    "petimages": "PetImages/Cat|Dog/*",
    "flat": "train/cat.N.jpg, train/dog.N.jpg",
    "split_folders": "train|test/<class>/*",
    "folders": "<class>/*",
}
DOGS_VS_CATS_LAYOUTS = ("salader", "petimages", "flat")
# The same two classes in the plain layouts, as folders are usually named.
_DOGS_VS_CATS_NAMES = {DOGS_VS_CATS, ("cats", "dogs")}
# Source split folders of `split_folders`: a source's own val folder joins the pool that catdog
# draws its stratified val split from; its test folder stays the test split.
SPLIT_FOLDERS = {"train": "train", "test": "test", "val": "train", "valid": "train",
                 "validation": "train"}

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


@dataclass(frozen=True)
class Found:
    """What `detect` found: the layout, its classes (sorted), its photos and the files outside it."""

    layout: str
    classes: tuple[str, ...]
    members: list[Member]
    outside: list[str]


def is_dogs_vs_cats(layout: str, classes) -> bool:
    """Whether a dataset is Dogs-vs-Cats: one of its downloads' layouts, or plain folders of
    exactly cats and dogs (any case)."""
    return layout in DOGS_VS_CATS_LAYOUTS or tuple(sorted(c.lower() for c in classes)) in _DOGS_VS_CATS_NAMES


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


def empty_folders(source: Path) -> list[str]:
    """Folders of SOURCE (relative, POSIX) with no file anywhere below them: an empty class folder
    would otherwise vanish without a word. A zip lists them only when it has folder entries."""
    if source.is_dir():
        dirs = [Path(d).relative_to(source).as_posix() for d, _, _ in os.walk(source)]
        files = _list_folder(source)
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            names = zf.namelist()
        dirs = [n.rstrip("/") for n in names if n.endswith("/")]
        files = [n for n in names if not n.endswith("/")]
    else:
        return []
    full = {str(parent) for f in files for parent in PurePosixPath(f).parents}
    return sorted(d for d in dirs if d not in (".", "") and d not in full)


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
    # The plain layouts keep the folder's own spelling: it is the class's name.
    if layout == "split_folders" and len(p) >= 3 and p[0] in SPLIT_FOLDERS:
        return parts[1], SPLIT_FOLDERS[p[0]]
    if layout == "folders" and len(p) >= 2 and p[0] not in SPLIT_FOLDERS:
        return parts[0], "train"
    return None


def _class_folder(layout: str, parts: tuple[str, ...]) -> bool:
    """Whether a folder at `parts` below the layout's root is where one class's photos go."""
    if layout == "split_folders":
        return len(parts) == 2 and parts[0].lower() in SPLIT_FOLDERS
    return layout == "folders" and len(parts) == 1


def _check_classes(found: Found, prefix: tuple[str, ...], empty: list[str], source: Path) -> None:
    """One sentence for class names that differ only in case, or an empty class folder."""
    by_fold: dict[str, list[str]] = {}
    for name in found.classes:
        by_fold.setdefault(name.casefold(), []).append(name)
    clash = next((names for names in by_fold.values() if len(names) > 1), None)
    if clash:
        raise CatdogError(
            f"{source} has class folders {' and '.join(repr(n) for n in clash)}, which differ only in"
            f" case; rename them to one spelling so that each class has one name")
    for folder in (f for f in empty if not is_junk(f)):
        parts = PurePosixPath(folder).parts
        if parts[: len(prefix)] == prefix and _class_folder(found.layout, parts[len(prefix):]):
            raise CatdogError(f"the class folder {folder} in {source} is empty; put its images in it"
                              f" or remove it")


def _candidates(files: list[str], split_paths: list[tuple[str, ...]]):
    """(layout, prefix, {file: (label, split)}) for each layout at the top and inside each
    top-level folder: the Dogs-vs-Cats layouts first (in the order they were always tried), so
    their downloads read as before, then the plain layouts."""
    wrappers = sorted({parts[0] for parts in split_paths if len(parts) > 1})
    prefixes = [()] + [(w,) for w in wrappers]
    plain = [layout for layout in LAYOUTS if layout not in DOGS_VS_CATS_LAYOUTS]
    order = [(layout, prefix) for prefix in prefixes for layout in DOGS_VS_CATS_LAYOUTS]
    order += [(layout, prefix) for layout in plain for prefix in prefixes]
    for layout, prefix in order:
        placed = {
            f: where
            for f, parts in zip(files, split_paths, strict=True)
            if parts[: len(prefix)] == prefix and (where := _place(layout, parts[len(prefix) :]))
        }
        yield layout, prefix, placed


def detect(files: list[str], source: Path, empty: list[str] = ()) -> Found:
    """Find the layout at the top or inside one wrapper folder: its classes, files and the files
    outside it. EMPTY lists the source's empty folders (`empty_folders`)."""
    if not files:
        raise CatdogError(f"{source} contains no files (hidden and system files aside); pass the dataset zip or folder")
    split_paths = [PurePosixPath(f).parts for f in files]
    one_class = []
    for layout, prefix, placed in _candidates(files, split_paths):
        if layout in DOGS_VS_CATS_LAYOUTS:
            labels = {label for label, split in placed.values() if split == "train"}
            complete = labels == set(DOGS_VS_CATS)
        else:
            labels = {label for label, _ in placed.values()}
            complete = len(labels) >= 2 and not (set(map(str.lower, labels)) & set(SPLIT_FOLDERS))
        if complete:
            members = [Member(f, *placed[f]) for f in files if f in placed]
            found = Found(layout, tuple(sorted(labels)), members, [f for f in files if f not in placed])
            _check_classes(found, prefix, list(empty), source)
            return found
        if len(labels) == 1:
            one_class.append((layout, labels.pop()))
    if one_class:
        layout, found = one_class[0]
        if layout in DOGS_VS_CATS_LAYOUTS:
            missing = next(label for label in DOGS_VS_CATS if label != found)
            raise CatdogError(
                f"{source} has {found} images but no {missing} images in the {layout} layout ({LAYOUTS[layout]});"
                f" catdog needs both classes, so check that the download is complete"
            )
        raise CatdogError(
            f"{source} has images of one class only ({found!r}, in the {layout} layout {LAYOUTS[layout]});"
            f" catdog needs at least two classes, each in a folder of its own"
        )
    expected = ", ".join(f"{name} ({pattern})" for name, pattern in LAYOUTS.items())
    folders = sorted({"/".join(parts[:-1][:2]) for parts in split_paths if len(parts) > 1})
    found = f"folders {', '.join(folders[:6])}" + (", ..." if len(folders) > 6 else "") if folders else "no folders"
    raise CatdogError(
        f"{source} is not a labelled image dataset in a layout catdog knows (found {found}); expected one of"
        f" {expected}, optionally inside one top-level folder"
    )
