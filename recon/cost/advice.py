"""Refusing a run that would not fit, and saying what would: the settings that cost most, and values
that fit the server's memory and time per run."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch

from ..params import knobs
from .model import EXTRAS, Estimate, estimate, human_bytes, human_seconds

# --- refusing, and what would fit --------------------------------------------------------------------------


def fits(est: Estimate, memory_budget_bytes: float | None, seconds_budget: float | None) -> bool:
    """Whether a run priced `est` stays within the budgets (None: no limit)."""
    return ((memory_budget_bytes is None or est.memory_bytes <= memory_budget_bytes)
            and (seconds_budget is None or est.total_seconds <= seconds_budget))


def _knobs(cfg: Any, knob_lookup: Any = None) -> list[Any]:
    if knob_lookup is not None:
        return list(knob_lookup(type(cfg)) if callable(knob_lookup) else knob_lookup)

    return knobs(type(cfg))


def _short(label: str) -> str:
    """ "Grid size (voxels per side)" -> "grid size"."""
    label = label.split("(")[0].strip()
    return label[:1].lower() + label[1:] if not label[:2].isupper() else label


def _fmt(value: float, kind: str) -> str:
    return f"{int(value)}" if kind == "int" else f"{value:g}"


def _largest_fitting(k: Any, cfg: Any, ok: Callable[[Any], bool], least: float | None = None) -> float | None:
    """The largest value of knob `k` (on its slider's grid, from `least`, default its minimum, up to its
    value) for which ``ok(cfg with it)``; None if none. Bisection: the cost grows with the value."""
    lo, cur = float(k.lo if least is None else least), float(getattr(cfg, k.name))
    step = float(k.step or (1 if k.kind == "int" else (cur - lo) / 64 or 1))

    def at(i: int) -> Any:
        v = lo + i * step
        return dataclasses.replace(cfg, **{k.name: int(round(v)) if k.kind == "int" else v})

    if not ok(at(0)):
        return None
    a, b = 0, int(math.floor((cur - lo) / step + 1e-9))  # ok at a; the largest i in [a, b] that is ok
    while a < b:
        mid = (a + b + 1) // 2
        a, b = (mid, b) if ok(at(mid)) else (a, mid - 1)
    return getattr(at(a), k.name)


def _shrink_together(ks: list[Any], cfg: Any, ok: Callable[[Any], bool],
                     floor: Callable[[Any], float] = lambda k: float(k.lo)) -> dict[str, Any]:
    """The largest values of the knobs `ks`, shrunk together (the same fraction of the way from their
    value to their minimum, on a log scale), with which ``ok(cfg)``: {name: value} for the first three
    (each then shrinks less than with two), or four if three are not enough; {} if even all of them
    at their minimum are not enough."""
    def at(subset: list[Any], t: float) -> dict[str, Any]:
        out = {}
        for k in subset:
            cur, lo = float(getattr(cfg, k.name)), floor(k)
            v = math.exp((1 - t) * math.log(cur) + t * math.log(lo)) if lo > 0 else cur + t * (lo - cur)
            step = float(k.step or 0)
            if step > 0:  # down to the slider's grid: never more than the fraction asked
                base = float(k.lo)
                v = max(lo, base + math.floor((v - base) / step + 1e-9) * step)
            out[k.name] = int(round(v)) if k.kind == "int" else v
        return out

    for n in range(min(3, len(ks)), len(ks) + 1):
        subset = ks[:n]
        if not ok(dataclasses.replace(cfg, **at(subset, 1.0))):
            continue
        a, b = 0.0, 1.0  # ok at b; the least shrinking that is ok
        for _ in range(30):
            mid = (a + b) / 2
            if ok(dataclasses.replace(cfg, **at(subset, mid))):
                b = mid
            else:
                a = mid
        return at(subset, b)
    return {}


def _most_iterations(method: str, cfg: Any, device: torch.device, seconds_budget: float) -> int:
    """The most iterations (at most the config's) whose run fits `seconds_budget`; 0 if not even one."""
    def ok(n: int) -> bool:
        return estimate(method, dataclasses.replace(cfg, iterations=n), device).total_seconds <= seconds_budget

    if not ok(1):
        return 0
    a, b = 1, int(cfg.iterations)
    while a < b:
        mid = (a + b + 1) // 2
        a, b = (mid, b) if ok(mid) else (a, mid - 1)
    return a


def advice(method: str, cfg: Any, device: torch.device | str, memory_budget_bytes: float | None,
           seconds_budget: float | None, knob_lookup: Any = None) -> str:
    """Why a run does not fit, in plain words: what it needs and what the server allows; the settings
    that cost most (ranked by how much the estimate falls at their minimum) with, for the top three,
    the largest value of each that would fit with the others unchanged; and the most iterations that
    fit the time limit.

    The settings are ranked by memory when the memory is over (the time can always be cut by fewer
    iterations), else by time. `knob_lookup`: the knobs of the config (a list, or a function of the
    config class, like :func:`recon.params.knobs`, the default).
    """
    device = torch.device(device)
    est = estimate(method, cfg, device)
    mem_over = memory_budget_bytes is not None and est.memory_bytes > memory_budget_bytes
    time_over = seconds_budget is not None and est.total_seconds > seconds_budget
    allowed = [human_bytes(memory_budget_bytes) if memory_budget_bytes is not None else "",
               human_seconds(seconds_budget) if seconds_budget is not None else ""]
    head = (f"This run needs about {human_bytes(est.memory_bytes)} and {human_seconds(est.total_seconds)}; "
            f"this server allows {' and '.join(x for x in allowed if x) or 'any amount'} per run.")
    if not (mem_over or time_over):
        return head + " It fits."

    def cost(c: Any) -> float:
        e = estimate(method, c, device)
        return e.memory_bytes if mem_over else e.total_seconds

    budget = memory_budget_bytes if mem_over else seconds_budget
    base = cost(cfg)

    def floor(k: Any) -> float:
        """The least value of knob `k` worth suggesting: fewer training views than views per step only
        caps the views per step, which that knob says more plainly."""
        if k.name == "num_views" and hasattr(cfg, "views_per_step"):
            return max(float(k.lo), float(cfg.views_per_step))
        return float(k.lo)

    ranked = []
    for k in _knobs(cfg, knob_lookup):
        if k.kind not in ("int", "float") or k.name in ("iterations", "seed") or k.lo is None:
            continue
        if float(getattr(cfg, k.name)) <= floor(k):
            continue
        low = int(floor(k)) if k.kind == "int" else floor(k)
        fall = 1 - cost(dataclasses.replace(cfg, **{k.name: low})) / base
        if fall > 0.05:  # settings that hardly matter are not worth naming
            ranked.append((fall, k))
    ranked.sort(key=lambda fk: -fk[0])
    top = [k for _, k in ranked[:4]]
    alone = {k.name: _largest_fitting(k, cfg, lambda c: cost(c) <= budget, floor(k)) for k in top[:3]}
    together: dict[str, Any] = {}
    if len(top) >= 2 and sum(v is not None for v in alone.values()) < 2:
        # one setting alone is not enough (or only one is, at an extreme): shrink the top ones together
        together = _shrink_together(top, cfg, lambda c: cost(c) <= budget, floor)
    parts = []
    for i, k in enumerate(top):
        text = f"{_short(k.label)} {_fmt(getattr(cfg, k.name), k.kind)}"
        if i < 3 and alone[top[0].name] is not None:
            v = alone[k.name]
            text += (f" (→ {_fmt(v, k.kind)}{' would fit' if i == 0 else ''})" if v is not None
                     else " (not enough alone)")
        parts.append(text)
    if together:
        named = [f"{_short(k.label)} {_fmt(together[k.name], k.kind)}" for k in top if k.name in together]
        parts[-1] += "; together, " + ", ".join(named[:-1]) + f" and {named[-1]} would fit"
    elif top and alone[top[0].name] is None:
        parts[-1] += "; even all of them at their minimum would not fit"
    msg = head + (" What costs most: " + ", ".join(parts) if parts else "")
    if time_over:
        fixed = est.setup_seconds + est.evaluation_seconds
        per = est.seconds_per_step * (1 + EXTRAS)
        most = _most_iterations(method, cfg, device, seconds_budget)
        if most >= 1:
            it = f"iterations {est.iterations} (→ {most} fit the time limit)"
        elif fixed >= seconds_budget:
            it = f"the setup and final scoring alone take about {human_seconds(fixed)}"
        else:
            it = f"one step alone takes about {human_seconds(per)}"
        msg += ("; " if parts else " ") + it
    return msg + "."


