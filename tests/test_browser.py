"""The real page in headless Chromium: Run updates the loss chart and the 3D view; Stop stops."""

from __future__ import annotations

import re

import pytest

from playwright.sync_api import expect

from conftest import SHOT_DIR


def iteration(text: str) -> int:
    m = re.search(r"iteration (\d+) /", text)
    return int(m.group(1)) if m else -1


def test_deform_runs_live_in_the_page(live_app, page):
    _, url = live_app
    page.goto(url)
    expect(page.locator("#scene-plot .js-plotly-plot")).to_be_visible(timeout=30_000)  # target preview
    page.locator("#run").click()
    status = page.locator("#status textarea")
    expect(status).to_have_value(re.compile(r"running · iteration ([5-9]|\d\d+) /"), timeout=60_000)
    # The loss chart has a line per term plus the total; the 3D view shows the deforming mesh.
    expect(page.locator("#loss-plot .scatterlayer .trace")).to_have_count(5, timeout=20_000)
    expect(page.locator("#scene-plot .js-plotly-plot")).to_be_visible()
    expect(page.locator("#scene-plot")).to_contain_text("iteration", timeout=20_000)
    SHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOT_DIR / "deform_running.png"), full_page=True)
    page.locator("#pause").click()
    expect(status).to_have_value(re.compile(r"^paused"), timeout=10_000)
    held = iteration(status.input_value())
    page.wait_for_timeout(800)
    assert iteration(status.input_value()) == held
    page.locator("#pause").click()  # resume
    expect(status).to_have_value(re.compile(r"^running"), timeout=10_000)
    page.locator("#stop").click()
    expect(status).to_have_value(re.compile(r"^stopped"), timeout=10_000)
    stopped_at = iteration(status.input_value())
    page.wait_for_timeout(1000)
    assert iteration(status.input_value()) == stopped_at


IMAGE_METHODS = ["textured_mesh", "volume", "nerf"]


@pytest.mark.parametrize("method", IMAGE_METHODS)
def test_image_method_runs_and_its_views_update(live_app, page, method):
    from recon.methods import METHODS

    _, url = live_app
    cls = METHODS[method][0]
    page.goto(url)
    expect(page.locator("#scene-plot .js-plotly-plot")).to_be_visible(timeout=30_000)
    page.locator("#method input").click()
    page.get_by_role("option", name=cls.title).click()
    expect(page.locator("#preset input")).to_have_value("Quick", timeout=10_000)  # the CPU preset
    page.locator("#run").click()
    status = page.locator("#status textarea")
    expect(status).to_have_value(re.compile(r"running · iteration [1-9]\d* /"), timeout=90_000)
    views = page.locator("#views img")
    expect(views).to_be_visible(timeout=60_000)
    first = views.get_attribute("src")
    page.wait_for_function("([el, s]) => el.getAttribute('src') !== s", arg=[views.element_handle(), first],
                           timeout=90_000)  # the render moved on
    expect(page.locator("#scene-plot")).to_contain_text("iteration")
    SHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOT_DIR / f"{method}_running.png"), full_page=True)
    page.locator("#stop").click()
    expect(status).to_have_value(re.compile(r"^stopped"), timeout=30_000)
