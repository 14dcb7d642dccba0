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
    """Build and launch the real app in-process, as `python app.py` does; returns (demo, url)."""
    import app

    demo = app.build_demo(max_runs=max_runs)
    demo.queue(max_size=100, default_concurrency_limit=None)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.launch_options(demo))
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def live_app():
    demo, url = launch()
    yield demo, url
    demo.close()
    demo.recon_server.shutdown()  # no run's worker may still be inside torch when the tests end


def config_json(method: str = "deform", target: str = "cow", **settings) -> str:
    """The config JSON of the public API (what the page downloads): a method's CPU preset plus `settings`."""
    import json

    from recon.methods import preset_values

    return json.dumps({"format": "recon-config", "method": method, "target": target,
                       "settings": {**preset_values(method), **settings}})


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
