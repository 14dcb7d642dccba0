"""``python -m recon.bench``: measure (a) whole ``fit`` commands, (b) streamed runs and (c) the page,
for recon's default presets and the tutorial recipes, and write ``bench.json`` and ``bench.md``.

Order: for each method, (a) then (b) for each side (tutorial first), then (c) for every method in
one app. ``bench.json`` is written after every measurement, so a run cut short keeps what it has.
A partial run (``--skip-cli`` / ``--skip-streamed`` / ``--skip-page``, or ``--methods``) keeps the
other parts from the ``bench.json`` already in ``--out`` when it is of this format and mode.

``bench.json`` keeps, for each method's sides, the keys ``recon.cost.calibrate`` reads from it
(``config``, ``iterations``, ``s_per_iteration``: seconds of steps alone, and ``setup_s``), taken
from the streamed run, else from the fit (setup then 0: not measured).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from ..device import pick_device
from ..methods import METHODS
from . import browser, fit, streamed, summary
from .common import Budgets, LoadSampler, machine, quality_metric, sides

FORMAT = "recon-bench/2"
#: The three parts, as ``measured`` names them.
PARTS = ("fit", "streamed", "page")


def _log(msg: str) -> None:
    print(msg, flush=True)


def _calibration_keys(side: dict[str, Any]) -> dict[str, Any]:
    """What ``recon.cost.calibrate.quiet_factors`` reads of a side (see the module's docstring)."""
    st, fit = side.get("streamed"), side.get("fit")
    if st and "error" not in st:
        return dict(config=st["config"], iterations=st["iterations"], s_per_iteration=st["s_per_iteration"],
                    setup_s=st["setup_s"])
    if fit and fit.get("settings") and fit.get("s_per_iteration"):
        return dict(config=fit["settings"], iterations=fit["iterations"], s_per_iteration=fit["s_per_iteration"],
                    setup_s=0.0)
    return {}


def resummarise(result: dict[str, Any]) -> dict[str, Any]:
    """Recompute every method's summary from the recorded measurements."""
    at = result["budgets"]["quality_at_s"]
    for entry in result["methods"].values():
        entry["summary"] = summary.summarise(entry, at)
    return result


def _load(out: Path) -> dict[str, Any] | None:
    path = out / "bench.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return data if data.get("format") == FORMAT else None


def _save(result: dict[str, Any], out: Path) -> None:
    (out / "bench.json").write_text(json.dumps(resummarise(result), indent=1, default=float))


def _parser() -> argparse.ArgumentParser:
    methods = list(METHODS)
    ap = argparse.ArgumentParser(prog="python -m recon.bench", description=(
        "What a user waits for: whole `fit` commands, runs streamed as the page does, and the page in "
        "headless Chromium, for recon's default presets and the tutorial recipes."))
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: every budget / 10 (about 6 minutes a method on a 2-core CPU)")
    ap.add_argument("--cap", type=float, default=None, metavar="SECONDS",
                    help="stop each run after this many seconds of the user's time (default 600; 60 with --quick)")
    ap.add_argument("--methods", default=",".join(methods), help=f"comma-separated (default: all: {','.join(methods)})")
    ap.add_argument("--out", default="bench_results", help="folder for bench.json and bench.md (default bench_results)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: RECON_DEVICE, else automatic)")
    ap.add_argument("--skip-cli", action="store_true", help="skip (a), the whole `python -m recon fit` commands")
    ap.add_argument("--skip-streamed", action="store_true", help="skip (b), the runs streamed as the page does")
    ap.add_argument("--skip-page", action="store_true", help="skip (c), the page in headless Chromium")
    ap.add_argument("--resummarise", action="store_true",
                    help="rebuild bench.md from the bench.json in --out, measuring nothing")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.resummarise:
        result = _load(out)
        if result is None:
            ap.error(f"{out / 'bench.json'} is missing or was written by the old benchmark (steps alone): measure again")
        _write(resummarise(result), out)
        return 0
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    device = pick_device(args.device)
    budgets = Budgets.for_run(args.quick)
    if args.cap is not None:
        if args.cap < 30:
            ap.error("--cap must be at least 30 seconds")
        budgets = dataclasses.replace(budgets, tutorial_s=args.cap, recon_s=args.cap)
    out.mkdir(parents=True, exist_ok=True)
    partial = args.skip_cli or args.skip_streamed or args.skip_page or set(names) != set(METHODS)
    kept = _load(out) if partial else None
    result = kept if kept is not None and kept.get("quick") == args.quick else dict(
        format=FORMAT, quick=args.quick, budgets=budgets.as_dict(), methods={})
    before = (result.get("machine") or {}).get("date")
    result["machine"] = machine(device)
    # when each part was measured: a partial run keeps the others' dates (older files: the old run's date)
    measured = result.setdefault("measured", {part: before for part in PARTS} if before else {})
    for part, skipped in zip(PARTS, (args.skip_cli, args.skip_streamed, args.skip_page)):
        if not skipped:
            measured[part] = result["machine"]["date"]
    t_start = time.time()
    with LoadSampler() as load, tempfile.TemporaryDirectory(prefix="recon-bench-") as work:
        for name in names:
            key, higher = quality_metric(name)
            entry = result["methods"].setdefault(name, {})
            entry.update(method=name, metric=key, higher_is_better=higher)
            for role, preset in sides(name, device.type):
                side = entry.setdefault(role, {})
                if side.get("preset") != preset:
                    side.clear()
                side["preset"] = preset
                if not args.skip_cli:
                    side["fit"] = _guarded(fit.fit_run, name, preset, Path(work), budgets.cap(role), device, key, log=_log)
                    side["fit"]["load"] = load.between(side["fit"]["started"])
                    _save_side(side, result, out)
                if not args.skip_streamed:
                    side["streamed"] = _guarded(streamed.streamed_run, name, preset, device, budgets.cap(role),
                                                score_every_s=budgets.score_every_s,
                                                quality_at_s=budgets.quality_at_s, log=_log)
                    side["streamed"]["load"] = load.between(side["streamed"]["started"])
                    _save_side(side, result, out)
        if not args.skip_page:
            page = _guarded(browser.measure_pages, names, device, budgets.page_window_s, log=_log)
            if "error" in page:
                page = {"skipped": f"it failed: {page['error']}"}
            for name, p in page.get("methods", {}).items():
                p["load"] = load.between(p.pop("started", t_start))
            if "skipped" in page or not result.get("page") or "skipped" in result["page"]:
                result["page"] = page
            else:
                result["page"]["methods"].update(page["methods"])
                result["page"]["window_s"] = page["window_s"]
        result["load"] = load.between(t_start)
    result["elapsed_s"] = time.time() - t_start
    _write(resummarise(result), out)
    return 0


def _guarded(measure: Callable[..., dict[str, Any]], *args: Any, **kw: Any) -> dict[str, Any]:
    """One measurement; a failure is recorded (and printed) instead of ending a benchmark of hours."""
    started = time.time()
    try:
        return measure(*args, **kw)
    except Exception as exc:
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0], "started": started}


def _save_side(side: dict[str, Any], result: dict[str, Any], out: Path) -> None:
    side.update(_calibration_keys(side))
    _save(result, out)


def _write(result: dict[str, Any], out: Path) -> None:
    _save(result, out)
    md = summary.markdown(result)
    (out / "bench.md").write_text(md)
    print(md)
