"""Sweep files: load and check the TOML files in experiments/, which state only what differs from
the defaults below, into a `SweepConfig`.

Precedence: command-line options > the sweep file > these defaults. An option left unset on the
command line (None) never overrides the file.

    archs = ["baseline", "vgg"]        # default: every registered architecture
    tuner = "hyperband"                # hyperband | random | bayesian
    trials = 10                        # trials per architecture (same for every one)
    epochs = 10                        # maximum epochs per trial
    repeats = 3                        # retrain each architecture's best configuration 3 more
                                       #   times with other seeds: mean, std and 95% CI
    budget = "45m"                     # the whole sweep's time: the search is planned to it
                                       #   (see catdog/plan.py); "2h", "1h30m", or minutes
    final_fit = true                   # retrain the winner on train+val for its best epoch
                                       #   count: the model `register` promotes
    strategy = "compare"               # compare: every architecture the same budget (the fair
                                       #   comparison); best: race them (see catdog/race.py)
    image_size = 128
    image_sizes = [64, 96, 128]        # best only: image size searched, within each family's range
    batch_size = 32
    seed = 1337
    pretrained = true                  # ImageNet weights for families that have them
    data = "path/to/zip-or-folder"     # or a prepared dataset
    [hp]                               # fixed (scalar), narrowed (list = choice,
    augment = 0.1                      #   {min, max[, step, sampling]} = range), every arch
    [hp.vgg]                           # ... or one architecture only
    width = [16, 32]
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from catdog.errors import CatdogError

TUNERS = ("hyperband", "random", "bayesian")
STRATEGIES = ("compare", "best")


@dataclass(frozen=True)
class SweepConfig:
    name: str = "sweep"
    archs: tuple[str, ...] = ()
    tuner: str = "hyperband"
    trials: int = 10
    epochs: int = 10
    budget: str | float | None = None
    final_fit: bool = True
    repeats: int = 0
    strategy: str = "compare"
    image_size: int = 128
    image_sizes: tuple[int, ...] = ()
    batch_size: int = 32
    seed: int = 1337
    patience: int = 3
    precision: str = "fp32"
    pretrained: bool = True
    hyperband_factor: int = 3
    data: str | None = None
    experiment: str = "catdog"
    hp: dict[str, Any] = field(default_factory=dict)

    def key(self, data_digest: str) -> str:
        """Identity of the sweep for resuming: everything that changes what a trial means."""
        # Repeats come after the search and do not change what a trial means: adding them to a
        # finished sweep resumes it and runs only the repeats.
        ident = {k: v for k, v in asdict(self).items()
                 if k not in ("data", "budget", "experiment", "repeats", "final_fit")}
        for k, default in (("strategy", "compare"), ("image_sizes", ())):
            if ident[k] == default:  # keys of sweeps started before these existed stay the same
                del ident[k]
        ident["data_digest"] = data_digest
        blob = json.dumps(ident, sort_keys=True, default=list).encode()
        return f"{self.name}-{hashlib.sha256(blob).hexdigest()[:10]}"

    @property
    def sizes(self) -> tuple[int, ...]:
        """The image sizes a race searches (the strategy "best"); else the one image size."""
        return tuple(self.image_sizes) if self.strategy == "best" and self.image_sizes \
            else (self.image_size,)

    @property
    def budget_seconds(self) -> float | None:
        from catdog.plan import parse_budget

        return parse_budget(self.budget)

    def hp_for(self, arch: str, declared: dict[str, Any]) -> dict[str, Any]:
        """This architecture's fixed/narrowed hyperparameters: the global ones it declares
        (dropout means nothing to `baseline`), then its own table, which wins."""
        common = {k: v for k, v in self.hp.items()
                  if (not isinstance(v, dict) or _is_range(v)) and k in declared}
        own = self.hp.get(arch) if isinstance(self.hp.get(arch), dict) and not _is_range(
            self.hp.get(arch)) else {}
        return {**common, **own}


def _is_range(v) -> bool:
    return isinstance(v, dict) and "min" in v and "max" in v


def load(path: str | Path | None, **overrides) -> SweepConfig:
    """Read a sweep file (or none) and apply command-line overrides that are not None."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise CatdogError(f"sweep file {path} does not exist")
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise CatdogError(f"sweep file {path} is not valid TOML: {exc}") from None
        # A relative `data` path is taken from where the sweep runs (the project, under make).
        values.setdefault("name", path.stem)
        if "time_limit_minutes" in values and "budget" not in values:  # its old name
            values["budget"] = values.pop("time_limit_minutes")
    known = {f.name for f in fields(SweepConfig)}
    unknown = set(values) - known
    if unknown:
        raise CatdogError(f"unknown key(s) {', '.join(sorted(unknown))} in {path}; "
                          f"known keys: {', '.join(sorted(known))}")
    _check_types(values, path)
    tupled = ("archs", "image_sizes")
    cfg = SweepConfig(**{k: tuple(v) if k in tupled else v for k, v in values.items()})
    cfg = replace(cfg, **{k: (tuple(v) if k in tupled else v)
                          for k, v in overrides.items() if v not in (None, ())})
    if "archs" in values and not values["archs"] and not overrides.get("archs"):
        raise CatdogError(f"archs is an empty list in {path}; name at least one architecture, "
                          "or leave the key out for all of them")
    try:
        return validate(cfg)
    except CatdogError as exc:
        if path is None:
            raise
        raise CatdogError(f"{exc} (in {path})") from None


# What each key of a sweep file must be, in TOML's terms (a bool is not an int here).
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "name": ((str,), "a string"), "tuner": ((str,), "a string"),
    "precision": ((str,), "a string"), "data": ((str,), "a path string"),
    "experiment": ((str,), "a string"), "archs": ((list,), "a list of architecture names"),
    "trials": ((int,), "an integer"), "epochs": ((int,), "an integer"),
    "repeats": ((int,), "an integer"), "image_size": ((int,), "an integer"),
    "batch_size": ((int,), "an integer"), "seed": ((int,), "an integer"),
    "patience": ((int,), "an integer"), "hyperband_factor": ((int,), "an integer"),
    "budget": ((str, int, float), "a duration like \"45m\" or \"2h\""),
    "final_fit": ((bool,), "true or false"), "strategy": ((str,), "a string"),
    "image_sizes": ((list,), "a list of image sizes in pixels"),
    "pretrained": ((bool,), "true or false"), "hp": ((dict,), "a table"),
}


def _check_types(values: dict[str, Any], path) -> None:
    where = f" in {path}" if path is not None else ""
    for key, value in values.items():
        types, wanted = _TYPES.get(key, ((object,), ""))
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if key == "archs" and ok:
            ok = all(isinstance(a, str) for a in value)
        if key == "image_sizes" and ok:
            ok = all(isinstance(a, int) and not isinstance(a, bool) for a in value)
        if not ok:
            raise CatdogError(f"{key} must be {wanted}{where}, got {value!r}")


def validate(cfg: SweepConfig) -> SweepConfig:
    from catdog import models
    from catdog.runtime import PRECISIONS

    archs = cfg.archs or tuple(models.names())
    for a in archs:
        models.get(a)  # unknown name -> error listing the known ones
    if cfg.tuner not in TUNERS:
        raise CatdogError(f"unknown tuner {cfg.tuner!r}; choose one of {', '.join(TUNERS)}")
    if cfg.precision not in PRECISIONS:
        raise CatdogError(f"unknown precision {cfg.precision!r}; choose one of "
                          f"{', '.join(PRECISIONS)}")
    for name, value in (("trials", cfg.trials), ("epochs", cfg.epochs),
                        ("image_size", cfg.image_size), ("batch_size", cfg.batch_size),
                        *(("image_sizes", s) for s in cfg.image_sizes)):
        if not isinstance(value, int) or value < 1:
            raise CatdogError(f"{name} must be a positive integer, got {value!r}")
    _check_strategy(cfg, archs)
    if not isinstance(cfg.repeats, int) or cfg.repeats < 0 or cfg.repeats == 1:
        raise CatdogError(f"repeats must be 0 (none) or at least 2 (one repeat gives no spread), "
                          f"got {cfg.repeats!r}")
    from catdog.plan import parse_budget

    parse_budget(cfg.budget)  # "45m", "2h", minutes; anything else is refused here
    if cfg.patience < 1 or cfg.hyperband_factor < 2:
        raise CatdogError(f"patience must be at least 1 and hyperband_factor at least 2, got "
                          f"{cfg.patience} and {cfg.hyperband_factor}")
    for key, value in cfg.hp.items():
        if isinstance(value, dict) and not _is_range(value):
            models.get(key)  # a per-architecture table must name a known architecture
            for name, spec in value.items():
                _check_spec(f"hp.{key}.{name}", spec)
        else:
            _check_spec(f"hp.{key}", value)
    return replace(cfg, archs=tuple(archs))


def _check_strategy(cfg: SweepConfig, archs) -> None:
    from catdog import models

    if cfg.strategy not in STRATEGIES:
        raise CatdogError(f"unknown strategy {cfg.strategy!r}; choose compare (every "
                          "architecture the same budget) or best (race them)")
    if cfg.strategy != "best":
        if cfg.image_sizes:
            raise CatdogError("image_sizes is searched by the best strategy only; the compare "
                              "strategy trains every architecture at image_size")
        return
    if cfg.tuner != "hyperband":
        raise CatdogError(f"the best strategy races architectures with Hyperband; set tuner = "
                          f"\"hyperband\" (not {cfg.tuner!r}) or strategy = \"compare\"")
    if cfg.repeats:
        raise CatdogError("repeats measure an equal-budget comparison; a raced one gives the "
                          "architectures unequal time, so use strategy = \"compare\" for "
                          "repeats")
    for arch in archs:
        if not models.get(arch).sizes_within(cfg.sizes):
            lo, hi = models.get(arch).image_range
            raise CatdogError(f"none of the image sizes {list(cfg.sizes)} is within {arch}'s "
                              f"range {lo}-{hi} px")


def _check_spec(name: str, spec: Any) -> None:
    """A fixed value, a non-empty list of choices, or a {min, max} range with min <= max."""
    if isinstance(spec, list) and not spec:
        raise CatdogError(f"{name} is an empty list of choices; give at least one value")
    if isinstance(spec, dict):
        if not _is_range(spec):
            raise CatdogError(f"{name} must be a value, a list of choices or {{min, max}}, got "
                              f"{spec!r}")
        lo, hi = spec["min"], spec["max"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
            raise CatdogError(f"{name}'s min and max must be numbers, got {lo!r} and {hi!r}")
        if lo > hi:
            raise CatdogError(f"{name} has min {lo} above max {hi}")


def search_spaces(cfg: SweepConfig):
    """{arch: HyperParameters} with the sweep file's fixed/narrowed values applied, so a typo or
    an impossible range fails before any data is read, not when its architecture's turn comes."""
    import keras_tuner as kt

    from catdog import models

    spaces = {}
    for arch in cfg.archs:
        declared = models.get(arch).search_space(cfg.image_size).values
        hp = kt.HyperParameters()
        try:
            apply_hp(hp, cfg.hp_for(arch, declared), declared)
        except CatdogError as exc:
            raise CatdogError(f"{arch}: {exc}") from None
        except (ValueError, TypeError) as exc:  # KerasTuner's own checks (e.g. a bad sampling)
            raise CatdogError(f"{arch}: the sweep's hyperparameters are invalid: {exc}") from None
        spaces[arch] = hp
    return spaces


def apply_hp(hp, spec: dict[str, Any], declared: dict[str, Any]) -> None:
    """Register fixed/narrowed hyperparameters before the builder declares its own.

    `declared` is the builder's own search space (name -> default); a name it does not declare
    is an error, so a typo in a sweep file cannot silently do nothing.
    """
    for name, value in spec.items():
        if name not in declared:
            raise CatdogError(f"hyperparameter {name!r} is not in this architecture's search "
                              f"space; it declares: {', '.join(sorted(declared))}")
        if isinstance(value, list):
            hp.Choice(name, value)
        elif _is_range(value):
            lo, hi = value["min"], value["max"]
            if isinstance(lo, int) and isinstance(hi, int) and isinstance(declared[name], int):
                hp.Int(name, lo, hi, step=value.get("step", 1))
            else:
                hp.Float(name, float(lo), float(hi), step=value.get("step"),
                         sampling=value.get("sampling", "linear"))
        else:
            hp.Fixed(name, value)
