"""One rule for "the data the user passed", the same for `train`, `sweep`, `data prepare` and
the benchmark:

1. A prepared dataset is used as it is.
2. A zip or folder is prepared once, into `data/prepared/<its name>`, and reused after that.
   Where that name already holds a dataset prepared from another source, the folder becomes
   `data/prepared/<name>-<hash of the source path>`, so two different `train.zip` never collide.
3. Nothing given: the most recently prepared dataset under `data/prepared`; if there is none,
   download one (Kaggle with credentials, else PetImages) and prepare it as in 2.

Downloading and preparing happen under a file lock (`data/.prepare.lock`): processes started at
once on one data folder (a distributed sweep's chief and workers, two sweeps) prepare it once;
the others wait, then find it prepared.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from catdog.data.prepare import prepare
from catdog.data.prepared import SUMMARY, is_prepared, read_summary
from catdog.errors import CatdogError
from catdog.log import get_logger

log = get_logger(__name__)

DATA_ROOT = Path("data")
_REMEDY = "pass --data path/to/zip-or-folder (DATA=... with make)"
LOCK = ".prepare.lock"


@contextlib.contextmanager
def preparing(data_root: str | Path = DATA_ROOT):
    """Held while a dataset is downloaded or prepared under DATA_ROOT: one process at a time."""
    import fcntl  # Linux and macOS

    Path(data_root).mkdir(parents=True, exist_ok=True)
    with open(Path(data_root) / LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is preparing data under %s; waiting for it", data_root)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepared_dir(source: str | Path, data_root: str | Path = DATA_ROOT) -> Path:
    """Where SOURCE (a zip or folder) is prepared: the one naming rule (rule 2 above)."""
    source = Path(source)
    stem = source.name.removesuffix(".zip") if source.suffix == ".zip" else source.name
    plain = Path(data_root) / "prepared" / stem
    if not is_prepared(plain) or _prepared_from(plain) == str(source.resolve()):
        return plain
    digest = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:8]
    return plain.with_name(f"{stem}-{digest}")


def _prepared_from(root: Path) -> str | None:
    return read_summary(root).get("source")


def latest_prepared(data_root: str | Path = DATA_ROOT) -> Path | None:
    """The most recently prepared dataset under data_root/prepared, if any."""
    # Hidden names are prepare's temporary and replaced folders, complete-looking for a moment.
    found = [p for p in (Path(data_root) / "prepared").glob("*")
             if not p.name.startswith(".") and is_prepared(p)]
    return max(found, key=lambda p: (p / SUMMARY).stat().st_mtime) if found else None


def resolve_data(data: str | Path | None = None, data_root: str | Path = DATA_ROOT) -> Path:
    """A prepared dataset for what the user passed (rules 1-3 above)."""
    if data is None or str(data) == "":
        return _default_data(data_root)
    data = Path(data)
    if not data.exists():
        raise CatdogError(f"{data} does not exist; pass a prepared dataset, a dataset zip or "
                          "its unpacked folder")
    if is_prepared(data):
        log.info("using prepared dataset %s", data)
        return data
    with preparing(data_root):  # the second of two processes finds it prepared
        target = prepared_dir(data, data_root)
        if is_prepared(target):
            log.info("reusing %s, prepared earlier from %s", target, data)
            return target
        log.info("%s is not prepared yet; preparing it into %s", data, target)
        return prepare(data, target).root


def _default_data(data_root: str | Path) -> Path:
    found = latest_prepared(data_root)
    if found is not None:
        log.info("no data given; using the latest prepared dataset %s", found)
        return found
    with preparing(data_root):
        return _download_and_prepare(data_root)


def _download_and_prepare(data_root: str | Path) -> Path:
    from catdog.data.download import download

    found = latest_prepared(data_root)  # prepared by another process while this one waited
    if found is not None:
        return found
    log.info("no data given and none prepared under %s; downloading it",
             Path(data_root) / "prepared")
    try:
        archive = download(dest=data_root)
    except CatdogError as exc:
        reason = str(exc).split("; pass DATA=")[0]  # say the remedy once
        raise CatdogError(f"no data given and none could be downloaded: {reason}; "
                          f"{_REMEDY}") from None
    return prepare(archive, prepared_dir(archive, data_root)).root
