"""Sweep files: load the TOML files in experiments/ (and the command line's options) into a
`SweepConfig`, whose fields declare every setting (`catdog.settings`), and apply their `[hp]`
tables to each architecture's search space.

Precedence: command-line options > the sweep file > the settings' defaults. An option left
unset on the command line (None) never overrides the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from catdog.errors import CatdogError
from catdog.settings import SweepConfig, check, is_range


def load(path: str | Path | None, model: type = SweepConfig, **overrides) -> SweepConfig:
    """Read a sweep file (or none) and apply command-line overrides that are not None, into a
    MODEL (SweepConfig, or a subclass that declares more settings)."""
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
    values.update({k: v for k, v in overrides.items() if v not in (None, ())})
    return check(values, path, model)


def search_spaces(cfg: SweepConfig):
    """{arch: HyperParameters} with the sweep file's fixed/narrowed values applied, so a typo or
    an impossible range fails before any data is read, not when its architecture's turn comes."""
    import keras_tuner as kt

    from catdog import models

    declared = {arch: models.get(arch).search_space(cfg.image_size).values for arch in cfg.archs}
    everyone = set().union(*declared.values())
    typos = sorted(set(cfg.global_hp()) - everyone)
    if typos:  # a name some listed architecture declares is fine: the others leave it out
        raise CatdogError(
            f"hyperparameter(s) {', '.join(map(repr, typos))} under [hp] are "
            f"declared by none of {', '.join(cfg.archs)}; they declare: "
            f"{', '.join(sorted(everyone))}"
        )
    spaces = {}
    for arch in cfg.archs:
        hp = kt.HyperParameters()
        try:
            apply_hp(hp, cfg.hp_for(arch, declared[arch]), declared[arch])
        except CatdogError as exc:
            raise CatdogError(f"{arch}: {exc}") from None
        except (ValueError, TypeError) as exc:  # KerasTuner's own checks (e.g. a bad sampling)
            raise CatdogError(f"{arch}: the sweep's hyperparameters are invalid: {exc}") from None
        _check_tricks(arch, hp)
        spaces[arch] = hp
    return spaces


def _check_tricks(arch: str, hp) -> None:
    """Every value HP lets a trial draw for a bounded opt-in trick (its fixed value, each choice,
    a range's ends) read as the builder will read it, so one out of bounds fails now."""
    from catdog.models.common import TRICK_READERS

    for param in hp.space:
        read = TRICK_READERS.get(param.name)
        if read is None:
            continue
        config = param.get_config()
        if "values" in config:
            values = config["values"]
        elif "min_value" in config:
            values = [config["min_value"], config["max_value"]]
        else:
            values = [config["value"]]
        for value in values:
            try:
                read(value)
            except (CatdogError, TypeError, ValueError) as exc:
                raise CatdogError(f"{arch}: {exc}") from None


def apply_hp(hp, spec: dict[str, Any], declared: dict[str, Any]) -> None:
    """Register fixed/narrowed hyperparameters before the builder declares its own.

    `declared` is the builder's own search space (name -> default); a name it does not declare
    is an error, so a typo in an architecture's table cannot silently do nothing (a typo under
    [hp] is refused by `search_spaces`).
    """
    for name, value in spec.items():
        if name not in declared:
            raise CatdogError(
                f"hyperparameter {name!r} is not in this architecture's search "
                f"space; it declares: {', '.join(sorted(declared))}"
            )
        if isinstance(value, list):
            hp.Choice(name, value)
        elif is_range(value):
            lo, hi = value["min"], value["max"]
            if isinstance(lo, int) and isinstance(hi, int) and isinstance(declared[name], int):
                hp.Int(name, lo, hi, step=value.get("step", 1))
            else:
                hp.Float(
                    name,
                    float(lo),
                    float(hi),
                    step=value.get("step"),
                    sampling=value.get("sampling", "linear"),
                )
        else:
            hp.Fixed(name, value)
