"""The training parameters of `method=create`, read from the request's form fields.

Each known parameter has a default and a range; a value outside it answers 400 saying which
field and why. Other form fields (besides the model's own: title, description, ...) are passed
to uploaded scripts as strings in `params`, so a script can take parameters of its own
(`-F dropout=0.3`); their number and length are bounded.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from mlstudio.common import errors

# Form fields that describe the model, not its training.
MODEL_FIELDS = frozenset({"title", "description", "type", "isPublic", "preprocessing", "files", "files[0]", "files[1]"})
MAX_EXTRA_FIELDS = 32
MAX_EXTRA_NAME = 64
MAX_EXTRA_VALUE = 1000


@dataclass(frozen=True)
class Bounds:
    """The range a numeric parameter may take, inclusive."""

    low: float
    high: float


INT_BOUNDS = {
    "epochs": Bounds(1, 500),
    "image_size": Bounds(16, 512),
    "batch_size": Bounds(1, 512),
    "patience": Bounds(1, 100),
    "seed": Bounds(0, 2**31 - 1),
    "fine_tune": Bounds(0, 16),  # EfficientNet-Lite0's top blocks trained with the head (the transfer recipe)
}
FLOAT_BOUNDS = {
    "validation_split": Bounds(0.0, 0.5),
    "learning_rate": Bounds(1e-6, 1.0),
}

# Parameters that take one of a few words: the built-in recipe, its augmentation of cached features.
CHOICES = {
    "recipe": ("transfer", "scratch"),
    "augment": ("none", "flip"),
}

# true/false parameters. `include_unchecked`: train on the images waiting for review too (a
# model's labels below the project's review threshold); by default only checked ones.
FLAGS = ("include_unchecked",)
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclass(frozen=True)
class TrainingParams:
    """What a training run is asked to do. `time_limit_s` bounds its wall-clock time."""

    epochs: int = 50  # at most: early stopping ends most trainings sooner
    image_size: int = 64
    batch_size: int = 16
    validation_split: float = 0.2
    learning_rate: float = 0.001
    patience: int = 3
    seed: int = 1337
    recipe: str = "transfer"
    fine_tune: int = 0
    augment: str = "none"
    include_unchecked: bool = False
    time_limit_s: int = 3600
    extra: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The parameters as a script sees them (and as a job stores them): plain JSON values."""
        known = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **known}

    @classmethod
    def from_dict(cls, values: Mapping) -> TrainingParams:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {name: values[name] for name in names if name in values}
        extra = {str(key): str(value) for key, value in values.items() if key not in names}
        return cls(**known, extra=extra)


def _number(name: str, raw, kind):
    text = str(raw).strip()
    try:
        value = kind(text)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise errors.InvalidArgument(f"field {name} must be {noun}, got {raw!r}", code="bad_training_parameter") from None
    if kind is float and not math.isfinite(value):
        raise errors.InvalidArgument(f"field {name} must be a finite number, got {raw!r}", code="bad_training_parameter")
    return value


def _bounded(name: str, value, bounds: Bounds):
    if not bounds.low <= value <= bounds.high:
        low, high = (int(bounds.low), int(bounds.high)) if isinstance(value, int) else (bounds.low, bounds.high)
        raise errors.InvalidArgument(f"field {name} must be between {low} and {high}, got {value}", code="bad_training_parameter")
    return value


def _extra_fields(fields: Mapping) -> dict[str, str]:
    extra = {}
    for name, value in fields.items():
        if (name in MODEL_FIELDS or name in INT_BOUNDS or name in FLOAT_BOUNDS or name in CHOICES or name in FLAGS
                or name == "time_limit_s"):
            continue
        if len(name) > MAX_EXTRA_NAME or len(str(value)) > MAX_EXTRA_VALUE:
            raise errors.InvalidArgument(
                f"form field {name[:MAX_EXTRA_NAME]!r} is too long (names up to {MAX_EXTRA_NAME} characters, "
                f"values up to {MAX_EXTRA_VALUE})", code="bad_training_parameter")
        extra[name] = str(value)
    if len(extra) > MAX_EXTRA_FIELDS:
        raise errors.InvalidArgument(f"at most {MAX_EXTRA_FIELDS} extra training parameters", code="bad_training_parameter")
    return extra


def parse(fields: Mapping, *, default_time_limit_s: int, max_time_limit_s: int) -> TrainingParams:
    """The training parameters in a request's form `fields` (missing ones get their defaults)."""
    given = {name: value for name, value in fields.items() if value is not None and str(value).strip() != ""}
    values: dict = {}
    for name, bounds in INT_BOUNDS.items():
        if name in given:
            values[name] = _bounded(name, _number(name, given[name], int), bounds)
    for name, bounds in FLOAT_BOUNDS.items():
        if name in given:
            values[name] = _bounded(name, _number(name, given[name], float), bounds)
    for name, allowed in CHOICES.items():
        if name in given:
            value = str(given[name]).strip().lower()
            if value not in allowed:
                raise errors.InvalidArgument(f"field {name} must be one of {', '.join(allowed)}, got {given[name]!r}",
                                             code="bad_training_parameter")
            values[name] = value
    for name in FLAGS:
        if name in given:
            word = str(given[name]).strip().lower()
            if word not in _TRUE + _FALSE:
                raise errors.InvalidArgument(f"field {name} must be true or false, got {given[name]!r}",
                                             code="bad_training_parameter")
            values[name] = word in _TRUE
    time_limit = default_time_limit_s
    if "time_limit_s" in given:
        time_limit = _bounded("time_limit_s", _number("time_limit_s", given["time_limit_s"], int), Bounds(1, max_time_limit_s))
    return TrainingParams(**values, time_limit_s=min(time_limit, max_time_limit_s), extra=_extra_fields(given))
