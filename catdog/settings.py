"""A sweep's settings, declared once: `SweepConfig`'s fields. Each field is a key of a sweep file
(the TOML files in experiments/, which state only what differs from the defaults), with its
type (the values catdog accepts), its default and its help; its `Setting` says whether it is
part of the resume key, a param of the sweep's parent run and an option of `catdog sweep`. The
file's check (`check`, its errors one sentence each), the command's options, the params and the
key are all read from the fields, so a setting added here is all of those at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    TypeAdapter,
    ValidationError,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from catdog import keys
from catdog.errors import CatdogError
from catdog.plan import parse_budget
from catdog.runtime import DEVICES, PRECISIONS
from catdog.speed import BF16_MIN_SPEEDUP

Tuner = Literal["hyperband", "random", "bayesian"]
TUNERS: tuple[str, ...] = get_args(Tuner)


# ----------------------------------------------------------------------- the sweep file's types
# Two kinds of error, each made one sentence by `_sentence`: "wanted" (the value is not of the
# key's type; the message says what it must be) and "refused" (the value is not accepted; the
# message is the sentence, with {key} for the key's dotted name and {where} for " in FILE" where
# the file reads better inside the sentence than after it).
def _refused(sentence: str) -> PydanticCustomError:
    return PydanticCustomError("refused", sentence)


_UNKNOWN = {"extra_forbidden", "unexpected_keyword_argument"}  # a key no model declares
_WORDED = {"wanted", "refused", "literal_error", *_UNKNOWN}  # `_sentence` words these


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
Scalar = Annotated[
    StrictBool | StrictInt | StrictFloat | StrictStr, _wanted("a number, a string or true or false")
]
Archs = Annotated[
    tuple[StrictStr, ...],
    _wanted("a list of architecture names"),
    _check(
        lambda v: v != (),
        "archs is an empty list{where}; name at least one "
        "architecture, or leave the key out for all of them",
    ),
    _check(_known_archs),
]
Budget = Annotated[
    StrictStr | StrictInt | StrictFloat,
    _wanted('a duration like "45m" or "2h"'),
    _check(parse_budget),
]  # "45m", "2h", minutes; anything else is refused
Repeats = Annotated[
    Int,
    _check(
        lambda v: v == 0 or v >= 2,
        "repeats must be 0 (none) or at least 2 (one repeat gives no spread), got {value}",
    ),
]


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


def _as_written(value, handler):
    handler(value)  # checked; the plain TOML tables are kept: apply_hp reads them, key() hashes
    return value


_SPECS = (
    Annotated[Scalar, Tag("<fixed>")],
    Annotated[
        list[Scalar],
        _check(bool, "{key} is an empty list of choices; give at least one value"),
        Tag("<choices>"),
    ],
    Annotated[Range, Tag("<range>")],
)
Spec = Annotated[
    Union[_SPECS],  # noqa: UP007  (a tuple of types: `X | Y` cannot spread it)
    Discriminator(  # within an architecture's table
        lambda v: _shape(v, tables=False),
        custom_error_type="wanted",
        custom_error_message="a value, a list of choices or {min, max}",
    ),
]
Hp = Annotated[
    dict[
        str,
        Annotated[
            Union[(*_SPECS, Annotated[dict[str, Spec], Tag("<table>")])], Discriminator(_shape)
        ],
    ],
    _wanted("a table"),
    _check(lambda hp: _known_archs(k for k, v in hp.items() if isinstance(v, dict))),
    WrapValidator(_as_written),
]
_TAGS = {"<fixed>", "<choices>", "<range>", "<table>"}


# ------------------------------------------------------------------------------- the settings
KEY_ALWAYS, KEY_UNLESS_DEFAULT, KEY_NEVER = "always", "unless default", "never"


@dataclasses.dataclass(frozen=True)
class Setting:
    """What a sweep setting is besides its type, default and help (the field's own).

    key: whether it is part of the resume key (`SweepConfig.key`): KEY_ALWAYS, KEY_NEVER (it does
      not change what a trial means), or KEY_UNLESS_DEFAULT (only when it differs from its
      default, so sweeps started before the setting existed keep their key: a new setting that
      changes what a trial means wants this one);
    param: logged as a param of the sweep's parent run: True under its own name, or the name;
    option: an option of `catdog sweep`: True as --its-name, or the option's name; a bool is a
      --x/--no-x pair and a list a repeatable option;
    bounds: an integer option's (min, max), either None for no bound;
    metavar: the option's value as its help shows it.
    """

    key: str
    param: bool | str = False
    option: bool | str = False
    bounds: tuple[int | None, int | None] | None = None
    metavar: str | None = None

    def __post_init__(self):
        if self.key not in (KEY_ALWAYS, KEY_UNLESS_DEFAULT, KEY_NEVER):
            raise ValueError(
                f"Setting.key must be one of {KEY_ALWAYS!r}, "
                f"{KEY_UNLESS_DEFAULT!r} or {KEY_NEVER!r}, got {self.key!r}"
            )


def declared(model: type | None = None) -> dict[str, tuple[Any, Setting]]:
    """{name: (pydantic FieldInfo, Setting)} of MODEL's fields (default: SweepConfig's), in
    their order."""
    out = {}
    for name, info in (model or SweepConfig).__pydantic_fields__.items():
        found = [m for m in info.metadata if isinstance(m, Setting)]
        if len(found) != 1:
            raise TypeError(f"sweep setting {name!r} needs one Setting in its annotation")
        out[name] = (info, found[0])
    return out


def default(name: str):
    """The default of sweep setting NAME, which `catdog train` shares (batch size, seed...)."""
    return SweepConfig.__pydantic_fields__[name].get_default(call_default_factory=True)


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class SweepConfig:
    """A sweep's settings, checked: built by `load` from a sweep file and the command line."""

    name: Annotated[Str, Setting(KEY_ALWAYS)] = Field(
        "sweep",
        description="The sweep's name, which starts its resume key; default: the "
        "sweep file's name.",
    )
    archs: Annotated[Archs | None, Setting(KEY_ALWAYS, param=True, option="--arch")] = Field(
        None,
        validate_default=True,
        description="Architectures to sweep (`catdog archs` lists them); default: every "
        "registered one.",
    )
    tuner: Annotated[Tuner, Setting(KEY_ALWAYS, param=True, option=True)] = Field(
        "hyperband", description="The KerasTuner search within each architecture."
    )
    trials: Annotated[
        Positive, Setting(KEY_ALWAYS, param=True, option="--max-trials", bounds=(1, None))
    ] = Field(10, description="Trials per architecture, at most.")
    epochs: Annotated[Positive, Setting(KEY_ALWAYS, param=True, option=True, bounds=(1, None))] = (
        Field(10, description="Maximum epochs per trial.")
    )
    budget: Annotated[Budget | None, Setting(KEY_NEVER, option=True, metavar="DURATION")] = Field(
        None,
        description="Time for the whole sweep, e.g. 45m, 2h, 1h30m or a number of "
        "minutes: speeds are measured first and trials and epochs planned to "
        "fit it. Default: none.",
    )
    final_fit: Annotated[Bool, Setting(KEY_NEVER, option=True)] = Field(
        True,
        description="Retrain the winner on train+val for its best epoch count: the model "
        "`register` promotes.",
    )
    repeats: Annotated[Repeats, Setting(KEY_NEVER, option=True, bounds=(0, 100))] = Field(
        0,
        description="Retrain each architecture's best configuration this many times (0, or "
        "2 and more) with other seeds: mean, std and 95% CI in `compare`.",
    )
    strategy: Annotated[
        Str, Setting(KEY_UNLESS_DEFAULT, param=keys.SEARCH_STRATEGY, option=True)
    ] = Field(
        "compare",
        description="focus: a short screen, then one long fit of the winner (the "
        "best model in the budget); compare: every architecture the same "
        "budget (the fair comparison); best: race them with Hyperband.",
    )
    image_size: Annotated[
        Positive, Setting(KEY_ALWAYS, param=True, option=True, bounds=(32, 1024))
    ] = Field(
        128,
        description="Image size in pixels (under focus: the screen's, and where a long "
        "fit from scratch starts).",
    )
    image_sizes: Annotated[
        tuple[Positive, ...],
        _wanted("a list of image sizes in pixels"),
        Setting(KEY_UNLESS_DEFAULT, param=keys.IMAGE_SIZES),
    ] = Field(
        (),
        description="For the strategies that train at several sizes: the sizes best races, "
        "and those focus's long fit may finish at; within each family's range.",
    )
    batch_size: Annotated[
        Positive, Setting(KEY_ALWAYS, param=True, option=True, bounds=(1, None))
    ] = Field(32, description="Images per batch.")
    seed: Annotated[Int, Setting(KEY_ALWAYS, param=True, option=True, bounds=(0, 2**32 - 1))] = (
        Field(1337, description="Seed of the splits' shuffling, the weights and the search.")
    )
    patience: Annotated[
        Int,
        _check(lambda v: v >= 1, "patience must be at least 1, got {value}"),
        Setting(KEY_ALWAYS, param=True),
    ] = Field(
        3,
        description="Early-stopping patience in epochs on val_accuracy (best weights are "
        "restored).",
    )
    precision: Annotated[
        Literal[PRECISIONS],  # type: ignore[valid-type]
        Setting(KEY_ALWAYS, param=True, option=True),
    ] = Field(
        "fp32",
        description="auto: fp16 on a GPU; on a CPU with AMX the plan times fp32 and bf16 "
        "for each architecture and keeps bf16 where it trains at least "
        f"{BF16_MIN_SPEEDUP:g}x faster; fp32 on other CPUs.",
    )
    device: Annotated[Literal[DEVICES], Setting(KEY_NEVER)] = Field(  # type: ignore[valid-type]
        "any", description="gpu: stop before reading any data unless TensorFlow sees a GPU."
    )
    pretrained: Annotated[Bool, Setting(KEY_ALWAYS, param=True, option=True)] = Field(
        True, description="ImageNet weights for the families that have them."
    )
    hyperband_factor: Annotated[
        Int,
        _check(lambda v: v >= 2, "hyperband_factor must be at least 2, got {value}"),
        Setting(KEY_ALWAYS),
    ] = Field(
        3,
        description="Hyperband keeps the best 1/factor of each round for factor times the epochs.",
    )
    # Logged as the prepared dataset it resolves to (`catdog.data.resolve`), not as written.
    data: Annotated[
        Annotated[StrictStr, _wanted("a path string")] | None, Setting(KEY_NEVER, option=True)
    ] = Field(
        None,
        description="A prepared dataset, or a zip/folder to prepare once. Default: the "
        "latest prepared dataset, else download one.",
    )
    experiment: Annotated[Str | None, Setting(KEY_NEVER, option=True)] = Field(
        None,
        description="The MLflow experiment. Default: one per dataset, named as the "
        "dataset is (catdog for Dogs-vs-Cats).",
    )
    hp: Annotated[Hp, Setting(KEY_ALWAYS)] = Field(
        default_factory=dict,
        description="Hyperparameters fixed (a value), narrowed to a "
        "choice (a list) or a range ({min, max[, step, "
        "sampling]}): under [hp] for every architecture that "
        "declares the name, under [hp.ARCH] for one.",
    )

    @field_validator("archs")
    @classmethod
    def _every_arch(cls, archs):
        from catdog import models

        return tuple(models.names()) if archs is None else archs

    def key(self, data_digest: str) -> str:
        """Identity of the sweep for resuming: the settings that change what a trial means
        (`Setting.key`; not the budget, repeats or the device) and the data's digest."""
        ident = {}
        for name, (info, setting) in declared(type(self)).items():
            value = getattr(self, name)
            if setting.key == KEY_ALWAYS or (
                setting.key == KEY_UNLESS_DEFAULT
                and value != info.get_default(call_default_factory=True)
            ):
                ident[name] = value
        ident["data_digest"] = data_digest
        blob = json.dumps(ident, sort_keys=True, default=list).encode()
        return f"{self.name}-{hashlib.sha256(blob).hexdigest()[:10]}"

    def params(self, *, searches_size: bool) -> dict[str, Any]:
        """The settings logged as the sweep's parent run's params (`Setting.param`), lists
        joined by commas. `image_sizes` is logged as the sizes searched (`sizes`), and only
        under a strategy that SEARCHES_SIZE: to the others it means nothing."""
        out = {}
        for name, (_, setting) in declared(type(self)).items():
            value = self.sizes if name == "image_sizes" else getattr(self, name)
            if setting.param and (name != "image_sizes" or searches_size):
                out[name if setting.param is True else setting.param] = (
                    ",".join(map(str, value)) if isinstance(value, tuple) else value
                )
        return out

    @property
    def sizes(self) -> tuple[int, ...]:
        """The image sizes a strategy that searches the size draws from; else the one size."""
        return tuple(self.image_sizes) if self.image_sizes else (self.image_size,)

    @property
    def budget_seconds(self) -> float | None:
        return parse_budget(self.budget)

    def hp_for(self, arch: str, declared: dict[str, Any]) -> dict[str, Any]:
        """This architecture's fixed/narrowed hyperparameters: the global ones it declares
        (dropout means nothing to `baseline`), then its own table, which wins."""
        own = (
            self.hp.get(arch)
            if isinstance(self.hp.get(arch), dict) and not is_range(self.hp.get(arch))
            else {}
        )
        return {**{k: v for k, v in self.global_hp().items() if k in declared}, **own}

    def global_hp(self) -> dict[str, Any]:
        """The [hp] table's own names (not its per-architecture tables)."""
        return {k: v for k, v in self.hp.items() if not isinstance(v, dict) or is_range(v)}


def is_range(v) -> bool:
    return isinstance(v, dict) and "min" in v and "max" in v


def check(values: dict[str, Any], path: Path | None = None, model: type = SweepConfig):
    """VALUES (a sweep file's keys, with the command line's) checked into a MODEL (SweepConfig,
    or a subclass that declares more settings); a CatdogError in one sentence naming the key
    and the file PATH if not."""
    try:
        return TypeAdapter(model).validate_python(values)
    except ValidationError as exc:
        raise CatdogError(_sentence(exc, path, model)) from None


def _dotted(loc) -> str:
    """("hp", "vgg", "<table>", "width", "<choices>", 0) -> "hp.vgg.width[0]"."""
    parts = (f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc if p not in _TAGS)
    return "".join(parts).removeprefix(".")


def _sentence(exc: ValidationError, path: Path | None, model: type = SweepConfig) -> str:
    """The first of pydantic's errors as one sentence naming the key and the file."""
    inline, after = (f" in {path}", f" (in {path})") if path is not None else ("", "")
    errors = exc.errors()
    unknown = [e for e in errors if e["type"] in _UNKNOWN]
    if unknown:  # every unknown key at once, and the known ones (a typo is the usual cause)
        top = [e for e in unknown if len(e["loc"]) == 1]
        names, known = (top, declared(model)) if top else (unknown, Range.model_fields)
        return (
            f"unknown key(s) {', '.join(sorted(_dotted(e['loc']) for e in names))}{inline}; "
            f"known keys: {', '.join(sorted(known))}"
        )
    error = errors[0]
    key = _dotted(error["loc"])
    if error["type"] == "wanted":
        return f"{key} must be {error['msg']}{inline}, got {error['input']!r}"
    if error["type"] == "literal_error":
        return f"unknown {key} {error['input']!r}; choose {error['ctx']['expected']}{after}"
    if error["type"] != "refused":
        return f"{key}: {error['msg']}{after}"  # pydantic's own words, should a case be missed
    sentence = error["msg"].replace("{key}", key)
    return sentence.replace("{where}", inline) if "{where}" in sentence else sentence + after
