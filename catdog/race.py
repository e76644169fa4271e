"""The `best` strategy: race the architectures for the best model the budget can buy.

    strategy = "best"
    tuner = "hyperband"
    image_sizes = [64, 96, 128]

The `compare` strategy gives every architecture the same budget, which is what a fair
comparison needs and what it costs. A user who wants the best model in an hour does not need
that: most of the hour should go to the architectures that are winning. So the race is one
KerasTuner Hyperband search whose space is the architecture itself (a `Choice`), the image size
(within each family's range, see `Architecture.image_range`) and each family's own
hyperparameters under a `conditional_scope`: successive halving across architectures, done by
KerasTuner. Its first bracket screens many configurations for a few epochs, at whatever size
each drew; each round promotes the best third to three times the epochs, continuing from the
weights it stopped at, until the survivors train for `max_epochs`, which the plan
(`catdog.plan.make_race_plan`) sizes to the budget.

Tracking is the same three levels as `compare`: each trial is a run under its architecture's
run, so `compare`, `report`, `register` and the final fit read a race like any sweep. The
parent run's `search_strategy` param says "best", and `compare` and the report say that its
architectures had unequal budgets: a raced ranking says which configuration won, not how the
architectures compare at equal cost.

Image size is a searched hyperparameter here, and through the race a fidelity in cost: a small
size screens a configuration cheaply and is promoted only if it keeps up. A configuration keeps
its size across rounds, because Hyperband carries weights from round to round and the Flatten
heads of the notebook's models tie their weights to the input size.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from catdog import models, runtime, sweep
from catdog.log import format_seconds, get_logger
from catdog.tracking import queries, runs, tags

log = get_logger(__name__)

PROJECT = "race"  # the tuner state's folder under .tuner/<sweep key>/


def joint_space(cfg, spaces: dict):
    """One search space for the race: `arch`, then per architecture (active only when drawn)
    its `image_size` and its builder's hyperparameters, with the sweep file's fixed and narrowed
    values from SPACES ({arch: HyperParameters}, see `sweepfile.search_spaces`).

    Each architecture's names are scoped (`resnet/lr`): KerasTuner keeps one value per name,
    and drops it when any hyperparameter of that name is inactive, so `lr` shared by every
    family under different conditions would be lost. Trials log the plain names (`plain`)."""
    import keras_tuner as kt

    joint = kt.HyperParameters()
    joint.Choice("arch", list(cfg.archs))
    for arch in cfg.archs:
        entry = models.get(arch)
        own = kt.HyperParameters()
        own.merge(spaces[arch])
        entry.search_space(min(entry.sizes_within(cfg.sizes)), hp=own)  # + the builder's own
        with joint.conditional_scope("arch", [arch]), joint.name_scope(arch):
            joint.Choice("image_size", entry.sizes_within(cfg.sizes), ordered=True)
            for h in own.space:
                config = h.get_config()
                config.pop("conditions", None)
                getattr(joint, type(h).__name__)(**config)  # Choice, Int, Float, Boolean, Fixed
    return joint


def plain(values: dict) -> dict:
    """A race trial's values under the builder's names: its architecture's, unscoped."""
    prefix = f"{values['arch']}/"
    return {"arch": values["arch"],
            **{k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)},
            **{k: v for k, v in values.items() if k.startswith("tuner/")}}


def measure_speeds(cfg, spaces: dict, splits_at) -> dict[str, dict[int, tuple[float, float]]]:
    """Seconds per epoch and per-trial set-up of every (architecture, size) the race may draw."""
    from catdog import plan

    speeds: dict[str, dict[int, tuple[float, float]]] = {}
    for arch in cfg.archs:
        values = {k: v for k, v in spaces[arch].values.items() if not k.startswith("tuner/")}
        for size in models.get(arch).sizes_within(cfg.sizes):
            splits = splits_at(size)
            speeds.setdefault(arch, {})[size] = plan.measure(arch, splits, size, values,
                                                             cfg.pretrained, cfg.batch_size)
            log.info("[%s] measured: %.1f s per epoch of %d images at %dpx", arch,
                     speeds[arch][size][0], splits.sizes["train"], size)
    return speeds


def make_tuner(ctx, hyperparameters, directory: Path, arch_runs: dict[str, str]):
    """A tracked KerasTuner Hyperband over the joint space; every trial builds the architecture
    and reads the split at the size it drew."""
    import keras_tuner as kt

    ArchHyperModel, Tracked = sweep.tuner_classes()

    class RaceHyperModel(ArchHyperModel):
        def build(self, hp):
            arch = hp.get("arch")
            with hp.conditional_scope("arch", [arch]), hp.name_scope(arch):
                return models.get(arch).build(hp, image_size=hp.get("image_size"),
                                              pretrained=self.pretrained)

        def size(self, hp) -> int:
            return int(self.values(hp)["image_size"])

        def values(self, hp) -> dict:
            return plain(hp.values)

        def fit(self, hp, model, *args, **kwargs):
            splits = ctx.splits_at(self.size(hp))
            kwargs.pop("validation_data", None)
            return super().fit(hp, model, splits.train, validation_data=splits.val, **kwargs)

    cls = type("TrackedRace", (Tracked, kt.Hyperband), {})
    epochs = ctx.epochs_for(None)
    hypermodel = RaceHyperModel(models.get(ctx.cfg.archs[0]), ctx.cfg.image_size,
                                ctx.cfg.pretrained, epochs)
    tuner = cls(hypermodel=hypermodel, objective=kt.Objective(sweep.OBJECTIVE, "max"),
                max_epochs=epochs, factor=ctx.cfg.hyperband_factor, seed=ctx.cfg.seed,
                hyperparameters=hyperparameters, tune_new_entries=False,
                directory=str(directory), project_name=PROJECT, overwrite=False,
                distribution_strategy=runtime.strategy() if runtime.gpus() else None)
    tuner.ctx, tuner.arch, tuner.arch_runs = ctx, None, arch_runs
    return tuner


def search(ctx, spaces: dict, state_dir: Path, client) -> tuple[dict[str, dict], str | None]:
    """Run (or resume) the race; each architecture's best trial, and why it stopped early
    (None: Hyperband's brackets ran out)."""
    import keras

    cfg = ctx.cfg
    arch_runs = {a: sweep.arch_run(ctx.experiment_id, ctx.key, a, ctx.parent_run_id, True)
                 for a in cfg.archs}
    n = queries.retire(ctx.experiment_id, {tags.SWEEP_KEY: ctx.key, tags.KIND: tags.KIND_TRIAL})
    if n:
        log.info("marked %d interrupted trial run(s) as KILLED", n)
    space = joint_space(cfg, spaces)
    keras.utils.set_random_seed(cfg.seed)
    tuner = make_tuner(ctx, space, state_dir, arch_runs)
    done_before = sum(1 for t in tuner.oracle.trials.values() if t.status == "COMPLETED")
    ctx.trials_done += done_before
    if done_before:
        log.info("[race] resuming: %d trial(s) already done", done_before)
    stopped = None
    ctx.search_started = time.monotonic()
    try:
        tuner.search(epochs=ctx.epochs_for(None), verbose=0)
    except sweep.TimeLimitReached as exc:
        stopped = str(exc)
        log.info("%s: the race stops here", exc)
        for run_id in arch_runs.values():
            client.set_tag(run_id, tags.TIME_LIMITED, tags.TRUE)
    except BaseException as exc:
        for run_id in arch_runs.values():
            runs.terminate(client, run_id, runs.status_for(exc))
        raise
    config = json.dumps(tuner.oracle.hyperparameters.get_config(), indent=2, default=str)
    results = {}
    for arch, run_id in arch_runs.items():
        best = sweep.best_trial(tuner.oracle, arch)
        results[arch] = sweep.finish_arch(client, best, config, run_id, arch,
                                          ctx.experiment_id, ctx.key)
        client.set_terminated(run_id, runs.FINISHED)
    drawn = {a: sum(1 for t in tuner.oracle.trials.values() if t.status == "COMPLETED"
                    and t.hyperparameters.values.get("arch") == a) for a in cfg.archs}
    log.info("[race] trials per architecture: %s (%s searched)",
             ", ".join(f"{a} {k}" for a, k in drawn.items()),
             format_seconds(time.monotonic() - ctx.search_started))
    return results, stopped
