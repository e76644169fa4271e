"""Promote a sweep's best model: evaluate it once on the held-out test split, register it, and
move the `champion` alias only if it beats the current champion on the same test split.

The choice is made on validation metrics; the test split is touched only for models already
chosen: the champion, and the runner-up architecture it is tested against (McNemar's exact test
on the same images), so the message says plainly when the champion is not significantly better.
"""

from __future__ import annotations

from dataclasses import dataclass

from catdog import choose, heldout
from catdog.log import get_logger
from catdog import keys
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
    tta: bool = False  # whether the test figures used flip TTA (chosen on validation)


def should_promote(new_test: float, champion_test: float | None, same_split: bool,
                   force: bool) -> tuple[bool, str]:
    """The alias moves only to a model that is better on the same held-out test split."""
    if force:
        return True, "forced"
    if champion_test is None:
        return True, "no current champion"
    if not same_split:
        return False, ("the current champion was tested on a different dataset, so the two "
                       "cannot be compared; use --force to promote anyway")
    if new_test > champion_test:
        return True, f"test accuracy {new_test:.4f} beats the champion's {champion_test:.4f}"
    return False, (f"test accuracy {new_test:.4f} does not beat the champion's "
                   f"{champion_test:.4f}; use --force to promote anyway")


def register(sweep: str = "latest", arch: str | None = None, metric: str = keys.OBJECTIVE,
             name: str = "catdog", alias: str = "champion", force: bool = False,
             experiment: str = "catdog", tta: bool | None = None) -> Registration:
    """Register the best model of a sweep, chosen by a validation metric; evaluate it once on
    the held-out test split; move `alias` to it only if it beats the current holder there.

    TTA=None uses flip TTA only where the sweep found on validation that it helps (the run's
    `catdog.tta` tag); True or False forces it. McNemar compares like with like: the best
    trials of the champion and the runner-up, both trained on the train split."""
    from catdog import runtime
    from catdog.inference import load_classifier
    from catdog.serving import log_serving_model

    heldout.require_validation_metric(metric)
    runtime.start()
    table = choose.table(sweep, (arch,) if arch else (), metric, experiment)
    # Chosen on validation; what ships is its final fit on train+val when the sweep made one.
    chosen = choose.champion(table)
    best, parent, run, final = chosen.row, chosen.parent, chosen.run, chosen.final
    if final:
        log.info("registering the final fit of %s trial %s (retrained on train+val, run %s)",
                 best["arch"], best["trial_id"], run.info.run_id)
    digest = parent.data.tags.get(tags.DATASET_DIGEST, "")
    if tta is None:
        tta = run.data.tags.get(tags.TTA) == tags.TRUE
    model = load_classifier(modelstore.logged_model_uri(run))
    frame = heldout.test_predictions(run, parent, model, tta)
    test = heldout.test_metrics(frame)
    interval = choose.accuracy_interval(test["accuracy"], len(frame))
    significance = heldout.runner_up_significance(table, parent, None, tta)

    mine = modelstore.versions_of_run(name, run.info.run_id)
    created = not mine
    if mine:
        version = mine[0]
        log.info("run %s is already version %s of %s; not registering it again",
                 run.info.run_id, version.version, name)
    else:
        with runs.reopened(run.info.run_id):
            info = log_serving_model(model, _example_image(parent))
        version_tags = {tags.ARCH: best["arch"], tags.RUN_ID: run.info.run_id,
                        tags.SWEEP_RUN_ID: parent.info.run_id, tags.DATASET_DIGEST: digest,
                        tags.metric(metric): f"{best[metric]:.6f}", tags.TTA: str(tta).lower(),
                        **{tags.metric(f"test_{k}"): f"{v:.6f}" for k, v in test.items()},
                        tags.metric("test_accuracy_ci95"): f"{interval[0]:.4f}-{interval[1]:.4f}"}
        if significance:
            version_tags[tags.metric("mcnemar_p_vs_runner_up")] = \
                f"{significance['p_value']:.6g}"
        version = modelstore.register(info.model_uri, name, version_tags)
    champion = modelstore.by_alias(name, alias)
    if champion is not None and str(champion.version) == str(version.version):
        promoted, reason = False, f"version {version.version} is already {alias}"
    else:
        champ_test = float(champion.tags[tags.metric("test_accuracy")]) if champion else None
        same = champion is None or champion.tags.get(tags.DATASET_DIGEST) == digest
        promoted, reason = should_promote(test["accuracy"], champ_test, same, force)
        if promoted:
            modelstore.set_alias(name, alias, version.version)
    log.info("%s version %s (%s, run %s): %s%s", name, version.version, best["arch"],
             run.info.run_id, f"now {alias}: " if promoted else f"{alias} not moved: ", reason)
    log.info("%s test accuracy %.4f on %d photos (95%% Wilson interval %.4f-%.4f)%s",
             "its" if not final else "the final fit's", test["accuracy"], len(frame),
             *interval, " with flip TTA, which helped on validation" if tta else "")
    if significance:
        log.info("McNemar compares the best trials of %s and %s (both trained on the train "
                 "split, chosen on validation)%s: %s", significance["a"], significance["b"],
                 "; the model registered is the final fit of the first" if final else "",
                 heldout.describe(significance))
        if not significance["significant"]:
            log.info("%s is not significantly better than the runner-up %s on the test split",
                     best["arch"], significance["b"])
    return Registration(name, str(version.version), run.info.run_id, best["arch"],
                        float(best[metric]), test, alias, promoted, reason, created,
                        significance, interval, tta)


def _example_image(parent) -> bytes:
    """One held-out photo's bytes: the serving model's input example (validated at logging)."""
    from catdog.data.prepare import load_manifest

    m = load_manifest(parent.data.params["data"])
    return open(m[m["split"] == "test"]["abspath"].iloc[0], "rb").read()
