"""Config fields that carry their own UI metadata.

A method's config is a plain dataclass whose fields are declared with :func:`knob`. The page builds
its sliders from that metadata (:func:`knobs`), and values coming back from the page or an API
client go through :func:`from_values`, which clamps them into bounds and reports what it changed,
so nothing out of range ever reaches torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


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
        """`value` coerced to this knob's type and bounds, and a message when it had to change."""
        if self.kind == "bool":
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on"), None
            return bool(value), None
        if self.kind == "choice":
            if value in self.choices:
                return value, None
            return self.default, f"{self.label}: {value!r} is not one of {list(self.choices)}; using {self.default!r}"
        try:
            num = float(value)
        except (TypeError, ValueError):
            return self.default, f"{self.label}: {value!r} is not a number; using {self.default}"
        if not math.isfinite(num):
            return self.default, f"{self.label}: {value!r} is not finite; using {self.default}"
        clamped = min(max(num, self.lo), self.hi)
        out: Any = int(round(clamped)) if self.kind == "int" else clamped
        if clamped != num:
            return out, f"{self.label}: {value} is outside [{self.lo:g}, {self.hi:g}]; using {out:g}"
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


def from_values(cfg_cls: type, values: dict[str, Any], base: Any = None) -> tuple[Any, list[str]]:
    """A config built from `base` (default: the class defaults) updated with `values`.

    Unknown names and out-of-range values are reported in the returned messages; values are
    clamped, never passed through unchecked.
    """
    current = dataclasses.asdict(base) if base is not None else {}
    by_name = {k.name: k for k in knobs(cfg_cls)}
    messages = []
    for name, value in values.items():
        k = by_name.get(name)
        if k is None:
            messages.append(f"unknown setting {name!r} ignored")
            continue
        current[name], msg = k.clamp(value)
        if msg:
            messages.append(msg)
    return cfg_cls(**current), messages


def to_values(cfg: Any) -> dict[str, Any]:
    """The knob values of a config, by name."""
    return {k.name: getattr(cfg, k.name) for k in knobs(type(cfg))}
