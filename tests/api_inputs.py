"""Inputs of the page's /run endpoint, built by knob name so tests survive new methods and knobs.

The endpoint takes the method and target dropdowns, then every knob of every method in the page's
order (method by method, each method's knobs group by group). :func:`run_inputs` walks that order
from the registry, checks it against the labels the server reports through ``view_api``, and fills
each knob with its default, or an override given by name for the chosen method.
"""

from __future__ import annotations

from typing import Any


def run_layout(client: Any) -> list[tuple[str, Any]]:
    """(method name, Knob) for every knob input of /run in order, checked against the server's labels."""
    import app
    from recon.methods import METHODS
    from recon.params import knobs

    params = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/run"]["parameters"]
    labels = [p["label"] for p in params]
    assert labels[:2] == ["Method", "Target"], labels[:2]
    layout = [(name, k) for name, (cls, _) in METHODS.items() for k in app._grouped(knobs(cls.Config))]
    assert [k.label for _, k in layout] == labels[2:], "the /run inputs no longer follow the registry's order"
    return layout


def run_inputs(client: Any, method: str, target: str, **overrides: Any) -> list:
    """Positional inputs of /run: `method`'s knobs at their defaults except `overrides` (by knob name),
    every other method's knobs at their defaults."""
    layout = run_layout(client)
    names = {k.name for m, k in layout if m == method}
    unknown = set(overrides) - names
    assert names and not unknown, f"unknown method {method!r} or knobs {unknown}"
    return [method, target] + [overrides.get(k.name, k.default) if m == method else k.default for m, k in layout]


def quick(**overrides: Any) -> dict[str, Any]:
    """Deform settings small enough for a CPU test (a few iterations on a level-2 sphere)."""
    return {"iterations": 4, "points": 500, "sphere_level": 2, **overrides}


def cheap_evaluate(self) -> dict[str, float]:
    """Deform.evaluate with 300 points a side instead of 10,000 (seconds on a shared CPU): the
    serving tests need the code path, not the metric's precision."""
    import torch
    from pytorch3d.loss import chamfer_distance

    from recon.methods.deform import eval_points

    with torch.no_grad():
        d = chamfer_distance(eval_points(self.target, 300), eval_points(self.current_mesh(), 300, seed=4321))[0]
    return {"chamfer_10k": float(d)}


def wait_for(job: Any, predicate: Any, timeout: float = 60.0) -> str:
    """Poll a streaming job until one of its status texts satisfies `predicate`; returns that text."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for out in reversed(job.outputs()):
            if predicate(out[0]):
                return out[0]
        if job.done() and not any(predicate(o[0]) for o in job.outputs()):
            break
        time.sleep(0.05)
    seen = [o[0].splitlines()[0] for o in job.outputs()]
    raise AssertionError(f"no matching status within {timeout}s; saw {seen[-5:]}")
