"""Shared fixtures: an in-process app server, a gradio client helper and a headless browser.

Browser tests need Debian's `chromium` (never `playwright install`). Without it they are skipped,
unless RECON_REQUIRE_BROWSER=1 (as in .ci/run), which turns a missing browser into a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("RECON_DEVICE", "cpu")

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOT_DIR = Path(os.environ.get("SHOT_DIR", ROOT / "screenshots"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(max_runs: int = 4):
    """Build and launch the real app in-process; returns (demo, url)."""
    import app

    demo = app.build_demo(max_runs=max_runs)
    demo.queue(max_size=64, default_concurrency_limit=None)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def live_app():
    demo, url = launch()
    yield demo, url
    demo.close()


def run_args(method: str, target: str = "cow", **overrides) -> list:
    """Positional arguments of the /run endpoint: method, target, then every knob of every method
    in the page's order, defaults except `overrides` (which apply to `method`'s knobs)."""
    import app
    from recon.methods import METHODS
    from recon.params import knobs

    args: list = [method, target]
    for name, (cls, _) in METHODS.items():
        for k in app._grouped(knobs(cls.Config)):
            args.append(overrides.get(k.name, k.default) if name == method else k.default)
    unknown = set(overrides) - {k.name for k in knobs(METHODS[method][0].Config)}
    assert not unknown, f"not knobs of {method}: {unknown}"
    return args


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        if os.environ.get("RECON_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RECON_REQUIRE_BROWSER=1 but no chromium at {CHROMIUM}")
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("RECON_REQUIRE_BROWSER") == "1":
            raise
        pytest.skip("playwright is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = ctx.new_page()
    yield pg
    ctx.close()
