"""(c) The real page in headless Chromium: how soon Run shows something, how often the charts move,
and how soon Stop answers.

The app is launched in this process as ``python app.py`` does (its warm-up of the default targets'
views finished first, as it is a few seconds after the app starts), with one run slot. Each method
gets a fresh page at 1280x800; choosing the method selects its CPU preset, as for a user. The page
is read every 100 ms through plotly's own data on the chart elements: a chart "updates" when the
number of points or the last point of any of its lines changes.

Needs Python playwright and Debian's chromium (never ``playwright install``); without them this part
is skipped with a message saying so.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..methods import device_preset, get_method
from ..server import Server
from .common import ROOT

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

#: Installs a recorder in the page: every 20 ms it reads each chart (points, last x and y of each line,
#: from plotly's own data on the element) and the status's first word, and keeps each change with its
#: time in the page's clock. Recording in the page keeps the count independent of how long a round
#: trip to the browser takes on a loaded machine.
RECORDER = r"""() => {
  const read = (id) => {
    const el = document.querySelector(id + ' .js-plotly-plot');
    const lines = (el && el.data ? el.data : []).map(t => {
      const n = t.x ? t.x.length : 0;
      return [n, n ? t.x[n - 1] : null, n && t.y ? t.y[n - 1] : null];
    });
    return [JSON.stringify(lines), lines.reduce((sum, l) => sum + l[0], 0)];
  };
  const rec = {loss: [], quality: [], status: [], clicks: {}, files: null};
  const sample = () => {
    const now = performance.now();
    for (const [key, id] of [['loss', '#loss-plot'], ['quality', '#metrics-plot']]) {
      const [sig, points] = read(id), h = rec[key];
      if (!h.length || h[h.length - 1][1] !== sig) h.push([now, sig, points]);
    }
    const el = document.querySelector('#status textarea');
    const state = el ? el.value.split(' ')[0] : '';
    if (!rec.status.length || rec.status[rec.status.length - 1][1] !== state) rec.status.push([now, state]);
    const files = document.querySelector('#result-files');
    if (rec.files === null && files && /config\s*\.json/.test(files.innerText)) rec.files = now;
  };
  sample();
  rec.timer = setInterval(sample, 20);
  window.__bench = rec;
}"""

#: A click as the page's own keyboard shortcuts make it, its time recorded in the page's clock (Playwright's
#: click would first wait for the button to stop moving: the charts reflow the page while a run streams).
CLICK = "(id) => { window.__bench.clicks[id] = performance.now(); document.getElementById(id).click(); }"
#: (first loss point seen, current state, page ms since Run)
PROGRESS = """() => { const b = window.__bench, t0 = b.clicks.run;
  return [b.loss.some(e => e[0] >= t0 && e[2] > 0), b.status[b.status.length - 1][1], performance.now() - t0]; }"""
ENDED = ("done", "stopped", "error", "refused")


def missing() -> str | None:
    """Why the page cannot be measured here, or None when it can."""
    if not Path(CHROMIUM).exists():
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python playwright is not installed (pip install -r requirements-test.txt)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app(device: torch.device, warm_up: bool = True) -> tuple[Any, str, Server]:
    """The app in this process, as ``python app.py`` starts it, after its warm-up (the tests skip it:
    it renders every image method's views): (demo, url, server)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import app
    import page

    page.import_pytorch3d()
    server = Server(max_runs=1, device=device)
    if warm_up:
        page.warm_up(server)
    demo = app.build_demo(server=server)
    demo.queue(max_size=100, default_concurrency_limit=None)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.launch_options(demo))
    return demo, f"http://127.0.0.1:{port}/", server


def _wait_idle(server: Server, timeout: float = 300.0) -> None:
    """Until every session's run has ended (and been scored), so the next page starts on a free slot."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(wb.run is None or wb.run.wait_settled(0) for wb in list(server.sessions)):
            return
        time.sleep(0.2)


def figures(rec: dict[str, Any], window_s: float) -> dict[str, Any]:
    """The page's figures from the recorder's log (times in ms of the page's clock; seconds out):
    Run to the first loss and quality points, chart updates per minute over `window_s` seconds from
    the first loss point (or until Stop, if sooner), Stop to "stopping" and to "stopped", and "stopped"
    to the download list."""
    run, stop = rec["clicks"]["run"], rec["clicks"].get("stop")

    def first(key: str) -> float | None:
        return next((t for t, _, n in rec[key] if t >= run and n > 0), None)

    def since(t: float | None, origin: float | None) -> float | None:
        return None if t is None or origin is None else (t - origin) / 1000

    out: dict[str, Any] = dict(first_loss_s=since(first("loss"), run), first_quality_s=since(first("quality"), run))
    start = first("loss")
    end = min(start + 1000 * window_s, stop if stop is not None else rec["read_at"]) if start is not None else None
    out["window_s"] = since(end, start)
    for key in ("loss", "quality"):
        n = sum(start < t <= end for t, _, _ in rec[key]) if start is not None else 0
        out[f"{key}_updates"] = n
        out[f"{key}_updates_per_min"] = 60 * n / out["window_s"] if out["window_s"] else None
    after = [(t, state) for t, state in rec["status"] if stop is not None and t >= stop]
    out["stopping_s"] = since(next((t for t, s in after if s in ("stopping", "stopped")), None), stop)
    stopped = next((t for t, s in after if s == "stopped"), None)
    out["stopped_s"] = since(stopped, stop)
    out["files_after_stopped_s"] = since(rec.get("files"), stopped)  # "stopped" to the download list
    before = [state for t, state in rec["status"] if stop is None or t < stop]
    out["state_at_stop"] = before[-1] if before else None
    return out


def measure_page(pg: Any, url: str, method: str, device_type: str, window_s: float,
                 timeout_s: float = 180.0) -> dict[str, Any]:
    """Open the page, pick `method`, press Run, let the charts stream for `window_s` seconds after the
    first loss point, press Stop and wait for "stopped"; see :func:`figures`."""
    from playwright.sync_api import expect

    cls = get_method(method)
    preset = device_preset(method, device_type)
    pg.goto(url)
    expect(pg.locator("#scene-plot .js-plotly-plot")).to_be_visible(timeout=60_000)  # the target's preview
    if pg.locator("#method input").input_value() != cls.title:
        pg.locator("#method input").click()
        pg.get_by_role("option", name=cls.title).click()
    expect(pg.locator("#preset input")).to_have_value(preset, timeout=30_000)
    expect(pg.locator("#run")).to_be_enabled()
    pg.evaluate(RECORDER)
    pg.evaluate(CLICK, "run")
    seen, state, elapsed = False, "", 0.0
    while not seen and state not in ENDED and elapsed < 1000 * timeout_s:
        time.sleep(0.25)
        seen, state, elapsed = pg.evaluate(PROGRESS)
    if seen and state not in ENDED:
        time.sleep(window_s)
        pg.evaluate(CLICK, "stop")
        t1 = time.monotonic()
        while pg.evaluate(PROGRESS)[1] != "stopped" and time.monotonic() - t1 < timeout_s:
            time.sleep(0.25)
        while not pg.evaluate("() => window.__bench.files !== null") and time.monotonic() - t1 < timeout_s:
            time.sleep(0.25)
    rec = pg.evaluate("() => { clearInterval(window.__bench.timer); window.__bench.read_at = performance.now(); "
                      "return window.__bench; }")
    return dict(preset=preset, **figures(rec, window_s))


def measure_pages(methods: list[str], device: torch.device, window_s: float, *, warm_up: bool = True,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every method's page figures, or ``{"skipped": why}`` when no browser is available."""
    why = missing()
    if why:
        log(f"[page] skipped: {why}")
        return {"skipped": why}
    from playwright.sync_api import sync_playwright

    demo, url, server = launch_app(device, warm_up)
    results: dict[str, Any] = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for name in methods:
                    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
                    started = time.time()
                    try:
                        results[name] = measure_page(ctx.new_page(), url, name, device.type, window_s)
                    except Exception as exc:  # one method's failure must not lose the others' figures
                        results[name] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
                    finally:
                        ctx.close()
                        _wait_idle(server)
                    results[name]["started"] = started
                    log(f"[page] {name}: {results[name]}")
            finally:
                browser.close()
    finally:
        demo.close()
    return {"window_s": window_s, "methods": results}
