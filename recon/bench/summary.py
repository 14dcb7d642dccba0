"""The benchmark's bookkeeping: the user's clock, time to quality, the summary row and the report.

Everything here is plain arithmetic on the recorded measurements, so ``--resummarise`` can rebuild
the report from ``bench.json`` without measuring, and the tests can check it without running.
"""

from __future__ import annotations

from typing import Any

#: The benchmark issue's target: recon's default reaches the tutorial's quality at least this much sooner.
TARGET_SPEEDUP = 3.0


# --- the user's clock ------------------------------------------------------------------------------


def own_eval_seconds(evals: list[dict[str, Any]], until: float) -> float:
    """Seconds the benchmark's own full evaluations took before `until` (perf_counter); one still
    under way (``seconds`` None) counts up to `until`. The runner's final score is not among them."""
    total = 0.0
    for e in evals:
        if e["bench"] and e["start"] < until:
            spent = until - e["start"] if e["seconds"] is None else e["seconds"]
            total += min(spent, until - e["start"])
    return total


def score_rows(evals: list[dict[str, Any]], t0: float) -> list[dict[str, Any]]:
    """One row per full score: ``at_s``, the user's seconds since Run when the scored model existed
    (the start of its evaluation, less the benchmark's evaluations before it); ``wall_s``, the wall
    clock when the score appeared; ``eval_s``; ``bench``; ``final`` (the runner's score at the end)."""
    return [dict(iteration=e["iteration"], at_s=e["start"] - t0 - own_eval_seconds(evals, e["start"]),
                 wall_s=e["start"] + (e["seconds"] or 0.0) - t0, eval_s=e["seconds"], bench=e["bench"],
                 final=not e["bench"], scores=e["scores"])
            for e in evals if e["scores"]]


def better_or_equal(value: float, target: float, higher_is_better: bool) -> bool:
    return value >= target if higher_is_better else value <= target


def time_to_quality(rows: list[dict[str, Any]], key: str, target: float, higher_is_better: bool) -> float | None:
    """The user's seconds to the first full score at or better than `target`, after at least one step
    (a tutorial that ends no better than it started is passed at recon's first score); None: not reached."""
    for r in rows:
        value = r["scores"].get(key)
        if r["iteration"] > 0 and value is not None and better_or_equal(value, target, higher_is_better):
            return r["at_s"]
    return None


def quality_at(rows: list[dict[str, Any]], key: str, seconds: float) -> float | None:
    """The full score at the first row at or after `seconds` of the user's time; a run that ended
    sooner has its final score then. None without any score."""
    scored = [r for r in rows if key in r["scores"]]
    after = [r for r in scored if r["at_s"] >= seconds]
    return (after[0] if after else scored[-1])["scores"][key] if scored else None


def final_row(rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The run's last full score: what the user ends with."""
    scored = [r for r in rows if key in r["scores"]]
    return scored[-1] if scored else None


# --- the summary of one method -------------------------------------------------------------------


def summarise(entry: dict[str, Any], quality_at_s: float) -> dict[str, Any]:
    """The headline figures of one method from its measurements (missing parts give None)."""
    key, higher = entry["metric"], entry["higher_is_better"]
    tut, rec = entry.get("tutorial") or {}, entry.get("recon") or {}
    s: dict[str, Any] = dict(method=entry["method"], metric=key, higher_is_better=higher,
                             tutorial_preset=tut.get("preset"), recon_preset=rec.get("preset"))
    for role, side in (("tutorial", tut), ("recon", rec)):
        fit = side.get("fit") or {}
        s[f"{role}_fit_s"] = fit.get("wall_s")
        s[f"{role}_fit_score"] = (fit.get("final_score") or {}).get(key)
        s[f"{role}_fit_capped"] = fit.get("interrupted_s") is not None
        s[f"{role}_fit_ok"] = fit.get("exit_code") == 0 if fit else None
        rows = (side.get("streamed") or {}).get("rows") or []
        s[f"{role}_at_quality_s"] = quality_at(rows, key, quality_at_s)
        s[f"{role}_s_per_it"] = (side.get("streamed") or fit or {}).get("s_per_iteration")
        s[f"{role}_streamed_capped"] = bool((side.get("streamed") or {}).get("capped"))
    tut_final = final_row((tut.get("streamed") or {}).get("rows") or [], key)
    s["tutorial_quality"] = tut_final["scores"][key] if tut_final else None
    s["tutorial_time_s"] = tut_final["at_s"] if tut_final else None
    rec_rows = (rec.get("streamed") or {}).get("rows") or []
    s["recon_time_s"] = (time_to_quality(rec_rows, key, s["tutorial_quality"], higher)
                         if s["tutorial_quality"] is not None and rec_rows else None)
    s["speedup"] = (s["tutorial_time_s"] / s["recon_time_s"]
                    if s["recon_time_s"] and s["tutorial_time_s"] is not None else None)
    s["meets_target"] = None if not tut_final or not rec_rows else bool(s["speedup"] and s["speedup"] >= TARGET_SPEEDUP)
    # The whole commands compare only when recon's ran to its end and is at least as good as the tutorial's.
    t_score, r_score = s["tutorial_fit_score"], s["recon_fit_score"]
    s["fit_speedup"] = (s["tutorial_fit_s"] / s["recon_fit_s"]
                        if None not in (t_score, r_score, s["tutorial_fit_s"], s["recon_fit_s"])
                        and not s["recon_fit_capped"] and better_or_equal(r_score, t_score, higher) else None)
    return s


# --- the report ----------------------------------------------------------------------------------


def _n(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} s" if v >= 10 else f"{v:.1f} s"


def _verdict(s: dict[str, Any], tutorial_s: float) -> str:
    m = s["method"]
    if s["tutorial_preset"] is None:
        return f"- **{m}**: no tutorial recipe; only recon's default ({s['recon_preset']}) is measured."
    if s["meets_target"] is None:
        return f"- **{m}**: not compared (a side was not measured or was not scored)."
    if s["recon_time_s"] is None:
        line = (f"- **{m}**: recon's {s['recon_preset']} never reached the tutorial's {_n(s['tutorial_quality'])}: "
                f"**misses the {TARGET_SPEEDUP:.0f}x target**.")
    else:
        word = "meets" if s["meets_target"] else "**misses**"
        line = (f"- **{m}**: {s['speedup']:.1f}x sooner end to end through the page ({_secs(s['recon_time_s'])} "
                f"against the tutorial's {_secs(s['tutorial_time_s'])}): {word} the {TARGET_SPEEDUP:.0f}x target.")
    if s["tutorial_streamed_capped"]:
        line += f" The tutorial was stopped at {tutorial_s:.0f} s, so its side is the quality it has by then."
    if s["fit_speedup"] is not None:
        line += f" Whole `fit` commands: {s['fit_speedup']:.1f}x sooner, to a result at least as good."
    elif s["recon_fit_capped"]:
        line += " Whole `fit` commands: recon's was stopped at its cap too, so they do not compare."
    elif s["recon_fit_score"] is not None and s["tutorial_fit_score"] is not None:
        line += " Whole `fit` commands: recon's default ends below the tutorial's score."
    return line


def _when(result: dict[str, Any]) -> str:
    """When it was measured: one date, or each part's when a partial rerun kept the others."""
    dates = result.get("measured") or {}
    if len(set(dates.values())) <= 1:
        return f"of {result['machine']['date']}"
    names = {"fit": "whole fits", "streamed": "streamed runs", "page": "the page"}
    return "measured in parts (" + ", ".join(f"{names.get(k, k)} {v}" for k, v in dates.items()) + ")"


def markdown(result: dict[str, Any]) -> str:
    """The report: machine, headline table with verdicts, the page's figures, and the details."""
    m, b = result["machine"], result["budgets"]
    load = result.get("load") or {}
    at = f"{b['quality_at_s']:.0f} s"
    lines = [
        "# recon benchmark: what a user waits for", "",
        f"{'Quick smoke run (every budget / 10)' if result['quick'] else 'Full run'} {_when(result)} on "
        f"{m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), "
        f"{_n(m.get('memory_gb'), 3)} GB, device {m['device']}; torch {m['torch']}, PyTorch3D {m['pytorch3d']}, "
        f"Python {m['python']}. Load average (1 min) during the last run: "
        + (f"{load['min']:.1f} to {load['max']:.1f}, mean {load['mean']:.1f}." if load else "not available."),
        "",
        f"Tutorial recipes are stopped at {b['tutorial_s']:.0f} s, recon's defaults at {b['recon_s']:.0f} s (a cap "
        f"only). **fit**: `python -m recon fit` from process start to exit (every file written; Ctrl-C at the cap). "
        f"**streamed**: a run through the page's controller with streaming, live evaluation and timelapse, scored "
        f"by the full evaluation at least every {b['score_every_s']:.0f} s; times are the user's (the benchmark's own "
        f"evaluations taken out). *x sooner* = the tutorial's streamed time to its final score / recon's streamed "
        f"time to that score.", "",
        f"| method (metric) | tutorial: whole fit (final score) | recon default: whole fit (final score) "
        f"| streamed: tutorial to its final score | streamed: recon to that score | x sooner "
        f"| at {at}: tutorial / recon | step-only s/it: tutorial / recon |",
        "|---|---|---|---|---|---:|---|---|",
    ]
    summaries = [e["summary"] for e in result["methods"].values() if "summary" in e]
    for s in summaries:
        def fit(role: str) -> str:
            if s[f"{role}_fit_s"] is None:
                return "-"
            notes = [w for w, on in (("stopped at the cap", s[f"{role}_fit_capped"]), ("failed", not s[f"{role}_fit_ok"]))
                     if on]
            return (f"{s[f'{role}_preset']}: {_secs(s[f'{role}_fit_s'])} → {_n(s[f'{role}_fit_score'])}"
                    + (f" ({', '.join(notes)})" if notes else ""))
        tutorial_streamed = ("-" if s["tutorial_time_s"] is None
                             else f"{_secs(s['tutorial_time_s'])} ({_n(s['tutorial_quality'])})")
        recon_streamed = ("not reached" if s["recon_time_s"] is None and s["meets_target"] is not None
                          else _secs(s["recon_time_s"]))
        speed = "-" if s["speedup"] is None else f"{s['speedup']:.1f}x"
        lines.append(f"| {s['method']} ({s['metric']}) | {fit('tutorial')} | {fit('recon')} "
                     f"| {tutorial_streamed} | {recon_streamed} | {speed} "
                     f"| {_n(s['tutorial_at_quality_s'])} / {_n(s['recon_at_quality_s'])} "
                     f"| {_n(s['tutorial_s_per_it'], 3)} / {_n(s['recon_s_per_it'], 3)} |")
    lines += ["", f"Against the benchmark issue's target ({TARGET_SPEEDUP:.0f}x sooner than the tutorial recipe, end "
                  "to end):", ""]
    lines += [_verdict(s, b["tutorial_s"]) for s in summaries]
    lines += _page_table(result)
    lines += _details(result)
    return "\n".join(lines) + "\n"


def _page_table(result: dict[str, Any]) -> list[str]:
    page = result.get("page")
    if not page:
        return []
    if "skipped" in page:
        return ["", f"The page in headless Chromium: not measured ({page['skipped']})."]
    lines = ["", f"## The page in headless Chromium (1280x800, each method's CPU preset, counted over "
                 f"{page.get('window_s', 0):.0f} s)", "",
             "| method (preset) | Run to first loss point | Run to first quality point | loss chart updates/min "
             "| quality chart updates/min | Stop to \"stopping\" | Stop to \"stopped\" | \"stopped\" to the download list |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, p in page.get("methods", {}).items():
        if "error" in p:
            lines.append(f"| {name} | error: {p['error'][:80]} | | | | | | |")
            continue
        lines.append(f"| {name} ({p['preset']}) | {_secs(p['first_loss_s'])} | {_secs(p['first_quality_s'])} "
                     f"| {_n(p['loss_updates_per_min'], 3)} | {_n(p['quality_updates_per_min'], 3)} "
                     f"| {_n(p['stopping_s'], 2)} s | {_n(p['stopped_s'], 3)} s "
                     f"| {_n(p.get('files_after_stopped_s'), 3)} s |")
    return lines


def _details(result: dict[str, Any]) -> list[str]:
    lines = ["", "## Details", "", "| method | preset | fit: exit, seconds to exit / last file, files, peak RSS "
             "| streamed: state, iterations, setup, user / wall s, own scores (s) | streamed peak RSS (growth) | load |",
             "|---|---|---|---|---|---|"]
    for name, e in result["methods"].items():
        for role in ("tutorial", "recon"):
            side = e.get(role)
            if not side:
                continue
            f, st = side.get("fit") or {}, side.get("streamed") or {}
            fit = ("-" if not f else f"error: {f['error'][:60]}" if "error" in f else
                   f"{f['exit_code']}, {_n(f.get('wall_s'))} / {_n(f.get('last_file_s'))}, "
                   f"{len(f.get('files') or {})}, {_n(f.get('peak_rss_gb'), 3)} GB")
            if "error" in st:
                stream, mem = f"error: {st['error'][:60]}", "-"
            elif "state" in st:
                stream = (f"{st['state']}{' (capped)' if st.get('capped') else ''}, {st['iterations']} / {st['total']}, "
                          f"{st['setup_s']:.1f} s, {st['user_s']:.0f} / {st['wall_s']:.0f}, "
                          f"{st['bench_evals']} ({st['bench_eval_s']:.1f})")
                mem = f"{st['peak_rss_gb']:.2f} GB ({st['rss_growth_gb']:.2f})"
            else:
                stream = mem = "-"
            loads = [x["load"]["mean"] for x in (f, st) if x.get("load")]
            lines.append(f"| {name} | {side['preset']} | {fit} | {stream} | {mem} | "
                         f"{' / '.join(f'{v:.1f}' for v in loads) or '-'} |")
    return lines
