"""The benchmark's bookkeeping: the user's clock with the benchmark's own evaluations taken out, time
to quality either way round, the summary and the report; and tiny end-to-end runs of each part
(no timing is asserted: the figures belong to the benchmark, not to the tests)."""

from __future__ import annotations

import json

import pytest
import torch

from recon.bench import main as bench_main
from recon.bench.browser import figures, measure_pages, missing
from recon.bench.common import Budgets, sides
from recon.bench.fit import fit_run
from recon.bench.streamed import streamed_run
from recon.bench.summary import (
    markdown,
    own_eval_seconds,
    quality_at,
    score_rows,
    summarise,
    time_to_quality,
)
from recon.cost.calibrate import quiet_factors
from recon.cost.fitted import COEFFICIENTS
from recon.methods import METHODS

TINY = dict(iterations=30, points=300, coarse_points=300, sphere_level=2)  # deform in a second or two


def ev(start: float, seconds: float | None, bench: bool, iteration: int = 1, **scores: float) -> dict:
    return dict(start=start, seconds=seconds, bench=bench, iteration=iteration, scores=scores)


def rows(*points: tuple[float, int, float], key: str = "psnr") -> list[dict]:
    return [dict(at_s=t, iteration=i, scores={key: q}) for t, i, q in points]


def test_the_benchmarks_own_evaluations_are_taken_out_of_the_clock():
    evals = [ev(110.0, 2.0, True, 5, psnr=20.0), ev(120.0, 3.0, True, 9, psnr=22.0),
             ev(130.0, 1.0, False, 12, psnr=23.0)]  # the last: the runner's final score, which the user waits for
    got = score_rows(evals, t0=100.0)
    assert [r["at_s"] for r in got] == [10.0, 18.0, 25.0]
    assert [r["final"] for r in got] == [False, False, True]
    assert got[1]["wall_s"] == 23.0 and got[1]["scores"] == {"psnr": 22.0}
    # one still under way counts up to now; the runner's own never counts
    assert own_eval_seconds([*evals, ev(140.0, None, True)], until=141.5) == 6.5
    assert own_eval_seconds(evals, until=111.0) == 1.0  # a part of one that straddles `until`
    assert score_rows([ev(110.0, 1.0, True)], t0=100.0) == []  # no scores (interrupted): no row, time still taken out


def test_time_to_quality_either_way_round_and_not_reached():
    higher = rows((1.0, 0, 30.0), (5.0, 10, 18.0), (9.0, 30, 25.0), (12.0, 40, 26.0))
    assert time_to_quality(higher, "psnr", 24.0, True) == 9.0  # the start (iteration 0) never counts
    assert time_to_quality(higher, "psnr", 27.0, True) is None
    lower = rows((2.0, 5, 0.004), (6.0, 50, 0.0009), (8.0, 60, 0.0007), key="chamfer_10k")
    assert time_to_quality(lower, "chamfer_10k", 0.00085, False) == 8.0
    assert time_to_quality(lower, "chamfer_10k", 0.0001, False) is None


def test_quality_at_is_the_first_score_after_the_mark_or_the_end():
    rs = rows((50.0, 5, 15.0), (61.0, 6, 16.0), (90.0, 9, 18.0))
    assert quality_at(rs, "psnr", 60.0) == 16.0
    assert quality_at(rs, "psnr", 200.0) == 18.0  # ended sooner: its final score
    assert quality_at([], "psnr", 60.0) is None


def entry(method: str, key: str, higher: bool, tut_rows: list, rec_rows: list, tut_fit: tuple, rec_fit: tuple) -> dict:
    def side(preset: str, rs: list, fit: tuple, capped: bool) -> dict:
        wall, score = fit
        return dict(preset=preset, streamed=dict(rows=rs, capped=capped, s_per_iteration=0.5),
                    fit=dict(wall_s=wall, final_score={key: score}, interrupted_s=600.0 if capped else None,
                             exit_code=0, s_per_iteration=0.4))
    return dict(method=method, metric=key, higher_is_better=higher,
                tutorial=side("Tutorial", tut_rows, tut_fit, True), recon=side("Quick", rec_rows, rec_fit, False))


def test_summary_speedup_targets_and_the_report():
    volume = entry("volume", "psnr", True, rows((61.0, 6, 12.0), (600.0, 60, 27.5)),
                   rows((20.0, 50, 21.0), (61.0, 100, 26.0), (250.0, 200, 27.6)), (640.0, 27.5), (390.0, 27.6))
    s = summarise(volume, 60.0)
    assert (s["tutorial_quality"], s["tutorial_time_s"], s["recon_time_s"]) == (27.5, 600.0, 250.0)
    assert s["speedup"] == 2.4 and s["meets_target"] is False
    assert (s["tutorial_at_quality_s"], s["recon_at_quality_s"]) == (12.0, 26.0)
    assert s["fit_speedup"] == 640.0 / 390.0
    deform = entry("deform", "chamfer_10k", False, rows((370.0, 2000, 0.00085), key="chamfer_10k"),
                   rows((10.0, 300, 0.002), (15.0, 500, 0.0008), key="chamfer_10k"), (380.0, 0.00085), (80.0, 0.0007))
    d = summarise(deform, 60.0)
    assert d["recon_time_s"] == 15.0 and d["meets_target"] is True
    nerf = entry("nerf", "psnr", True, rows((600.0, 69, 24.0)), rows((30.0, 300, 20.0)), (700.0, 24.0), (90.0, 21.0))
    n = summarise(nerf, 60.0)
    assert n["recon_time_s"] is None and n["speedup"] is None and n["meets_target"] is False
    assert n["fit_speedup"] is None  # recon ends below the tutorial: the whole commands do not compare
    splats = dict(method="splats", metric="psnr", higher_is_better=True, recon=dict(preset="Quick"))
    sp = summarise(splats, 60.0)
    assert sp["tutorial_preset"] is None and sp["meets_target"] is None
    result = dict(quick=False, budgets=Budgets().as_dict(), load=dict(min=1.0, mean=1.5, max=2.0),
                  machine=dict(cpu="Test CPU", cores=2, torch_threads=2, memory_gb=24.0, device="cpu (2 threads)",
                               torch="2.11", pytorch3d="0.7.9", python="3.11", date="2026-01-01 10:00"),
                  methods={m["method"]: {**m, "summary": x} for m, x in
                           ((volume, s), (deform, d), (nerf, n), (splats, sp))},
                  page={"skipped": "no chromium"})
    md = markdown(result)
    assert "Test CPU, 2 cores" in md and "mean 1.5" in md
    assert ("| volume (psnr) | Tutorial: 640 s → 27.5 (stopped at the cap) | Quick: 390 s → 27.6 | 600 s (27.5) | 250 s "
            "| 2.4x | 12 / 26 |") in md
    assert "- **volume**: 2.4x sooner" in md and "**misses** the 3x target" in md
    assert "- **deform**: 25x sooner" not in md and "24.7x sooner" in md and "meets the 3x target" in md
    assert "- **nerf**: recon's Quick never reached the tutorial's 24: **misses the 3x target**" in md
    assert "| nerf (psnr) |" in md and "| not reached |" in md
    assert "- **splats**: no tutorial recipe" in md
    assert "not measured (no chromium)" in md


def test_sides_compare_the_tutorial_with_the_devices_default():
    assert sides("deform", "cpu") == [("tutorial", "Tutorial"), ("recon", "Fast")]
    assert sides("volume", "cpu") == [("tutorial", "Tutorial"), ("recon", "Quick")]
    assert Budgets.for_run(True).tutorial_s == Budgets().tutorial_s / 10


def canned(method: str, preset: str, *args, **kw) -> dict:
    """What fit_run / streamed_run return, for the bookkeeping of main()."""
    scores = {"chamfer_10k": 0.001 if preset == "Tutorial" else 0.0008}
    return dict(method=method, preset=preset, started=0.0, wall_s=10.0, last_file_s=9.0, exit_code=0,
                interrupted_s=None, killed=False, files={"a": 1}, peak_rss_gb=1.0, final_score=scores,
                settings={"iterations": 30}, iterations=30, s_per_iteration=0.1, state="done", total=30, capped=False,
                config={"iterations": 30}, setup_s=1.0, user_s=5.0, bench_evals=1, bench_eval_s=0.5, rss_growth_gb=0.1,
                rows=[dict(at_s=4.0, iteration=30, scores=scores)])


def test_main_writes_a_report_calibration_can_read_and_resummarises_it(tmp_path, monkeypatch):
    from recon.bench import fit, streamed

    def fails_for_splats(method: str, *args, **kw) -> dict:
        if method == "splats":
            raise KeyError("splats")  # one method's failure is recorded; the others' figures are kept
        return canned(method, *args, **kw)

    monkeypatch.setattr(fit, "fit_run", canned)
    monkeypatch.setattr(streamed, "streamed_run", fails_for_splats)
    methods = "deform,splats" if "splats" in METHODS else "deform"
    assert bench_main.main(["--quick", "--methods", methods, "--skip-page", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    if "splats" in METHODS:
        assert data["methods"]["splats"]["recon"]["streamed"]["error"] == "KeyError: 'splats'"
        assert "error: KeyError" in (tmp_path / "bench.md").read_text()
    side = data["methods"]["deform"]["recon"]
    assert {"config", "iterations", "s_per_iteration", "setup_s", "fit", "streamed"} <= set(side)
    assert data["methods"]["deform"]["summary"]["speedup"] == 1.0
    quiet_factors(COEFFICIENTS, data)  # recon.cost.calibrate still reads it
    (tmp_path / "bench.md").unlink()
    assert bench_main.main(["--resummarise", "--out", str(tmp_path)]) == 0
    assert "| deform (chamfer_10k) |" in (tmp_path / "bench.md").read_text()
    (tmp_path / "bench.json").write_text(json.dumps({"methods": {}}))  # the old benchmark's format
    with pytest.raises(SystemExit):
        bench_main.main(["--resummarise", "--out", str(tmp_path)])


def test_a_partial_rerun_says_when_each_part_was_measured(tmp_path, monkeypatch):
    from recon.bench import fit, streamed

    monkeypatch.setattr(fit, "fit_run", canned)
    monkeypatch.setattr(streamed, "streamed_run", canned)
    real = bench_main.machine
    for date, skip in (("2026-01-01 10:00", []), ("2026-01-02 11:00", ["--skip-cli"])):
        monkeypatch.setattr(bench_main, "machine", lambda device, d=date: {**real(device), "date": d})
        assert bench_main.main(["--quick", "--methods", "deform", "--skip-page", *skip, "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["measured"] == {"fit": "2026-01-01 10:00", "streamed": "2026-01-02 11:00"}
    head = (tmp_path / "bench.md").read_text().splitlines()[2]
    assert "whole fits 2026-01-01 10:00, streamed runs 2026-01-02 11:00" in head


def test_a_tiny_fit_is_timed_to_its_last_file(tmp_path):
    r = fit_run("deform", "Fast", tmp_path, 120.0, torch.device("cpu"), "chamfer_10k",
                extra=["--iters", "5", "--frames", "2", "--size", "32"], log=lambda m: None)
    assert r["exit_code"] == 0 and r["state"] == "done" and r["iterations"] == 5
    assert "deform_cow_config.json" in r["files"] and "deform_cow_turntable.mp4" in r["files"]
    assert r["final_score"]["chamfer_10k"] > 0 and 0 < r["last_file_s"] <= r["wall_s"]
    assert r["interrupted_s"] is None and r["peak_rss_gb"] > 0


def test_a_tiny_streamed_run_is_scored_and_its_own_scores_taken_out(monkeypatch):
    from recon import workbench

    monkeypatch.setattr(workbench, "REFRESH_S", 0.05)
    r = streamed_run("deform", "Fast", torch.device("cpu"), 60.0, score_every_s=0.2, quality_at_s=0.5,
                     overrides=TINY, log=lambda m: None)
    assert r["state"] == "done" and r["iterations"] == 30 and not r["capped"]
    assert r["rows"] and r["rows"][-1]["final"] and r["rows"][-1]["scores"] == r["final"]
    assert r["bench_evals"] == sum(row["bench"] for row in r["rows"])
    assert r["user_s"] == pytest.approx(r["wall_s"] - r["bench_eval_s"])
    assert all(a["at_s"] <= b["at_s"] for a, b in zip(r["rows"], r["rows"][1:]))
    from recon.methods.deform import Deform

    assert "evaluate" in Deform.__dict__ and Deform.evaluate.__qualname__ == "Deform.evaluate"  # unwrapped again


def test_page_figures_from_the_recorders_log():
    rec = dict(clicks={"run": 1000.0, "stop": 13000.0}, read_at=15000.0,
               loss=[[500.0, "[]", 0], [2500.0, "a", 1], [3000.0, "b", 2], [3500.0, "c", 3], [12900.0, "d", 9]],
               quality=[[500.0, "[]", 0], [4000.0, "q", 1], [9000.0, "r", 2]],
               status=[[500.0, "idle"], [1200.0, "setup"], [2000.0, "running"], [13300.0, "stopping"],
                       [14000.0, "stopped"]], files=16500.0)
    f = figures(rec, window_s=6.0)
    assert (f["first_loss_s"], f["first_quality_s"]) == (1.5, 3.0)
    assert f["window_s"] == 6.0 and (f["loss_updates"], f["quality_updates"]) == (2, 1)  # in (2.5 s, 8.5 s] of the page
    assert f["loss_updates_per_min"] == 20.0
    assert (f["stopping_s"], f["stopped_s"], f["state_at_stop"]) == (0.3, 1.0, "running")
    assert f["files_after_stopped_s"] == 2.5
    short = figures({**rec, "clicks": {"run": 1000.0, "stop": 5500.0}}, window_s=30.0)
    assert short["window_s"] == 3.0  # stopped before the window was over: counted until Stop
    never = figures({**rec, "loss": [[500.0, "[]", 0]], "clicks": {"run": 1000.0}}, window_s=6.0)
    assert never["first_loss_s"] is None and never["loss_updates_per_min"] is None and never["stopping_s"] is None


@pytest.mark.skipif(missing() is not None, reason=f"no browser: {missing()}")
def test_the_page_is_timed_in_chromium():
    r = measure_pages(["deform"], torch.device("cpu"), 2.0, warm_up=False, log=lambda m: None)
    p = r["methods"]["deform"]
    assert "error" not in p, p
    assert p["preset"] == "Fast" and p["first_loss_s"] is not None and p["loss_updates_per_min"] is not None
    assert p["stopped_s"] is not None and p["stopping_s"] <= p["stopped_s"]
    assert p["files_after_stopped_s"] is not None  # the download list came
