"""What every registered method promises, checked on the cow at reduced sizes (CPU, seconds each):
the loss falls, held-out quality passes a bound, presets are within the knobs' bounds, a NaN stops
the run with a message, the same seed gives the same history, and the live quality chart keeps
getting points. Method-specific behaviour is tested in each method's own file."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import pytest
import torch

from recon.assets import load_builtin
from recon.methods import METHODS, get_method
from recon.params import knobs, validate
from recon.runner import Run

#: Per method: a setting small enough for seconds on a 2-core CPU (8 training views at 32 px where it
#: renders views, so that the one target render is shared), the steps to take, and the bound its
#: held-out quality must pass after them. Each bound was measured (seeds 0 and 1) and set below what
#: is reached with a margin, while a broken loss term, gradient or optimiser cannot pass it: the
#: start values are in the comments.
CASES: dict[str, dict[str, Any]] = {
    # Chamfer 0.25 at the start; ~0.01 after 100 SGD steps at level 2.
    "deform": dict(small=dict(sphere_level=2, points=500, coarse_points=500, optimizer="sgd", lr=1.0, iterations=100),
                   quality={"chamfer_10k": ("<", 0.03)}),
    # A grey sphere: 9.7 dB, IoU 0.54; 40 Adam steps reach ~16 dB, IoU ~0.70.
    "textured_mesh": dict(small=dict(image_size=32, num_views=8, views_per_step=2, faces_per_pixel=4, sphere_level=3,
                                     optimizer="adam", lr=0.03, iterations=40, coarse_fraction=0.0),
                          quality={"psnr": (">", 13.0), "iou": (">", 0.62)}),
    # A faint haze: 13.5 dB, IoU 0; 40 steps reach ~19 dB, IoU ~0.86.
    "volume": dict(small=dict(grid_size=32, coarse_grid=0, coarse_image_size=0, points_per_ray=32, image_size=32,
                              views_per_step=4, num_views=8, lr=0.1, iterations=40),
                   quality={"psnr": (">", 17.0), "iou": (">", 0.6)}),
    # Nearly empty space (black): 12.8 dB, IoU 0; 120 steps reach ~19 dB, IoU ~0.83.
    "nerf": dict(small=dict(harmonic_functions=6, hidden=32, rays_per_image=128, points_per_ray=32, views_per_step=4,
                            image_size=32, num_views=8, lr=5e-3, iterations=120),
                 quality={"psnr": (">", 16.5), "iou": (">", 0.55)}),
    # Carved splats start near the cow: ~15 dB; 60 steps reach ~19 dB, IoU ~0.8.
    "splats": dict(small=dict(image_size=32, num_views=8, views_per_step=4, num_splats=400, max_splats=1500,
                              iterations=60, refine_start=20, refine_every=20, refine_stop=50),
                   quality={"psnr": (">", 16.0), "iou": (">", 0.6)}),
}
NAMES = [m for m in METHODS if m in CASES]


def config(name: str, **over: Any) -> Any:
    cls = get_method(name)
    cfg, messages = validate(cls.Config, {**CASES[name]["small"], **over})
    assert not messages, messages
    return cfg


@pytest.fixture(scope="module")
def cow():
    return load_builtin("cow")


def test_every_method_has_a_case():
    assert set(NAMES) == set(METHODS), "add the new method to CASES"


@pytest.mark.parametrize("name", NAMES)
def test_the_loss_falls_and_quality_passes_its_bound(name, cow):
    cfg = config(name)
    method = get_method(name)(cow, cfg, torch.device("cpu"))
    totals = [float(method.step()["total"]) for _ in range(cfg.iterations)]
    quality = method.evaluate()
    assert np.mean(totals[-5:]) < 0.8 * np.mean(totals[:5]), totals
    for key, (way, bound) in CASES[name]["quality"].items():
        assert (quality[key] < bound) if way == "<" else (quality[key] > bound), (key, quality)
    live = method.evaluate(live=True)
    assert set(live) == set(quality) == set(method.metrics)  # the live estimate measures the same things


@pytest.mark.parametrize("name", NAMES)
def test_presets_name_real_knobs_within_bounds(name):
    cls = get_method(name)
    by_name = {k.name: k for k in knobs(cls.Config)}
    assert "Quick" in cls.presets or "Fast" in cls.presets
    assert len(cls.presets) >= 3  # recon's default, the tutorial's (or a GPU recipe), a failure mode
    for preset, values in cls.presets.items():
        for key, value in values.items():
            assert key in by_name, (preset, key)
            assert by_name[key].clamp(value) == (value, None), (preset, key, value)
    assert set(cls.device_presets.values()) <= set(cls.presets)
    for k in knobs(cls.Config):
        assert len(k.help) > 20, (name, k.name)
        if k.name.endswith("_weight"):
            assert k.live  # loss weights change while a run goes
    assert "optimised" in cls.explain and "Loss terms" in cls.explain


@pytest.mark.parametrize("name", NAMES)
def test_a_nan_loss_stops_the_run_with_a_message(name, cow):
    cls = get_method(name)

    class Poisoned(cls):
        def finish_step(self, terms):
            if self.iteration == 2:
                terms = {k: v * float("nan") for k, v in terms.items()}
            return super().finish_step(terms)

    run = Run(Poisoned, cow, config(name, iterations=20), torch.device("cpu")).start()
    assert run.wait_settled(120)
    view = run.poll()
    assert view.state == "error" and "NaN" in view.message and view.iteration == 2
    _, snap = run.latest_snapshot()
    assert snap is not None and snap.is_finite()  # the last finite state is what the page shows


@pytest.mark.parametrize("name", NAMES)
def test_the_same_seed_gives_the_same_history(name, cow):
    def history(seed: int) -> list[float]:
        run = Run(get_method(name), cow, config(name, iterations=4, seed=seed), torch.device("cpu"),
                  score_at_end=False).start()
        assert run.wait_settled(120) and run.poll().state == "done"
        return [r["total"] for r in run.poll().losses]

    a, b, c = history(3), history(3), history(4)
    assert np.allclose(a, b, rtol=1e-6, atol=0)  # bit for bit on one CPU; the tolerance absorbs float printing
    assert not np.allclose(a, c)


@pytest.mark.parametrize("name", NAMES)
def test_the_live_quality_chart_keeps_getting_points(name, cow):
    """At least one live estimate per 10 s of run time, or per 5% of the iterations if that is sooner,
    as far as the 5% evaluation budget allows. Here steps take 0.15 s (M = 60 steps, 9 s) and the
    cadence is shortened to 2 s; a live estimate at these sizes costs well under 2 s * 5% / 95%, so the
    budget allows the cadence: N = 4 points at least (the first after one step)."""
    cls = get_method(name)

    class Slow(cls):  # a fixed step time, so that the cadence does not depend on this machine's speed
        def step(self):
            time.sleep(0.15)
            return super().step()

    run = Run(Slow, cow, config(name, iterations=60), torch.device("cpu"), cadence=2.0).start()
    assert run.wait_settled(300)
    live = [m for m in run.poll().metrics if any(k.startswith("live_") for k in m)]
    assert len(live) >= 4, [m["iteration"] for m in live]
    assert live[0]["iteration"] == 1  # right after the first step
    assert run.share.spent("eval") <= 0.05 * run.share.work * 1.2 + 0.5  # within the budget (and the first one)
    final = run.poll().final
    assert set(final) == set(cls.metrics)  # scored once at the end, in its own columns


def test_configs_are_dataclasses_of_knobs():
    for name in NAMES:
        cfg_cls = get_method(name).Config
        assert dataclasses.is_dataclass(cfg_cls)
        assert all(f.metadata.get("knob") for f in dataclasses.fields(cfg_cls))
