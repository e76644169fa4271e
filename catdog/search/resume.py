"""What a sweep checks before it resumes: that it is the only process running it on this machine,
and that the tuner state it trusts for which trials are done agrees with the tracking store it
writes to."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from catdog.errors import CatdogError
from catdog.tracking import queries, runs, store, tags


@contextlib.contextmanager
def sweep_lock(root: Path, key: str):
    """One process per sweep on this machine: a second `catdog sweep` of the same sweep would
    take the first one's running trials for orphans. The lock dies with the process, however
    it exits."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{key}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            raise CatdogError(
                f"sweep {key} is already running on this machine (pid {pid}); "
                "wait for it to finish, or to run one sweep from several "
                "processes use `make sweep-distributed` (KerasTuner workers and "
                "a tracking server)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def completed_in_state(state_dir: Path, arch: str) -> list[str]:
    """Trial ids KerasTuner's saved state for ARCH calls COMPLETED."""
    done = []
    for path in sorted((state_dir / arch).glob("trial_*/trial.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if state.get("status") == "COMPLETED":
            done.append(str(state["trial_id"]))
    return done


def check_state_matches_store(
    state_dir: Path, folders: dict[str, str | None], exp_id: str, key: str
) -> None:
    """Resuming trusts the tuner state for which trials are done; the tracking store must hold
    them, or the sweep would report trials that are recorded nowhere (after `rm -rf mlruns`,
    or with MLflow pointed at another store). FOLDERS maps each tuner-state folder to the
    architecture whose trials it holds (None: every architecture's, as in a race)."""
    missing = {}
    for folder, arch in folders.items():
        done = completed_in_state(state_dir, folder)
        if not done:
            continue
        where = {tags.SWEEP_KEY: key, tags.KIND: tags.KIND_TRIAL}
        if arch is not None:
            where[tags.ARCH] = arch
        recorded = {
            r.data.tags.get(tags.TRIAL_ID) for r in queries.search(exp_id, where, (runs.FINISHED,))
        }
        if lost := [t for t in done if t not in recorded]:
            missing[folder] = len(lost)
    if missing:
        what = ", ".join(f"{n} of {arch}" for arch, n in missing.items())
        raise CatdogError(
            f"the tuner state in {state_dir} says trials are done that the tracking store "
            f"{store.redacted(store.tracking_uri())} does not hold ({what}); run again with "
            "--fresh to start this sweep over in this store, or point MLFLOW_TRACKING_URI at "
            "the store that holds them"
        )
