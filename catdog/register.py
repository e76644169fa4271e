"""Promote a sweep's best model: evaluate it once on the held-out test split, register it, and
move the `champion` alias only if it beats the current champion on the same test split.

The choice is made on validation metrics; the test split is touched only for models already
chosen: the champion, and the runner-up architecture it is tested against (McNemar's exact test
on the same images), so the message says plainly when the champion is not significantly better.
"""

from __future__ import annotations

from dataclasses import dataclass

from catdog import choose, heldout, keys
from catdog.data.identity import resolve_name
from catdog.log import get_logger
from catdog.tracking import modelstore, runs, tags

log = get_logger(__name__)


@dataclass
class Registration:
    name: str
    version: str
    run_id: str
    arch: str
    val_metric: float
    test: dict
    alias: str
    promoted: bool
    reason: str
    created: bool
    significance: dict | None = None  # McNemar against the runner-up architecture, on test
    test_interval: tuple[float, float] | None = None  # 95% Wilson interval of test accuracy
    tta: bool = False  # whether flip TTA is part of the registered model (and its figures)


def should_promote(
    new_test: float, champion_test: float | None, same_split: bool, force: bool
) -> tuple[bool, str]:
    """The alias moves only to a model that is better on the same held-out test split."""
    if force:
        return True, "forced"
    if champion_test is None:
        return True, "no current champion"
    if not same_split:
        return False, (
            "the current champion was tested on another preparation of this "
            "dataset (another digest), so the two cannot be compared; use --force to "
            "promote anyway, or --name to register under a name of its own"
        )
    if new_test > champion_test:
        return True, f"test accuracy {new_test:.4f} beats the champion's {champion_test:.4f}"
    return False, (
        f"test accuracy {new_test:.4f} does not beat the champion's "
        f"{champion_test:.4f}; use --force to promote anyway"
    )


def register(
    sweep: str = "latest",
    arch: str | None = None,
    metric: str | None = None,
    name: str | None = None,
    alias: str = "champion",
    force: bool = False,
    experiment: str | None = None,
    tta: bool | None = None,
) -> Registration:
    """Register the best model of a sweep, chosen by a validation metric (None: the sweep's
    objective, `choose.objective`); evaluate it once on the held-out test split; move `alias` to
    it only if it beats the current holder there. NAME None: the sweep's dataset's name (`catdog`
    for Dogs-vs-Cats); EXPERIMENT None: any.

    TTA=None keeps the model's own setting: flip TTA where the sweep found on validation that it
    helps (`modelstore.tta_of`). True or False registers the model with or without it. Either
    way TTA is part of what ships: the serving model applies it, and the test figures are the
    served model's. McNemar compares like with like: the best trials of the champion and the
    runner-up, both trained on the train split, both with or both without TTA."""
    from catdog import runtime
    from catdog.inference import load_classifier, with_tta

    if metric is not None:
        heldout.require_validation_metric(metric)
    runtime.start()
    table, chosen = _choose(sweep, arch, metric, experiment)
    metric = table.attrs["metric"]
    best, parent, run, final = chosen.row, chosen.parent, chosen.run, chosen.final
    name = resolve_name(name, parent.data.params[keys.DATA])
    digest = parent.data.tags.get(tags.DATASET_DIGEST, "")
    model = with_tta(load_classifier(modelstore.logged_model_uri(run)), tta)
    tta = model.tta
    frame = heldout.test_predictions(run, parent, model, tta)
    test = heldout.test_metrics(frame)
    interval = choose.accuracy_interval(test["accuracy"], len(frame))
    significance = heldout.runner_up_significance(table, parent, None, tta)
    version_tags = {
        tags.ARCH: best["arch"],
        tags.RUN_ID: run.info.run_id,
        tags.SWEEP_RUN_ID: parent.info.run_id,
        tags.DATASET_DIGEST: digest,
        tags.metric(metric): f"{best[metric]:.6f}",
        tags.TTA: str(tta).lower(),
        **{tags.metric(f"test_{k}"): f"{v:.6f}" for k, v in test.items()},
        tags.metric("test_accuracy_ci95"): f"{interval[0]:.4f}-{interval[1]:.4f}",
    }
    if significance:
        version_tags[tags.metric("mcnemar_p_vs_runner_up")] = f"{significance['p_value']:.6g}"
    version, created = _version(name, run, parent, model, version_tags)
    promoted, reason = _move_alias(name, alias, version, test["accuracy"], digest, force)
    log.info(
        "%s version %s (%s, run %s): %s%s",
        name,
        version.version,
        best["arch"],
        run.info.run_id,
        f"now {alias}: " if promoted else f"{alias} not moved: ",
        reason,
    )
    _log_test(best["arch"], test, len(frame), interval, tta, final, significance)
    return Registration(
        name,
        str(version.version),
        run.info.run_id,
        best["arch"],
        float(best[metric]),
        test,
        alias,
        promoted,
        reason,
        created,
        significance,
        interval,
        tta,
    )


def _choose(sweep: str, arch: str | None, metric: str | None, experiment: str | None):
    """The comparison table of SWEEP (of ARCH alone if given) and its champion, chosen on
    validation; what ships is its final fit on train+val when the sweep made one."""
    table = choose.table(sweep, (arch,) if arch else (), metric, experiment)
    chosen = choose.champion(table)
    if chosen.final:
        log.info(
            "registering the final fit of %s trial %s (retrained on train+val, run %s)",
            chosen.row["arch"],
            chosen.row["trial_id"],
            chosen.run.info.run_id,
        )
    return table, chosen


def _version(name: str, run, parent, model, version_tags: dict):
    """RUN's version of NAME serving with MODEL's TTA setting, registered (with VERSION_TAGS)
    unless it already is; and whether it was created now."""
    from catdog.serving import log_serving_model

    # A version of this run serving with another TTA setting is another model.
    mine = [
        v
        for v in modelstore.versions_of_run(name, run.info.run_id)
        if v.tags.get(tags.TTA, tags.FALSE) == version_tags[tags.TTA]
    ]
    if mine:
        log.info(
            "run %s is already version %s of %s; not registering it again",
            run.info.run_id,
            mine[0].version,
            name,
        )
        return mine[0], False
    with runs.reopened(run.info.run_id):
        info = log_serving_model(model, _example_image(parent))
    return modelstore.register(info.model_uri, name, version_tags), True


def _move_alias(
    name: str, alias: str, version, test_accuracy: float, digest: str, force: bool
) -> tuple[bool, str]:
    """Move ALIAS of NAME to VERSION if it beats the holder on the same test split (or FORCE);
    whether it moved, and why (or why not)."""
    champion = modelstore.by_alias(name, alias)
    if champion is not None and str(champion.version) == str(version.version):
        return False, f"version {version.version} is already {alias}"
    champ_test = float(champion.tags[tags.metric(keys.TEST_ACCURACY)]) if champion else None
    same = champion is None or champion.tags.get(tags.DATASET_DIGEST) == digest
    promoted, reason = should_promote(test_accuracy, champ_test, same, force)
    if promoted:
        modelstore.set_alias(name, alias, version.version)
    return promoted, reason


def _log_test(arch: str, test: dict, n_photos: int, interval, tta: bool, final, significance):
    """The test figures of the registered model, and McNemar against the runner-up."""
    log.info(
        "%s test accuracy %.4f on %d photos (95%% Wilson interval %.4f-%.4f)%s",
        "its" if not final else "the final fit's",
        test["accuracy"],
        n_photos,
        *interval,
        " with flip TTA, which the model serves with" if tta else "",
    )
    if significance:
        log.info(
            "McNemar compares the best trials of %s and %s (both trained on the train "
            "split, chosen on validation)%s: %s",
            significance["a"],
            significance["b"],
            "; the model registered is the final fit of the first" if final else "",
            heldout.describe(significance),
        )
        if not significance["significant"]:
            log.info(
                "%s is not significantly better than the runner-up %s on the test split",
                arch,
                significance["b"],
            )


def _example_image(parent) -> bytes:
    """One held-out photo's bytes: the serving model's input example (validated at logging)."""
    from catdog.data.prepare import load_manifest

    m = load_manifest(parent.data.params["data"])
    return open(m[m["split"] == "test"]["abspath"].iloc[0], "rb").read()
