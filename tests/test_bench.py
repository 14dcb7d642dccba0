"""The benchmark's bookkeeping: time to quality, the 60-second figure, the summary row and table."""

from __future__ import annotations

from recon.bench import SPECS, markdown, quality_at, summarise, time_to


def run(points: list[tuple[float, int, float]], **extra) -> dict:
    return dict(checkpoints=[{"time": t, "iteration": i, "psnr": q, "iou": q / 30} for t, i, q in points],
                seconds=points[-1][0], iterations=points[-1][1], s_per_iteration=points[-1][0] / max(points[-1][1], 1),
                peak_rss_gb=1.0, peak_gpu_gb=None, load_average=1.0, **extra)


def test_time_to_skips_the_start_and_finds_the_first_crossing():
    cps = run([(0.0, 0, 14.0), (3.0, 10, 13.0), (9.0, 30, 20.0), (12.0, 40, 25.0)])["checkpoints"]
    # The start already beats 13.5, but a step must have been taken: the first later checkpoint counts.
    assert time_to(cps, "psnr", 13.5, higher=True) == 9.0
    assert time_to(cps, "psnr", 24.0, higher=True) == 12.0
    assert time_to(cps, "psnr", 30.0, higher=True) is None
    assert time_to(cps, "psnr", 13.5, higher=False) == 3.0  # lower is better (Chamfer)


def test_quality_at_is_the_step_that_crossed_the_time():
    cps = run([(0.0, 0, 10.0), (50.0, 5, 15.0), (61.0, 6, 16.0), (90.0, 9, 18.0)])["checkpoints"]
    assert quality_at(cps, "psnr", 60.0) == 16.0
    assert quality_at(cps, "psnr", 200.0) == 18.0  # ended before: its last figure


def test_summary_and_table():
    tutorial = run([(0.0, 0, 10.0), (61.0, 6, 12.0), (600.0, 60, 20.0)])
    recon = run([(0.0, 0, 10.0), (20.0, 100, 21.0), (60.5, 300, 25.0)])
    s = summarise("volume", SPECS["volume"], tutorial, recon)
    assert s["tutorial_quality"] == 20.0 and s["recon_seconds_to_tutorial_quality"] == 20.0
    assert s["speedup"] == 30.0
    assert (s["tutorial_at_60s"], s["recon_at_60s"]) == (12.0, 25.0)
    assert abs(s["tutorial_iou"] - 20 / 30) < 1e-9
    md = markdown(dict(quick=False, machine=dict(device="cpu", cpu_count=2, torch="x", platform="p", date="d"),
                       methods={"volume": dict(summary=s)}))
    assert "| volume | psnr | 20 (60 it, 600 s) | 20 | 30x | 12 / 25 |" in md
