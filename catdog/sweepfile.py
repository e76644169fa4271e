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
                                       #   comparison); best: race them (catdog/search/strategies/)
    image_size = 128
    image_sizes = [64, 96, 128]        # best only: image size searched, within each family's range
    batch_size = 32
    seed = 1337
    device = "gpu"                     # stop unless TensorFlow sees a GPU (default "any")
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, StrictBool,
                      StrictFloat, StrictInt, StrictStr, Tag, ValidationError, WrapValidator,
                      model_validator)
from pydantic_core import PydanticCustomError

from catdog.errors import CatdogError
from catdog.plan import parse_budget
from catdog.runtime import DEVICES, PRECISIONS

Tuner = Literal["hyperband", "random", "bayesian"]
TUNERS: tuple[str, ...] = get_args(Tuner)


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
    device: str = "any"
    pretrained: bool = True
    hyperband_factor: int = 3
    data: str | None = None
    experiment: str = "catdog"
    hp: dict[str, Any] = field(default_factory=dict)

    def key(self, data_digest: str) -> str:
        """Identity of the sweep for resuming: everything that changes what a trial means."""
        # Repeats come after the search and do not change what a trial means: adding them to a
        # finished sweep resumes it and runs only the repeats. `device` only checks the machine.
        ident = {k: v for k, v in asdict(self).items()
                 if k not in ("data", "budget", "experiment", "repeats", "final_fit", "device")}
        for k, default in (("strategy", "compare"), ("image_sizes", ())):
            if ident[k] == default:  # keys of sweeps started before these existed stay the same
                del ident[k]
        ident["data_digest"] = data_digest
        blob = json.dumps(ident, sort_keys=True, default=list).encode()
        return f"{self.name}-{hashlib.sha256(blob).hexdigest()[:10]}"

    @property
    def sizes(self) -> tuple[int, ...]:
        """The image sizes a strategy that searches the size draws from; else the one size."""
        return tuple(self.image_sizes) if self.image_sizes \
            else (self.image_size,)

    @property
    def budget_seconds(self) -> float | None:
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
    from catdog import models

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
    try:
        checked = SweepFile.model_validate(values)
    except ValidationError as exc:
        raise CatdogError(_sentence(exc, path)) from None
    # hp stays the plain TOML tables (checked above): apply_hp reads them, key() hashes them.
    return SweepConfig(**{**dict(checked), "archs": checked.archs or tuple(models.names()),
                          "hp": values.get("hp", {})})


# ----------------------------------------------------------------------- the sweep file's types
# Two kinds of error, each made one sentence by `_sentence`: "wanted" (the value is not of the
# key's type; the message says what it must be) and "refused" (the value is not accepted; the
# message is the sentence, with {key} for the key's dotted name and {where} for " in FILE" where
# the file reads better inside the sentence than after it).
def _refused(sentence: str) -> PydanticCustomError:
    return PydanticCustomError("refused", sentence)


_WORDED = {"wanted", "refused", "literal_error", "extra_forbidden"}  # `_sentence` words these


def _wanted(words: str) -> WrapValidator:
    """Pydantic's own type errors inside the value become one: "KEY must be WORDS"."""
    def wrap(value, handler):
        try:
            return handler(value)
        except ValidationError as exc:
            if any(e["type"] in _WORDED for e in exc.errors()):
                raise  # already worded, at its own (deeper) key
            raise PydanticCustomError("wanted", words) from None

    return WrapValidator(wrap)


def _check(test, sentence: str = "") -> AfterValidator:
    """Refuse a value TEST returns False for, in SENTENCE ({value} stands for the value), or one
    it raises a CatdogError for (an unknown architecture, a bad duration), in that error's words."""
    def check(value):
        try:
            verdict = test(value)
        except CatdogError as exc:
            raise _refused(str(exc)) from None
        if verdict is False:
            raise _refused(sentence.replace("{value}", repr(value)))
        return value

    return AfterValidator(check)


def _known_archs(archs) -> None:
    from catdog import models

    for arch in archs:
        models.get(arch)  # unknown name -> error listing the known ones


Str = Annotated[StrictStr, _wanted("a string")]
Int = Annotated[StrictInt, _wanted("an integer")]
Positive = Annotated[Int, _check(lambda v: v >= 1, "{key} must be a positive integer, got {value}")]
Bool = Annotated[StrictBool, _wanted("true or false")]
Number = Annotated[StrictInt | StrictFloat, _wanted("a number")]  # TOML's: a bool is not one
Scalar = Annotated[StrictBool | StrictInt | StrictFloat | StrictStr,
                   _wanted("a number, a string or true or false")]
Archs = Annotated[tuple[StrictStr, ...], _wanted("a list of architecture names"),
                  _check(lambda v: v != (), "archs is an empty list{where}; name at least one "
                                            "architecture, or leave the key out for all of them"),
                  _check(_known_archs)]
Budget = Annotated[StrictStr | StrictInt | StrictFloat, _wanted('a duration like "45m" or "2h"'),
                   _check(parse_budget)]  # "45m", "2h", minutes; anything else is refused
Repeats = Annotated[Int, _check(lambda v: v == 0 or v >= 2, "repeats must be 0 (none) or at "
                                "least 2 (one repeat gives no spread), got {value}")]


class Range(BaseModel):
    """`{min, max[, step, sampling]}`: a hyperparameter narrowed to a range."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min: Number
    max: Number
    step: Number | None = None
    sampling: Literal["linear", "log", "reverse_log"] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min > self.max:
            raise _refused(f"{{key}} has min {self.min} above max {self.max}")
        return self


# A hyperparameter is fixed (a scalar), a choice (a list) or a range (a table with min and max);
# any other table under [hp] is one architecture's own. The tags name the shape in a pydantic
# error's location, which `_dotted` leaves out.
def _shape(value, tables: bool = True) -> str | None:
    if isinstance(value, list):
        return "<choices>"
    if isinstance(value, dict):
        return "<range>" if "min" in value and "max" in value else "<table>" if tables else None
    return "<fixed>"


_SPECS = (Annotated[Scalar, Tag("<fixed>")],
          Annotated[list[Scalar], _check(bool, "{key} is an empty list of choices; give at least "
                                               "one value"), Tag("<choices>")],
          Annotated[Range, Tag("<range>")])
Spec = Annotated[Union[_SPECS], Discriminator(  # within an architecture's table
    lambda v: _shape(v, tables=False), custom_error_type="wanted",
    custom_error_message="a value, a list of choices or {min, max}")]
Hp = Annotated[dict[str, Annotated[Union[(*_SPECS, Annotated[dict[str, Spec], Tag("<table>")])],
                                   Discriminator(_shape)]],
               _wanted("a table"),
               _check(lambda hp: _known_archs(k for k, v in hp.items() if isinstance(v, dict)))]
_TAGS = {"<fixed>", "<choices>", "<range>", "<table>"}
_CHOICES: dict[str, str] = {}


class SweepFile(BaseModel):
    """What a sweep file (with the command line's overrides) may hold: each key's type and the
    values catdog accepts. Defaults are SweepConfig's."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Str = SweepConfig.name
    archs: Archs | None = None  # None: every registered architecture
    tuner: Tuner = SweepConfig.tuner
    trials: Positive = SweepConfig.trials
    epochs: Positive = SweepConfig.epochs
    budget: Budget | None = SweepConfig.budget
    final_fit: Bool = SweepConfig.final_fit
    repeats: Repeats = SweepConfig.repeats
    strategy: Str = SweepConfig.strategy  # a name in catdog.search.strategies, checked there
    image_size: Positive = SweepConfig.image_size
    image_sizes: Annotated[tuple[Positive, ...], _wanted("a list of image sizes in pixels")] = ()
    batch_size: Positive = SweepConfig.batch_size
    seed: Int = SweepConfig.seed
    patience: Annotated[Int, _check(lambda v: v >= 1, "patience must be at least 1, got "
                                                      "{value}")] = SweepConfig.patience
    precision: Literal[PRECISIONS] = SweepConfig.precision  # type: ignore[valid-type]
    device: Literal[DEVICES] = SweepConfig.device  # type: ignore[valid-type]
    pretrained: Bool = SweepConfig.pretrained
    hyperband_factor: Annotated[Int, _check(lambda v: v >= 2, "hyperband_factor must be at least "
                                            "2, got {value}")] = SweepConfig.hyperband_factor
    data: Annotated[StrictStr, _wanted("a path string")] | None = SweepConfig.data
    experiment: Str = SweepConfig.experiment
    hp: Hp = Field(default_factory=dict)


def _dotted(loc) -> str:
    """("hp", "vgg", "<table>", "width", "<choices>", 0) -> "hp.vgg.width[0]"."""
    parts = (f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc if p not in _TAGS)
    return "".join(parts).removeprefix(".")


def _sentence(exc: ValidationError, path: Path | None) -> str:
    """The first of pydantic's errors as one sentence naming the key and the file."""
    inline, after = (f" in {path}", f" (in {path})") if path is not None else ("", "")
    errors = exc.errors()
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    if unknown:  # every unknown key at once, and the known ones (a typo is the usual cause)
        top = [e for e in unknown if len(e["loc"]) == 1]
        names, model = (top, SweepFile) if top else (unknown, Range)
        return (f"unknown key(s) {', '.join(sorted(_dotted(e['loc']) for e in names))}{inline}; "
                f"known keys: {', '.join(sorted(model.model_fields))}")
    error = errors[0]
    key = _dotted(error["loc"])
    if error["type"] == "wanted":
        return f"{key} must be {error['msg']}{inline}, got {error['input']!r}"
    if error["type"] == "literal_error":
        choices = _CHOICES.get(key, error["ctx"]["expected"])
        return f"unknown {key} {error['input']!r}; choose {choices}{after}"
    if error["type"] != "refused":
        return f"{key}: {error['msg']}{after}"  # pydantic's own words, should a case be missed
    sentence = error["msg"].replace("{key}", key)
    return sentence.replace("{where}", inline) if "{where}" in sentence else sentence + after


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
