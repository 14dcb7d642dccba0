"""The real page in headless Chromium: Run updates the loss chart and the 3D view; Stop stops."""

from __future__ import annotations

import re

import pytest
from conftest import SHOT_DIR
from playwright.sync_api import expect


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


def no_horizontal_scroll(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, f"the page scrolls sideways at 1280x800 ({width}px wide)"


def test_workbench_live_edit_history_and_overlay_at_1280x800(live_app, page):
    _, url = live_app
    page.goto(url)
    expect(page.locator("#scene-plot .js-plotly-plot")).to_be_visible(timeout=30_000)
    no_horizontal_scroll(page)
    status = page.locator("#status textarea")
    page.keyboard.press("Alt+r")  # the Run shortcut
    expect(status).to_have_value(re.compile(r"running · iteration ([3-9]|\d\d+) /"), timeout=60_000)
    # settings that cannot change mid-run are locked; live ones are not
    expect(page.locator("#method input")).to_be_disabled(timeout=10_000)
    page.locator("button.label-wrap", has_text="Optimiser").first.click()  # a closed group mounts when opened
    expect(page.locator("#deform-momentum input[type=number]")).to_be_disabled(timeout=10_000)
    expect(page.locator("#deform-lr input")).to_be_enabled()
    weight = page.locator("#deform-chamfer-weight input[type=number]")
    expect(weight).to_be_enabled()
    weight.fill("3")
    weight.press("Tab")  # leaving the box releases the slider: a live edit
    expect(status).to_have_value(re.compile(r"live edits: Chamfer weight → 3 at iteration \d+"), timeout=20_000)
    expect(page.locator("#loss-plot")).to_contain_text("chamfer_weight=3", timeout=20_000)  # the chart marks it
    SHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOT_DIR / "workbench_running.png"), full_page=True)
    no_horizontal_scroll(page)
    page.keyboard.press("Alt+s")  # the Stop shortcut
    expect(status).to_have_value(re.compile(r"^stopped"), timeout=20_000)
    expect(page.locator("#deform-momentum input[type=number]")).to_be_enabled(timeout=20_000)  # unlocked
    table = page.locator("#history-table")
    expect(table).to_contain_text("chamfer 1→3", timeout=20_000)
    expect(page.locator("#result-files")).to_contain_text(re.compile(r"config\s*\.json"), timeout=90_000)  # downloads
    # a second run, with the first overlaid on its loss chart
    page.locator("#run").click()
    expect(status).to_have_value(re.compile(r"running · iteration ([3-9]|\d\d+) /"), timeout=60_000)
    page.locator("#overlay input").click()
    page.get_by_role("option", name="#1 deform · cow").click()
    expect(page.locator("#loss-plot")).to_contain_text("#1 total", timeout=20_000)
    page.locator("#stop").click()
    expect(status).to_have_value(re.compile(r"^stopped"), timeout=20_000)
    expect(page.locator("#history-gallery img")).to_have_count(2, timeout=20_000)  # a thumbnail per run
    expect(page.locator("#restore-run input")).to_have_value("#2 deform · cow")  # the newest run, ready to restore
    expect(page.locator("#loss-plot")).to_contain_text("#1 total")
    page.keyboard.press("Escape")
    page.wait_for_timeout(3000)  # the second run's export (its files replace the first's)
    page.screenshot(path=str(SHOT_DIR / "workbench_history.png"), full_page=True)
    no_horizontal_scroll(page)
