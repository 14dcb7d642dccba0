"""Config fields that carry their own UI metadata.

A method's config is a plain dataclass whose fields are declared with :func:`knob`. The page builds
its sliders from that metadata (:func:`knobs`), and values coming back from the page or an API
client go through :func:`validate`, which clamps them into bounds and reports what it changed,
so nothing out of range ever reaches torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


class SettingError(ValueError):
    """A setting that cannot be used at all (strict validation: CLI arguments, config files)."""


@dataclass(frozen=True)
class Knob:
    """UI metadata of one config field."""

    name: str
    default: Any
    label: str
    help: str
    kind: str  # "float" | "int" | "bool" | "choice"
    lo: float | None = None
    hi: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    group: str = "Settings"
    live: bool = False  # may change while a run is going (weights, learning rate)
    log: bool = False  # spans orders of magnitude

    def clamp(self, value: Any) -> tuple[Any, str | None]:
        """`value` coerced to this knob's kind and clamped into its bounds, and a message when it changed.

        Raises :class:`SettingError` for a value of the wrong kind (see :func:`validate`).
        """
        if self.kind == "bool":
            if isinstance(value, str):
                word = value.strip().lower()
                if word not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise SettingError(f"{self.label}: {value!r} is not true/false")
                return word in ("1", "true", "yes", "on"), None
            return bool(value), None
        if self.kind == "choice":
            if value in self.choices:
                return value, None
            raise SettingError(f"{self.label}: {value!r} is not one of {', '.join(self.choices)}")
        if isinstance(value, bool):
            raise SettingError(f"{self.label}: {value!r} is not a number")
        try:
            num = float(value)
        except (TypeError, ValueError, OverflowError):
            raise SettingError(f"{self.label}: {value!r} is not a number") from None
        if not math.isfinite(num):
            raise SettingError(f"{self.label}: {value!r} is not finite")
        clamped = min(max(num, self.lo), self.hi)
        out: Any = int(round(clamped)) if self.kind == "int" else clamped
        if clamped != num:
            return out, f"{self.label}: {num:g} is outside [{self.lo:g}, {self.hi:g}]; using {out:g}"
        return out, None


def knob(
    default: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    label: str,
    help: str,
    step: float | None = None,
    choices: tuple[str, ...] = (),
    group: str = "Settings",
    live: bool = False,
    log: bool = False,
) -> Any:
    """A dataclass field with UI metadata; the kind is inferred from the default's type."""
    if isinstance(default, bool):
        kind = "bool"
    elif choices:
        kind = "choice"
    elif isinstance(default, int):
        kind = "int"
    else:
        kind = "float"
    if kind in ("int", "float") and (lo is None or hi is None):
        raise ValueError(f"numeric knob {label!r} needs bounds")
    if step is None and kind == "int":
        step = 1
    meta = dict(label=label, help=help, kind=kind, lo=lo, hi=hi, step=step, choices=tuple(choices),
                group=group, live=live, log=log)
    return field(default=default, metadata={"knob": meta})


def knobs(cfg_cls: type) -> list[Knob]:
    """The knobs of a config class, in declaration order."""
    out = []
    for f in dataclasses.fields(cfg_cls):
        meta = f.metadata.get("knob")
        if meta is not None:
            out.append(Knob(name=f.name, default=f.default, **meta))
    return out


def validate(cfg_cls: type, values: dict[str, Any], base: Any = None, *, live_only: bool = False,
             strict: bool = False) -> tuple[Any, list[str]]:
    """The one way values from outside (the page, the API, the CLI, config files, live edits) become a config.

    Returns a config built from `base` (default: the class defaults) updated with `values`, and the
    messages saying what was not taken as given. Every value is coerced to its knob's kind and
    clamped into bounds, so nothing out of range reaches torch:

    - an unknown name is ignored (`strict`: :class:`SettingError`);
    - an empty value (``None`` or ``""``, e.g. a cleared number box) keeps the current value;
    - with `live_only`, a knob that cannot change while a run is going keeps its value;
    - a value that is not of the knob's kind (not a number, not one of the choices, not finite)
      falls back to the current value (`strict`: :class:`SettingError`); one out of bounds is clamped.
    """
    current = dataclasses.asdict(base) if base is not None else {k.name: k.default for k in knobs(cfg_cls)}
    by_name = {k.name: k for k in knobs(cfg_cls)}
    messages = []
    for name, value in values.items():
        k = by_name.get(name)
        if k is None:
            if strict:
                raise SettingError(f"unknown setting {name!r}; settings are {', '.join(by_name)}")
            messages.append(f"unknown setting {name!r} ignored")
            continue
        if value is None or (isinstance(value, str) and not value.strip()):
            messages.append(f"{k.label} is empty; kept {current[name]!r}")
            continue
        if live_only and not k.live:
            messages.append(f"{k.label} cannot change while a run is going")
            continue
        try:
            current[name], msg = k.clamp(value)
        except SettingError:
            if strict:
                raise
            messages.append(f"{k.label}: {value!r} is not a valid value; kept {current[name]!r}")
            continue
        if msg:
            messages.append(msg)
    return cfg_cls(**current), messages


def to_values(cfg: Any) -> dict[str, Any]:
    """The knob values of a config, by name."""
    return {k.name: getattr(cfg, k.name) for k in knobs(type(cfg))}


def grouped(ks: list[Knob]) -> list[Knob]:
    """Knobs group by group, in first-appearance order: the order the page shows them in."""
    order = list(dict.fromkeys(k.group for k in ks))
    return sorted(ks, key=lambda k: order.index(k.group))
