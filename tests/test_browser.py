"""The real page in headless Chromium, used as a person would: choose, Run, watch the charts move,
Pause, Stop, look at the result. Screenshots land in $SHOT_DIR."""

from __future__ import annotations

import io
import re
import time
import zipfile

import numpy as np
import pytest
from conftest import ROOT, SHOT_DIR
from PIL import Image
from playwright.sync_api import expect

from recon.methods import METHODS


def iteration(text: str) -> int:
    m = re.search(r"iteration (\d+) /", text)
    return int(m.group(1)) if m else -1


def points(page, elem_id: str) -> int:
    """Points of the first trace drawn in a plotly chart (0 before any)."""
    return page.evaluate(f"""() => {{
        const el = document.querySelector('#{elem_id} .js-plotly-plot');
        return el && el.data && el.data.length ? el.data[0].x.length : 0; }}""")


def model3d_pixels(page, elem_id: str = "result-3d", timeout_ms: int = 60_000, min_pixels: int = 500) -> int:
    """Non-background pixels drawn in the Model3D canvas. Scrolled into view first: gradio's Babylon
    viewer suspends rendering off screen; WebGL readback is blank, so this reads a screenshot."""
    canvas = page.locator(f"#{elem_id} canvas").first
    canvas.wait_for(state="visible", timeout=timeout_ms)
    canvas.scroll_into_view_if_needed()
    hide = (f"#{elem_id} [data-testid=block-label], #{elem_id} .icon-button-wrapper, "
            f"#{elem_id} [data-testid=status-tracker] {{ visibility: hidden !important; }}")
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        img = np.asarray(Image.open(io.BytesIO(canvas.screenshot(style=hide))).convert("RGB")).astype(np.int16)
        colours, counts = np.unique(img.reshape(-1, 3), axis=0, return_counts=True)
        n = int((np.abs(img - colours[counts.argmax()]).sum(-1) > 30).sum())
        if n >= min_pixels or time.monotonic() > deadline:
            return n
        page.wait_for_timeout(250)


def choose_method(page, name: str) -> None:
    page.locator("#method input").click()
    page.get_by_role("option", name=METHODS[name][0].title).click()
    expect(page.locator("#preset input")).to_have_value(METHODS[name][0].device_presets["cpu"], timeout=10_000)


def stop_and_time_it(page) -> float:
    """Press Stop; seconds, in the page's own clock, from the click being handled to the status saying
    so ("stopping ..." or "stopped"), as the benchmark times it: a click a software-WebGL browser
    queues behind its own drawing is the test machine's delay, not the app's."""
    status = page.locator("#status textarea")
    page.evaluate("() => { window.__stopAt = performance.now(); document.getElementById('stop').click(); }")
    seconds = page.wait_for_function(
        "el => /^(stopping|stopped)/.test(el.value) && (performance.now() - window.__stopAt) / 1000",
        arg=status.element_handle(), polling=20, timeout=10_000)
    return float(seconds.json_value())


def shoot(page, name: str) -> None:
    SHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOT_DIR / f"{name}.png"), full_page=True)


def test_deform_runs_live_pauses_stops_and_shows_its_result(live_app, page):
    _, url = live_app
    page.goto(url)
    expect(page.locator("#scene-plot .js-plotly-plot")).to_be_visible(timeout=30_000)  # the target's preview
    expect(page.locator("#estimate")).to_contain_text("Estimate: about", timeout=30_000)
    page.locator("#run").click()
    status = page.locator("#status textarea")
    expect(status).to_have_value(re.compile(r"running · iteration ([5-9]|\d\d+) /"), timeout=60_000)
    expect(page.locator("#loss-plot .scatterlayer .trace")).to_have_count(5, timeout=20_000)  # 4 terms + total
    expect(page.locator("#scene-plot")).to_contain_text("iteration", timeout=20_000)
    deadline = time.monotonic() + 40
    while points(page, "metrics-plot") < 3:  # the quality chart keeps getting points
        assert time.monotonic() < deadline, "fewer than 3 quality points in 40 s"
        page.wait_for_timeout(200)
    # the 3D view is redrawn in place (one plot, one WebGL context), not mounted anew for every
    # update; it is not redrawn while the user drags it, and the user's view survives the updates
    scene = page.locator("#scene-plot .js-plotly-plot")
    scene.scroll_into_view_if_needed()
    scene.evaluate("el => { el.__first = true; }")
    title = page.locator("#scene-plot .gtitle")
    before = title.text_content()
    box = scene.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 150, y + 40, steps=10)
    page.wait_for_timeout(3_500)  # newer scenes arrive meanwhile (one every 2.5 s at most)
    assert title.text_content() == before, "the view was redrawn under the user's drag"
    page.mouse.up()
    eye = "el => el._fullLayout.scene._scene.getCamera().eye"
    turned = scene.evaluate(eye)
    assert abs(turned["x"] - 1.2) > 0.2, f"the drag did not turn the view: {turned}"
    page.wait_for_function("t => { const el = document.querySelector('#scene-plot .gtitle'); "
                           "return el && el.textContent !== t; }", arg=before, timeout=20_000)
    assert scene.evaluate("el => el.__first === true")
    assert scene.evaluate(eye) == pytest.approx(turned, abs=1e-6)
    shoot(page, "deform_running")
    page.locator("#pause").click()
    expect(status).to_have_value(re.compile(r"^(pausing|paused)"), timeout=2_000)
    expect(status).to_have_value(re.compile(r"^paused"), timeout=10_000)
    held = iteration(status.input_value())
    page.wait_for_timeout(800)
    assert iteration(status.input_value()) == held
    page.locator("#pause").click()  # resume
    expect(status).to_have_value(re.compile(r"^running"), timeout=10_000)
    assert stop_and_time_it(page) < 1.0
    expect(status).to_have_value(re.compile(r"^stopped"), timeout=20_000)
    stopped_at = iteration(status.input_value())
    page.wait_for_timeout(1000)
    assert iteration(status.input_value()) == stopped_at
    expect(page.locator("#result-files")).to_contain_text(re.compile(r"config\s*\.json"), timeout=60_000)
    assert model3d_pixels(page) > 2000, "the Result viewer is blank"
    shoot(page, "deform_result")


IMAGE_METHODS = [m for m, (cls, _) in METHODS.items() if cls.fits_images]


@pytest.mark.parametrize("method", IMAGE_METHODS)
def test_image_method_default_run_in_the_page(live_app, page, method):
    _, url = live_app
    page.goto(url)
    expect(page.locator("#scene-plot .js-plotly-plot")).to_be_visible(timeout=30_000)
    choose_method(page, method)
    page.locator("#run").click()
    started = time.monotonic()
    status = page.locator("#status textarea")
    expect(status).to_have_value(re.compile(r"running · iteration [1-9]\d* /"), timeout=90_000)
    views = page.locator("#views img")
    expect(views).to_be_visible(timeout=60_000)
    while points(page, "metrics-plot") < 3:  # the held-out chart: at least 3 points in the first 40 s
        assert time.monotonic() - started < 40, f"{points(page, 'metrics-plot')} quality points after 40 s"
        page.wait_for_timeout(200)
    first = views.get_attribute("src")
    page.wait_for_function("([el, s]) => el.getAttribute('src') !== s", arg=[views.element_handle(), first],
                           timeout=90_000)  # the render moved on
    expect(page.locator("#scene-plot")).to_contain_text("iteration")
    shoot(page, f"{method}_running")
    assert stop_and_time_it(page) < 1.0
    expect(status).to_have_value(re.compile(r"^stopped"), timeout=60_000)
    expect(page.locator("#result-files")).to_contain_text(re.compile(r"config\s*\.json"), timeout=90_000)
    assert model3d_pixels(page) > 2000, "the Result viewer is blank"
    shoot(page, f"{method}_result")


def test_a_dataset_zip_upload_fits_with_nerf(live_app, page, tmp_path):
    _, url = live_app
    zipped = tmp_path / "cow_views.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for p in (ROOT / "assets" / "cow_views").rglob("*"):
            if p.is_file():
                zf.write(p, p.relative_to(ROOT / "assets" / "cow_views"))
    page.goto(url)
    expect(page.locator("#scene-plot .js-plotly-plot")).to_be_visible(timeout=30_000)
    page.get_by_text("Upload your own mesh or images").click()
    page.locator("#upload-zip input[type=file]").set_input_files(str(zipped))
    expect(page.locator("#target input")).to_have_value("uploaded dataset", timeout=30_000)
    expect(page.locator("#target-msg")).to_contain_text("40 training and 8 held-out views", timeout=10_000)
    choose_method(page, "nerf")
    page.locator("#run").click()
    status = page.locator("#status textarea")
    expect(status).to_have_value(re.compile(r"running · iteration [1-9]\d* /"), timeout=90_000)
    deadline = time.monotonic() + 90
    while True:
        ys = page.evaluate("""() => { const el = document.querySelector('#metrics-plot .js-plotly-plot');
                                      return el && el.data && el.data.length ? el.data[0].y : []; }""")
        if len(ys) >= 4 and ys[-1] > ys[0] + 1.0:  # held-out PSNR rises
            break
        assert time.monotonic() < deadline, ys
        page.wait_for_timeout(500)
    shoot(page, "nerf_dataset_running")
    page.locator("#stop").click()
    expect(status).to_have_value(re.compile(r"^stopped"), timeout=60_000)


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
    shoot(page, "workbench_running")
    no_horizontal_scroll(page)
    page.keyboard.press("Alt+s")  # the Stop shortcut
    expect(status).to_have_value(re.compile(r"^stopped"), timeout=20_000)
    expect(page.locator("#deform-momentum input[type=number]")).to_be_enabled(timeout=20_000)  # unlocked
    table = page.locator("#history-table")
    expect(table).to_contain_text("chamfer 1→3", timeout=20_000)
    expect(page.locator("#result-files")).to_contain_text(re.compile(r"config\s*\.json"), timeout=90_000)
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
    shoot(page, "workbench_history")
    no_horizontal_scroll(page)
