"""Every run is priced before it starts (recon.cost): the estimates, the refusal message, and a matrix
of real runs whose measured peak memory each estimate must match within a factor of 1.5.

The matrix runs every method at its default preset, its Tutorial preset (splats: Full) and near-maximum
settings, each scaled down to run in seconds (2-3 iterations, fewer training views, smaller sizes while
the big knobs stay big), in fresh processes two at a time: about 2-3 minutes on a 2-core CPU in all.
"""

from __future__ import annotations

import math
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from recon import cost
from recon.cost.measure import measure_in_subprocess
from recon.methods import METHODS, get_method
from recon.params import knobs, validate

GB = 1e9


def config(method: str, preset: str | None = None, **values):
    cls = get_method(method)
    cfg, _ = validate(cls.Config, {**(cls.presets[preset] if preset else {}), **values})
    return cfg


def maxima(method: str, **values):
    """Every size knob at its slider's maximum (coarse-to-fine schedules off: the full size from the start)."""
    cls = get_method(method)
    top = {k.name: k.hi for k in knobs(cls.Config) if k.kind == "int" and k.name not in ("seed",)}
    top.update({k: 0 for k in ("coarse_grid", "coarse_image_size") if k in top})
    return config(method, **{**top, **values})


# --- the estimates ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(METHODS))
def test_every_preset_is_priced(method):
    cls = get_method(method)
    for preset in cls.presets:
        est = cls.estimate(config(method, preset), "cpu")
        for value in (est.memory_bytes, est.setup_seconds, est.seconds_per_step, est.total_seconds):
            assert math.isfinite(value) and value > 0, (preset, est)
        assert est.iterations == cls.presets[preset].get("iterations", est.iterations)
        assert est.drivers and all(math.isfinite(v) and v >= 0 for v in est.drivers.values())
        assert re.fullmatch(r"about \d+(\.\d)? (s|min|h|days) · \d+(\.\d)? (MB|GB|TB)", est.describe()), est.describe()
        gpu = cls.estimate(config(method, preset), "cuda")  # priced without touching a GPU
        assert gpu.memory_bytes == est.memory_bytes and gpu.seconds_per_step < est.seconds_per_step


def test_total_adds_up():
    est = cost.estimate("volume", config("volume", "Quick"), "cpu")
    assert est.total_seconds == pytest.approx(est.setup_seconds + est.iterations * est.seconds_per_step
                                              * (1 + cost.EXTRAS) + est.evaluation_seconds)


def test_human_units():
    assert cost.human_bytes(0.7e9) == "0.7 GB" and cost.human_bytes(68e9) == "68 GB"
    assert cost.human_bytes(2.5e12) == "2.5 TB" and cost.human_bytes(35e6) == "35 MB"
    assert cost.human_seconds(125) == "2 min" and cost.human_seconds(40 * 86400) == "40 days"


def test_bigger_settings_cost_more():
    for method, knob, lo, hi in [("volume", "grid_size", 64, 256), ("volume", "points_per_ray", 64, 512),
                                 ("nerf", "hidden", 64, 512), ("nerf", "rays_per_image", 256, 8192),
                                 ("textured_mesh", "faces_per_pixel", 10, 100), ("deform", "points", 1000, 50000)]:
        small = cost.estimate(method, config(method, "Tutorial", **{knob: lo}))
        big = cost.estimate(method, config(method, "Tutorial", **{knob: hi}))
        assert big.memory_bytes > small.memory_bytes and big.seconds_per_step > small.seconds_per_step, knob


def test_splats_are_priced_at_the_largest_count():
    """Density control can grow the splats up to max_splats: the steps after the first refinement, and
    the evaluation, are priced at that count; a run that never refines keeps its initial count."""
    quick = config("splats", "Quick")
    grown = cost.estimate("splats", _with(quick, max_splats=50000))
    # the peak is often the setup's (the target render): the steps' own price must grow with the count
    assert cost.phase_memory("splats", _with(quick, max_splats=50000))["step"] > \
        cost.phase_memory("splats", quick)["step"]
    assert grown.memory_bytes >= cost.estimate("splats", quick).memory_bytes
    assert grown.drivers["splats"] == 50000 and grown.seconds_per_step > cost.estimate("splats", quick).seconds_per_step
    for fixed in (dict(refine_every=0), dict(refine_start=300), dict(iterations=40)):
        cfg = _with(quick, **fixed)
        assert cost.estimate("splats", _with(cfg, max_splats=50000)).drivers["splats"] == cfg.num_splats, fixed
        assert cost.estimate("splats", _with(cfg, max_splats=50000)).total_seconds == \
            cost.estimate("splats", cfg).total_seconds


def test_setup_is_priced():
    """Rendering 100 training views at 256 px is part of the price: memory and time."""
    few = cost.estimate("volume", config("volume", "Quick", num_views=4, image_size=256))
    many = cost.estimate("volume", config("volume", "Quick", num_views=100, image_size=256))
    assert many.setup_seconds > 5 * few.setup_seconds
    assert many.memory_bytes > few.memory_bytes + 100 * 256 * 256 * 16  # images and silhouettes, at least


@pytest.mark.parametrize("method", ["volume", "nerf"])
def test_slider_maxima_are_refused(method):
    est = cost.estimate(method, maxima(method))
    assert est.memory_bytes > 50 * GB
    assert not cost.fits(est, 64 * GB, 24 * 3600)
    assert cost.fits(cost.estimate(method, config(method, "Quick")), 8 * GB, 3600)


def _advice(message: str, cfg) -> tuple[dict, dict, int | None]:
    """What the advice suggests: values that fit alone {knob: value}, values that fit together, and
    the most iterations that fit the time limit (None if not said)."""
    by_label = {cost.advice_short(k.label): k for k in knobs(type(cfg))}

    def value(label: str, text: str):
        k = by_label[label]
        return k.name, int(text) if k.kind == "int" else float(text)

    alone = dict(value(label, v) for label, v in re.findall(r"([a-z][a-z -]*?) [\d.]+ \(→ ([\d.]+)", message)
                 if label != "iterations")
    together = {}
    clause = re.search(r"together, (.*) would fit", message)
    if clause:
        pairs = [re.fullmatch(r"(.+) ([\d.]+)", part).groups() for part in re.split(r", | and ", clause[1])]
        together = dict(value(label, v) for label, v in pairs)
    iterations = re.search(r"iterations \d+ \(→ (\d+) fit the time limit\)", message)
    return alone, together, int(iterations[1]) if iterations else None


def _with(cfg, **values):
    return validate(type(cfg), values, base=cfg)[0]


@pytest.mark.parametrize("method, costly", [
    ("volume", {"grid_size", "points_per_ray", "views_per_step", "image_size"}),
    ("nerf", {"rays_per_image", "points_per_ray", "hidden", "views_per_step", "harmonic_functions", "image_size"}),
])
def test_advice_at_the_maxima(method, costly):
    """The refusal names the settings that cost most, with values that do fit."""
    cfg = maxima(method)
    budget, seconds = 5.2 * GB, 15 * 60
    msg = cost.advice(method, cfg, "cpu", budget, seconds, knobs)
    est = cost.estimate(method, cfg)
    assert msg.startswith(f"This run needs about {cost.human_bytes(est.memory_bytes)} and ")
    assert "this server allows 5.2 GB and 15 min per run. What costs most: " in msg
    alone, together, _ = _advice(msg, cfg)
    named = {k.name for k in knobs(type(cfg))
             if k.name != "iterations" and f"{cost.advice_short(k.label)} {getattr(cfg, k.name)}" in msg}
    assert len(named) >= 2 and named <= costly, msg
    assert alone or together, msg
    for name, value in alone.items():  # each alone, the others unchanged
        assert value < getattr(cfg, name)
        assert cost.estimate(method, _with(cfg, **{name: value})).memory_bytes <= budget, (name, value, msg)
    if together:
        assert len(together) >= 2
        assert cost.estimate(method, _with(cfg, **together)).memory_bytes <= budget, msg


def test_advice_for_a_modest_overrun_names_values_that_fit_alone():
    cfg = config("volume", "Tutorial")
    budget = 2e9
    assert cost.estimate("volume", cfg).memory_bytes > budget
    msg = cost.advice("volume", cfg, "cpu", budget, None)
    alone, together, _ = _advice(msg, cfg)
    assert len(alone) >= 2 and not together, msg
    for name, value in alone.items():
        assert cost.estimate("volume", _with(cfg, **{name: value})).memory_bytes <= budget
        k = {k.name: k for k in knobs(type(cfg))}[name]
        bigger = value + (k.step or 1)
        if bigger <= getattr(cfg, name):  # the largest that fits
            assert cost.estimate("volume", _with(cfg, **{name: bigger})).memory_bytes > budget, (name, msg)


def test_advice_for_time_names_iterations_that_fit():
    cfg = config("volume", "Quick", iterations=20000)
    est = cost.estimate("volume", cfg)
    assert est.total_seconds > 3600
    msg = cost.advice("volume", cfg, "cpu", 100 * GB, 3600)
    most = _advice(msg, cfg)[2]
    assert 1 <= most < 20000
    assert cost.estimate("volume", _with(cfg, iterations=most)).total_seconds <= 3600
    assert cost.estimate("volume", _with(cfg, iterations=most + 2)).total_seconds > 3600


def test_advice_when_it_fits():
    cfg = config("deform", "Fast")
    assert cost.advice("deform", cfg, "cpu", 100 * GB, 10 * 86400).endswith("It fits.")


# --- the matrix: estimates against measured runs -------------------------------------------------------------

_FEW = dict(num_views=4)  # a short target render (the training views' own price is calibrated in recon.cost)
#: label -> (method, preset, overrides): every method at its default preset, its Tutorial preset (splats,
#: which has none: Full) and near-maximum settings, scaled to run in seconds on a CPU (the full evaluation
#: always renders five held-out views at 128 px, so the ray-marched ones keep few points per ray or a
#: small network).
MATRIX = {
    "deform Fast": ("deform", "Fast", dict(iterations=3)),
    "deform Tutorial": ("deform", "Tutorial", dict(iterations=3)),
    "deform near max (level 6, 15k points)": ("deform", "Tutorial", dict(iterations=2, sphere_level=6, points=15000,
                                                                          coarse_points=15000)),
    "textured_mesh Quick": ("textured_mesh", "Quick", dict(iterations=3, num_views=8)),
    "textured_mesh Tutorial": ("textured_mesh", "Tutorial", dict(iterations=2, image_size=64, **_FEW)),
    "textured_mesh near max (level 6, 100 faces/px)": ("textured_mesh", "Tutorial",
                                                        dict(iterations=2, sphere_level=6, faces_per_pixel=100,
                                                             image_size=32, views_per_step=1, **_FEW)),
    "volume Quick": ("volume", "Quick", dict(iterations=2, views_per_step=3, num_views=8)),
    "volume Tutorial": ("volume", "Tutorial", dict(iterations=2, image_size=64, views_per_step=4, **_FEW)),
    "volume near max (grid 256, 256 points/ray)": ("volume", "Tutorial",
                                                   dict(iterations=2, grid_size=256, points_per_ray=256, image_size=32,
                                                        views_per_step=2, **_FEW)),
    "nerf Quick": ("nerf", "Quick", dict(iterations=2, points_per_ray=24, num_views=8)),
    "nerf Tutorial": ("nerf", "Tutorial", dict(iterations=2, hidden=128, rays_per_image=128, points_per_ray=8,
                                               views_per_step=2, image_size=32, **_FEW)),
    "nerf near max (8192 rays, 60 harmonics)": ("nerf", "Tutorial",
                                                dict(iterations=2, rays_per_image=8192, harmonic_functions=60,
                                                     hidden=32, points_per_ray=16, views_per_step=2, image_size=32,
                                                     **_FEW)),
    "splats Quick": ("splats", "Quick", dict(iterations=3, num_views=8)),
    "splats Full": ("splats", "Full", dict(iterations=2, num_views=8)),
    "splats near max (40k splats x 40 views per step)": ("splats", "Quick",
                                                         dict(iterations=2, num_splats=40000, max_splats=40000,
                                                              views_per_step=40, num_views=40, image_size=32)),
}


@pytest.fixture(scope="module")
def measured():
    """Every matrix config run in a fresh process (two at a time): peak memory growth and seconds."""
    specs = {label: dict(method=m, preset=p, values=v, steps=v["iterations"], label=label)
             for label, (m, p, v) in MATRIX.items()}
    # the longest first (priced by the model itself), so that the two workers finish together
    order = sorted(specs, key=lambda label: -cost.estimate(MATRIX[label][0], config(*MATRIX[label][:2],
                                                                                     **MATRIX[label][2])).total_seconds)
    with ThreadPoolExecutor(2) as pool:
        futures = {label: pool.submit(measure_in_subprocess, specs[label], 300) for label in order}
        return {label: f.result() for label, f in futures.items()}


def test_matrix_covers_every_method():
    assert len(MATRIX) >= 12
    assert {m for m, _, _ in MATRIX.values()} == set(METHODS)


@pytest.mark.parametrize("label", list(MATRIX))
def test_memory_estimate_within_1_5x(label, measured):
    method, preset, values = MATRIX[label]
    r = measured[label]
    est = cost.estimate(method, config(method, preset, **values), "cpu")
    ratio = est.memory_bytes / r["measured_bytes"]
    assert 1 / 1.5 <= ratio <= 1.5, (f"{label}: estimated {est.memory_bytes / 1e6:.0f} MB, measured "
                                     f"{r['measured_bytes'] / 1e6:.0f} MB (ratio {ratio:.2f}; phases "
                                     f"{ {k: round(v / 1e6) for k, v in r['peak'].items()} } MB)")


def test_matrix_report(measured):
    """Prints the measured-vs-estimated table (see it with ``pytest -rP``); checks the seconds are measured."""
    print(f"{'config':48} {'measured':>9} {'estimated':>9} {'ratio':>5}  {'s/step':>6} {'est (quiet)':>11}  load")
    for label, (method, preset, values) in MATRIX.items():
        r = measured[label]
        est = cost.estimate(method, config(method, preset, **values), "cpu")
        print(f"{label:48} {r['measured_bytes'] / 1e6:6.0f} MB {est.memory_bytes / 1e6:6.0f} MB "
              f"{est.memory_bytes / r['measured_bytes']:5.2f}  {r['seconds']['step']:6.2f} {est.seconds_per_step:11.2f}"
              f"  {r['loadavg'][0]:.1f}")
        assert r["seconds"]["step"] > 0 and r["seconds"]["setup"] > 0
