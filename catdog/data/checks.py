"""Check a source's photos: decode each once, drop the unusable ones, remove exact duplicates.

`check_all` runs every member through an image check (`images.check_image` in `prepare`) and
stages the usable ones as RGB JPEGs; `dedupe` keeps one file per content hash, so a picture filed
under two classes, or in both the train and test folders, cannot leak or confuse training.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from catdog.data.images import ImageCheck
from catdog.data.sources import Member, TooLarge
from catdog.log import get_logger

log = get_logger(__name__)

_PROGRESS_EVERY = 500
_WORKERS = min(4, max(2, os.cpu_count() or 2))


@dataclass(frozen=True)
class Checked:
    index: int  # position in sorted member order; also names the staged file
    member: Member
    reason: str | None
    sha256: str = ""  # of the original bytes: what duplicates are judged by
    out_sha256: str = ""  # of the bytes written, so the manifest can verify its files
    width: int = 0
    height: int = 0
    converted_from: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def check_all(
    members: list[Member],
    read: Callable[[str], bytes],
    staging: Path,
    check_image: Callable[[bytes], ImageCheck],
) -> list[Checked]:
    """Read and check every member, writing each usable one to `staging/<index>.jpg`.

    `check_image` is passed in by the caller, so `prepare` decides (and tests can substitute) it.
    """

    def check(indexed: tuple[int, Member]) -> Checked:
        index, member = indexed
        try:
            raw = read(member.path)
        except TooLarge:
            return Checked(index, member, "too large")
        except Exception:  # bad CRC, encrypted member, permission denied: lose this file only
            return Checked(index, member, "unreadable")
        result = check_image(raw)
        if not result.ok:
            return Checked(index, member, result.reason)
        (staging / f"{index}.jpg").write_bytes(result.data)
        return Checked(
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


def dedupe(good: list[Checked]) -> tuple[list[Checked], dict[int, str], list[dict]]:
    """Keep one file per content: (kept, {index: drop reason}, cross-split duplicate report)."""
    groups: dict[str, list[Checked]] = {}
    for record in good:  # sorted by path, so "first" is deterministic
        groups.setdefault(record.sha256, []).append(record)
    kept, dropped, cross = [], {}, []
    for sha, group in groups.items():
        if len({r.member.label for r in group}) > 1:
            # Same picture filed under two classes: no way to tell which label is right.
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
