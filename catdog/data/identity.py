"""A dataset's name: what its registered model and its MLflow experiment are called.

Each dataset's sweeps go to an experiment of their own and register under a model of their own,
so the champion of one dataset never stands in for another's, and `register` never has to
compare models tested on different photos. The name is the source's name (a zip without `.zip`,
or the folder), made safe for MLflow, `models:/` URIs and a shell: lower-case ASCII letters,
digits, `.`, `_` and `-`. Dogs-vs-Cats, in any of its layouts, keeps the name it always had,
`catdog`. `prepare` records the name in summary.json; a dataset prepared before that gets it
derived the same way from its summary. `--name` (NAME= with make) chooses another.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path, PurePath

from catdog.data.prepared import classes, read_summary
from catdog.data.sources import is_dogs_vs_cats
from catdog.errors import CatdogError

DOGS_VS_CATS_NAME = "catdog"
FALLBACK_NAME = "dataset"  # a source whose name has nothing safe left in it
NAME = "name"  # its key in summary.json
MAX_LENGTH = 64
_UNSAFE = re.compile(r"[^a-z0-9._-]+")
# MLflow refuses / and : in a registered model's name; @ would end the name in models:/NAME@alias.
_REFUSED = re.compile(r"[/:@\s]")


def safe_name(text: str) -> str:
    """TEXT as a name: accents dropped (café -> cafe), lower case, other characters -> `-`."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _UNSAFE.sub("-", plain.lower()).strip("-._")[:MAX_LENGTH].strip("-._")


def _stem(source: str | Path) -> str:
    name = PurePath(source).name
    return name[:-4] if name.lower().endswith(".zip") else name


def derive_name(source: str | Path, layout: str, class_names) -> str:
    """The name of a dataset prepared from SOURCE (its resolved path) in LAYOUT with these
    classes: `catdog` for Dogs-vs-Cats, else the source's name made safe."""
    if is_dogs_vs_cats(layout, class_names):
        return DOGS_VS_CATS_NAME
    return safe_name(_stem(source)) or FALLBACK_NAME


def dataset_name(root: str | Path) -> str:
    """The name of the prepared dataset at ROOT: recorded at preparing, else derived from its
    summary (its source, else its own folder's name)."""
    summary = read_summary(root)
    if summary.get(NAME):
        return summary[NAME]
    source = summary.get("source") or Path(root).resolve()
    return derive_name(source, summary.get("layout", ""), classes(root))


def check_name(name: str) -> str:
    """NAME, if MLflow and a models:/ URI take it as a registered model's or experiment's name."""
    if not name or _REFUSED.search(name):
        raise CatdogError(f"{name!r} cannot name a registered model: use letters, digits, ., _ "
                          f"and - (no spaces, /, : or @)")
    return name


def resolve_name(given: str | None, root: str | Path) -> str:
    """The registered model's (and the experiment's) name for a sweep of the dataset at ROOT:
    GIVEN (--name, NAME=) when set, else the dataset's name."""
    return check_name(given) if given else dataset_name(root)
