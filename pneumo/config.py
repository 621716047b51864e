"""Flat, validated task configurations.

Each task has one flat dataclass whose field names are the task's papermill parameters and
command-line flags.  A configuration is built in three layers::

    dataclass defaults  <  profile (smoke | cpu | gpu)  <  explicit overrides

Unknown keys, values of the wrong type, numbers out of their range and an unavailable device
are rejected when the config is built, before any data are read, with a message that names the
field.
Fields marked ``key=False`` (device, worker counts, ``force``) do not change results and are
left out of the cache key, so an entry trained on a GPU box is reused by a laptop render.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Callable, ClassVar, Mapping, NamedTuple, Optional, TypeVar

from pneumo.errors import UserError

PROFILES = ("smoke", "cpu", "gpu")

C = TypeVar("C", bound="TaskConfig")


class ConfigError(UserError, ValueError):
    """A task parameter is unknown or has the wrong type or value."""


class Interval(NamedTuple):
    """A range of numbers written as in mathematics: ``"[1, inf)"``, ``"(0, 1)"``."""

    low: float
    high: float
    low_closed: bool
    high_closed: bool

    @classmethod
    def parse(cls, text: str) -> "Interval":
        match = re.fullmatch(r"\s*([\[(])\s*([^,\s]+)\s*,\s*([^\])\s]+)\s*([\])])\s*", text)
        if not match:
            raise ValueError(f"not an interval: {text!r} (expected e.g. '[1, inf)' or '(0, 1)')")
        left, low, high, right = match.groups()
        return cls(float(low), float(high), left == "[", right == "]")

    def __contains__(self, value: float) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def __str__(self) -> str:
        def number(x: float) -> str:
            return str(int(x)) if x.is_integer() else repr(x)

        if math.isinf(self.high):
            return f"{'at least' if self.low_closed else 'greater than'} {number(self.low)}"
        return (f"in {'[' if self.low_closed else '('}{number(self.low)}, "
                f"{number(self.high)}{']' if self.high_closed else ')'}")


def param(default: Any, help: str, *, key: bool = True, choices: tuple | None = None,
          interval: str | None = None, check: Callable[[Any], Any] | None = None):
    """Declare a config field with its help text.

    Parameters
    ----------
    default
        Value when neither the profile nor the user sets it.
    help
        One line shown by ``--help`` and in the report's parameter tables.
    key
        Whether the field is part of the cache key (False for device, workers, ``force``).
    choices
        Allowed values, checked on construction.
    interval
        Allowed range of a number, checked on construction: ``"[1, inf)"`` (at least 1),
        ``"(0, 1)"`` (strictly between 0 and 1). None is always allowed for optional fields.
    check
        Further check on construction: ``check(value)`` raises :class:`ConfigError` with the
        reason (used for the device, whose availability depends on the machine).
    """
    return dataclasses.field(
        default=default,
        metadata={"help": help, "key": key, "choices": choices, "check": check,
                  "interval": Interval.parse(interval) if interval else None},
    )


def _check_device(name: str) -> None:
    from pneumo.device import pick_device  # imported here: pneumo.device imports this module

    pick_device(name)


def _allowed_types(annotation: Any) -> tuple[type, ...]:
    """Concrete Python types accepted for a field annotated as ``annotation`` (resolved)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        out: tuple[type, ...] = ()
        for arg in typing.get_args(annotation):
            out += _allowed_types(arg)
        return out
    if annotation is type(None):
        return (type(None),)
    if annotation is float:
        return (float, int)  # 1 is a fine learning-rate multiplier; bool is rejected below
    return (annotation,)


def _type_name(types_: tuple[type, ...]) -> str:
    return " or ".join(sorted({"None" if t is type(None) else t.__name__ for t in types_}))


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Base class of the task configs: validation, profiles, cache key, CLI.

    Declares the fields every task has (profile, data, seed, bootstrap, device, num_workers,
    cache, force). Subclasses are flat frozen dataclasses that add the task's own fields with
    :func:`param` and set ``PROFILES`` to the per-profile overrides of the defaults.
    """

    # The fields every task has, declared here once; a task's own fields follow them.
    profile: str = param("cpu", "smoke | cpu | gpu (auto: smoke on phantoms, else gpu with CUDA, else cpu)",
                         choices=PROFILES)
    data: Optional[str] = param(None, "data folder in Kaggle layout; None: $PNEUMO_DATA, data/chest_xray, "
                                "else synthetic phantoms", key=False)
    seed: int = param(0, "seed of every random choice: split, initialisation, batches, augmentation, "
                      "sampling, t-SNE", interval="[0, inf)")
    bootstrap: int = param(1000, "patient-bootstrap resamples for confidence intervals", interval="[0, inf)")
    device: str = param("auto", "auto | cpu | cuda | cuda:N | mps", key=False, check=_check_device)
    num_workers: Optional[int] = param(None, "image decoding processes (None: all cores)", key=False,
                                       interval="[0, inf)")
    cache: Optional[str] = param(None, "results folder (None: $PNEUMO_CACHE or results/)", key=False)
    force: bool = param(False, "recompute even when a cached entry exists", key=False)

    # Per-profile overrides of the defaults (set by each task; after the fields, whose
    # ``choices=PROFILES`` above means the module's tuple of profile names).
    PROFILES: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))  # resolves postponed (string) annotations
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            allowed = _allowed_types(hints[f.name])
            if isinstance(value, bool) and bool not in allowed:
                raise ConfigError(
                    f"{type(self).__name__}.{f.name} must be {_type_name(allowed)}, got {value!r}"
                )
            if not isinstance(value, allowed):
                raise ConfigError(
                    f"{type(self).__name__}.{f.name} must be {_type_name(allowed)}, "
                    f"got {type(value).__name__} {value!r}"
                )
            if float in allowed and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise ConfigError(
                    f"{type(self).__name__}.{f.name} must be one of {list(choices)}, got {value!r}"
                )
            interval = f.metadata.get("interval")
            if interval and value is not None and value not in interval:
                raise ConfigError(f"{type(self).__name__}.{f.name} must be {interval}, got {value!r}")
            check = f.metadata.get("check")
            if check is not None:
                try:
                    check(value)
                except ConfigError as error:
                    raise ConfigError(f"{type(self).__name__}.{f.name}: {error}") from None
        self.validate()

    def validate(self) -> None:
        """Checks that involve several fields; subclasses raise :class:`ConfigError` here.

        Runs at the end of construction (also after :meth:`replace`), so a config that exists
        is one the task can run with.
        """

    # -- construction -------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def check_keys(cls, keys) -> None:
        """Raise :class:`ConfigError` naming every key that is not a field of ``cls``."""
        known = cls.field_names()
        unknown = [k for k in keys if k not in known]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, known, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(
                f"unknown parameter(s) for {cls.__name__}: {', '.join(hints)}. "
                f"Known parameters: {', '.join(known)}"
            )

    @classmethod
    def create(cls: type[C], profile: str | None = None, **overrides: Any) -> C:
        """Build a config from a profile and explicit overrides.

        Parameters
        ----------
        profile
            ``"smoke"``, ``"cpu"``, ``"gpu"``, or None/``"auto"`` to follow the data and the
            hardware (:func:`pneumo.device.default_profile`: ``smoke`` on synthetic phantoms,
            else ``gpu`` when CUDA is available, else ``cpu``).
        **overrides
            Field values; ``None`` values are ignored so that a papermill parameters cell
            can list every field with ``None`` meaning "the profile's value".
        """
        overrides = {k: v for k, v in overrides.items() if v is not None}
        overrides.pop("profile", None)
        cls.check_keys(overrides)
        if profile in (None, "auto"):
            from pneumo.device import default_profile

            profile = default_profile(overrides.get("data"))
        if profile not in PROFILES:
            raise ConfigError(f"profile must be one of {list(PROFILES)} or 'auto', got {profile!r}")
        values = {**cls.PROFILES.get(profile, {}), **overrides, "profile": profile}
        return cls(**values)

    @classmethod
    def from_namespace(cls: type[C], namespace: Mapping[str, Any]) -> C:
        """Build a config from a notebook's globals (the papermill parameters)."""
        names = cls.field_names()
        return cls.create(**{k: namespace[k] for k in names if k in namespace})

    @classmethod
    def from_cli(cls: type[C], argv: list[str] | None = None) -> C:
        """Build a config from command-line flags, one ``--field value`` per field."""
        parser = argparse.ArgumentParser(description=cls.__doc__.strip().splitlines()[0], allow_abbrev=False)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = _allowed_types(hints[f.name])[0]
            interval = f.metadata.get("interval")
            parser.add_argument(
                f"--{f.name.replace('_', '-')}",
                dest=f.name,
                type=_parse_bool if kind is bool else kind,
                default=None,
                help=f"{f.metadata.get('help', '')}{'; ' + str(interval) if interval else ''} "
                     f"(default: {f.default!r}, or the profile's)",
            )
        args = parser.parse_args(argv)
        return cls.create(**vars(args))

    # -- use ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key_dict(self) -> dict[str, Any]:
        """The fields that change results: the part of the config that enters the cache key."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.metadata.get("key", True)
        }

    def replace(self: C, **changes: Any) -> C:
        type(self).check_keys(changes)
        return dataclasses.replace(self, **changes)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
