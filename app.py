"""recon: the Gradio page, a thin binding over :class:`recon.workbench.Workbench`.

This file holds the layout, the knob-to-component code, and a flat list of bindings from page
events to the session's workbench. Each session's workbench lives in a ``gr.State`` that Gradio
releases after ``RECON_SESSION_TTL`` seconds without activity (and ``demo.unload`` when the tab
closes). ``build_demo()`` builds the page without doing any work, so tests can import this module
and launch it in-process. The public API is two endpoints, ``/fit`` and ``/estimate`` (see
:mod:`recon.api`); every other handler is private to the page (:mod:`recon.gate`).
"""

# No `from __future__ import annotations` here: Gradio finds the `request: gr.Request` parameters by
# resolving annotations, and string annotations naming the locally imported `gr` cannot be resolved.
import atexit
import os
import threading
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

import page
from liveplot import live_plot, serve_plotly_js
from recon import vis
from recon.assets import MAX_FACES
from recon.datasets import MAX_ZIP_BYTES
from recon.gate import PageOnly
from recon.history import HEADERS as HISTORY_HEADERS
from recon.methods import device_preset, get_method, preset_values
from recon.params import Knob
from recon.server import Server
from recon.targets import TargetChoice
from recon.uploads import MAX_UPLOAD_BYTES, UPLOAD_EXTENSIONS

LIVE_MARK = "⚡ live · "
METHOD_NAMES, KNOBS = page.METHOD_NAMES, page.KNOBS


def knob_component(method: str, k: Knob, value: Any):
    eid = f"{method}-{k.name}".replace("_", "-")
    common = dict(label=k.label, info=(LIVE_MARK if k.live else "") + k.help, elem_id=eid, interactive=True)
    if k.kind == "bool":
        return gr.Checkbox(value=value, **common)
    if k.kind == "choice":
        return gr.Dropdown(choices=list(k.choices), value=value, **common)
    if k.log:
        return gr.Number(value=value, minimum=k.lo, maximum=k.hi, step=k.step, **common)
    return gr.Slider(minimum=k.lo, maximum=k.hi, step=k.step, value=value, precision=0 if k.kind == "int" else None,
                     **common)


def controls(server: Server) -> dict[str, Any]:
    """The left column: method, target, uploads, run buttons, presets and every method's knobs."""
    c: dict[str, Any] = {}
    first = METHOD_NAMES[0]
    c["method"] = gr.Dropdown(choices=[(get_method(m).title, m) for m in METHOD_NAMES], value=first, label="Method",
                              elem_id="method")
    with gr.Accordion("About this method", open=False):
        c["method_md"] = gr.Markdown(page.method_intro(first), elem_id="method-info")
    c["target"] = gr.Dropdown(choices=TargetChoice.names(), value="cow", label="Target", elem_id="target")
    c["target_msg"] = gr.Markdown("", elem_id="target-msg")
    with gr.Accordion("Upload your own mesh or images", open=False):
        c["upload"] = gr.File(label=f"Mesh ({', '.join(UPLOAD_EXTENSIONS)}; at most {MAX_UPLOAD_BYTES // 2**20} MB, "
                                    f"{MAX_FACES:,} faces; more are simplified)",
                              file_types=list(UPLOAD_EXTENSIONS), elem_id="upload", height=90)
        c["upload_zip"] = gr.File(label=f"Multi-view images: a .zip in the NeRF-synthetic layout (transforms_*.json "
                                        f"+ RGBA PNGs; at most {MAX_ZIP_BYTES // 2**20} MB)",
                                  file_types=[".zip"], elem_id="upload-zip", height=90)
    with gr.Accordion("Load a saved config", open=False):
        c["config_upload"] = gr.File(label="Config .json (from Downloads or `python -m recon fit`)",
                                     file_types=[".json"], elem_id="config-upload", height=90)
    c["config_msg"] = gr.Markdown("", elem_id="config-msg")
    with gr.Row():
        c["run"] = gr.Button("Run", variant="primary", elem_id="run")
        c["pause"] = gr.Button("Pause", elem_id="pause")
        c["stop"] = gr.Button("Stop", variant="stop", elem_id="stop")
    c["estimate"] = gr.Markdown("", elem_id="estimate")
    gr.Markdown("Keys: **Alt+R** run · **Alt+P** pause/resume · **Alt+S** stop. While a run goes, ⚡ settings apply "
                "from its next step; the others are locked.", elem_id="keys-hint")
    with gr.Row():
        c["preset"] = gr.Dropdown(choices=page.preset_choices(first), value=device_preset(first, server.device.type),
                                  label="Preset", elem_id="preset", scale=3, info="Sets the sliders; you can still move them.")
        c["reset"] = gr.Button("Reset to defaults", elem_id="reset", scale=1, size="sm")
    c["knobs"], c["columns"] = {}, []
    for m in METHOD_NAMES:
        start = preset_values(m, device_type=server.device.type)
        with gr.Column(visible=(m == first)) as col:
            comps = []
            for gi, group in enumerate(dict.fromkeys(k.group for k in KNOBS[m])):
                with gr.Accordion(group, open=gi == 0):
                    comps += [knob_component(m, k, start[k.name]) for k in KNOBS[m] if k.group == group]
        c["knobs"][m] = comps
        c["columns"].append(col)
    return c


def results() -> dict[str, Any]:
    """The right column: status, charts, the 3D view and rendered views, history and downloads."""
    c: dict[str, Any] = {}
    c["status"] = gr.Textbox(label="Status", value="idle · press Run", lines=3, max_lines=5, interactive=False,
                             elem_id="status")
    with gr.Row():
        c["loss"] = live_plot(vis.loss_figure([]), label="Loss", elem_id="loss-plot")
        with gr.Column():
            c["metrics"] = live_plot(vis.metrics_figure([], {}), label="Held-out quality", elem_id="metrics-plot")
            c["score"] = gr.Button("Full score now", elem_id="score", size="sm")
    with gr.Row():
        with gr.Column(scale=3, min_width=320):
            c["scene"] = live_plot(label="3D view", elem_id="scene-plot")
        c["views"] = gr.Image(label="target | current render (top), silhouettes (bottom)", elem_id="views",
                              visible=False, interactive=False, scale=2, height=440, buttons=["download", "fullscreen"])
    c["turntable"] = gr.Image(label="Turntable of the result", elem_id="turntable", type="filepath", visible=False,
                              interactive=False, height=320)
    with gr.Accordion("Run history", open=True, elem_id="history"):
        c["table"] = gr.Dataframe(headers=HISTORY_HEADERS, value=None, interactive=False, wrap=True,
                                  elem_id="history-table", max_height=260, show_label=False,
                                  column_widths=["4%", "10%", "10%", "33%", "10%", "10%", "14%", "9%"])
        c["gallery"] = gr.Gallery(label="Final state of each run (newest first)", columns=8, height=120,
                                  allow_preview=False, object_fit="contain", fit_columns=False,
                                  elem_id="history-gallery", interactive=False, visible=False)
        with gr.Row(equal_height=False):
            c["overlay"] = gr.Dropdown(choices=[], value=[], multiselect=True, allow_custom_value=True,
                                       label="Overlay on the loss chart", elem_id="overlay", scale=3,
                                       info="Past runs' total loss, dashed, against the current run.")
            c["restore_dd"] = gr.Dropdown(choices=[], value=None, allow_custom_value=True, label="Run",
                                          elem_id="restore-run", scale=2, info="Or click a row of the table.")
            c["restore"] = gr.Button("Restore", elem_id="restore", scale=1, size="sm", min_width=80)
        c["restore_msg"] = gr.Markdown("", elem_id="restore-msg")
    # Always rendered and visible: a Model3D first shown inside a hidden container never draws.
    with gr.Group(elem_id="downloads"):
        gr.Markdown("**Downloads** (when a run ends or is stopped): the result (GLB, OBJ; density grid; splats PLY), "
                    "history CSV and config first, then the turntable and timelapse videos.", elem_id="downloads-head")
        with gr.Row(equal_height=False):
            c["result_3d"] = gr.Model3D(label="Result", elem_id="result-3d", height=260, interactive=False, scale=1,
                                        min_width=240)
            with gr.Column(scale=1, min_width=240):
                c["files"] = gr.Files(label="Files", elem_id="result-files", interactive=False, height=170)
                with gr.Row():
                    c["iso"] = gr.Number(value=0, minimum=0, label="Surface threshold (volume, NeRF)",
                                         info="Density at which the surface is extracted; 0: half the largest density.",
                                         elem_id="iso-level", scale=3)
                    c["reexport"] = gr.Button("Export again", elem_id="reexport", scale=1, size="sm", min_width=80)
                c["views_btn"] = gr.Button("Download the target views", elem_id="export-views", size="sm")
                c["export_msg"] = gr.Markdown("", elem_id="export-msg")
    return c


def bind(demo: gr.Blocks, wb: gr.State, c: dict[str, Any], server: Server) -> None:
    """Every page event, bound to the session's workbench (first input, first output)."""
    knobs_flat = [comp for m in METHOD_NAMES for comp in c["knobs"][m]]
    locked = ([comp for m in METHOD_NAMES for k, comp in zip(KNOBS[m], c["knobs"][m]) if not k.live]
              + [c["method"], c["target"], c["preset"], c["reset"], c["restore"]])
    view = [*c["columns"], c["method_md"], c["preset"], c["views"]]
    page_in = [wb, c["method"], c["target"], *knobs_flat]
    live = dict(api_visibility="private", queue=False, show_progress="hidden")

    def on(trigger: Any, fn: Any, inputs: list, outputs: list, **kw: Any) -> Any:
        return trigger(fn, [wb, *inputs], [wb, *outputs], **{"api_visibility": "private", **kw})

    demo.load(page.on_load, [wb, c["target"]], [wb, c["scene"], c["target_msg"]], api_visibility="private")
    demo.load(None, None, None, js=page.SHORTCUTS_JS, api_visibility="private")
    demo.load(page.on_estimate, page_in, [wb, c["estimate"]], api_visibility="private")
    demo.unload(page.on_unload)
    on(c["method"].input, page.on_method(server), [c["method"]], [*view, *knobs_flat])
    on(c["preset"].input, page.on_preset, [c["method"], c["preset"]], knobs_flat)
    on(c["reset"].click, page.on_reset(server), [c["method"]], [*knobs_flat, c["preset"]])
    on(c["target"].change, page.on_target, [c["target"]], [c["scene"], c["target_msg"]])
    for up in (c["upload"], c["upload_zip"]):
        on(up.upload, page.on_upload, [up], [c["target"], c["scene"], c["target_msg"]])
    gr.on([c["method"].change, c["target"].change, *[k.change for k in knobs_flat]], page.on_estimate, page_in,
          [wb, c["estimate"]], trigger_mode="always_last", **live)
    c["run"].click(lambda: [gr.update(interactive=False)] * len(locked), None, locked, **live)
    c["run"].click(lambda: (None, None, "", gr.update(value=None, visible=False)), None,
                   [c["result_3d"], c["files"], c["export_msg"], c["turntable"]], **live)
    run = c["run"].click(page.run_stream, page_in, [wb, c["status"], c["loss"], c["scene"], c["metrics"], c["views"]],
                         api_visibility="private", concurrency_limit=server.max_runs, concurrency_id="run")
    on(c["pause"].click, page.on_pause, [], [c["pause"], c["status"]], **live)
    on(c["stop"].click, page.on_stop, [], [c["pause"], c["status"]], **live)
    on(c["score"].click, page.on_score, [], [c["export_msg"]], **live)
    for m in METHOD_NAMES:
        for k, comp in zip(KNOBS[m], c["knobs"][m]):
            if k.live:
                triggers = ([comp.release] if isinstance(comp, gr.Slider) else
                            [comp.submit, comp.blur] if isinstance(comp, gr.Number) else [comp.input])
                for t in triggers:
                    on(t, page.live_handler(m, k.name, k.label), [comp], [], **live)
    history = [c["table"], c["gallery"], c["overlay"], c["restore_dd"]]
    done = run.then(page.after_run(len(locked)), [wb], [wb, *locked, *history], api_visibility="private")
    core = done.then(page.export_core, [wb, c["iso"]], [wb, c["result_3d"], c["files"], c["export_msg"]],
                     api_visibility="private")
    core.then(page.export_extras, [wb, c["files"]], [wb, c["files"], c["turntable"], c["export_msg"]],
              api_visibility="private")
    on(c["reexport"].click, page.export_core, [c["iso"]], [c["result_3d"], c["files"], c["export_msg"]])
    on(c["views_btn"].click, page.on_export_views, page_in[1:], [c["files"], c["export_msg"]])
    on(c["overlay"].input, page.on_overlay, [c["overlay"]], [c["loss"]], queue=False)
    c["table"].select(page.pick_row, None, c["restore_dd"], api_visibility="private", queue=False)
    apply = [c["method"], *view, c["target"], *knobs_flat]
    on(c["restore"].click, page.on_restore(server), [c["restore_dd"]], [*apply, c["restore_msg"]])
    on(c["config_upload"].upload, page.on_config(server), [c["config_upload"]], [*apply, c["config_msg"]])
    page.bind_public(demo, server)


def build_demo(max_runs: int | None = None, server: Server | None = None) -> gr.Blocks:
    """Build the page. Nothing heavy happens here: no model and no target is loaded."""
    server = server or Server(max_runs=max_runs)
    serve_plotly_js()
    with gr.Blocks(title="recon: 3D reconstruction playground", delete_cache=(600, 3600)) as demo:
        gr.Markdown("# recon\nWatch a 3D reconstruction converge: pick a target and a method, move the sliders, "
                    "press **Run**. Settings marked ⚡ can change while it runs.")
        wb = gr.State(lambda: page.new_workbench(server), time_to_live=server.session_ttl,
                      delete_callback=page.close_workbench)
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=360):
                left = controls(server)
            with gr.Column(scale=7, min_width=480):
                right = results()
        bind(demo, wb, {**left, **right}, server)
    for fn in demo.fns.values():  # everything but the public API is the page's own (gr.State adds a load event too)
        if fn.api_name not in page.PUBLIC:
            fn.api_visibility = "private"
    server.waiting = lambda: page.waiting_runs(demo)
    demo.recon_server = server  # for tests and diagnostics
    return demo


def launch_options(demo: gr.Blocks) -> dict[str, Any]:
    """What every launch of the page needs (the tests use it too): the upload limit, enforced before a
    file reaches the disk, and the gate that keeps the page's own handlers out of the API."""
    return dict(ssr_mode=False, show_error=True, max_file_size=max(MAX_UPLOAD_BYTES, MAX_ZIP_BYTES),
                app_kwargs={"middleware": [Middleware(PageOnly, allowed=page.guard(demo))]})


def main() -> None:
    page.import_pytorch3d()
    server = Server()
    if os.environ.get("RECON_WARM_UP", "1") != "0":  # render the default targets' views in the background
        threading.Thread(target=page.warm_up, args=(server,), name="recon-warm-up", daemon=True).start()
    demo = build_demo(server=server)
    demo.queue(max_size=int(os.environ.get("RECON_QUEUE_SIZE", "100")), default_concurrency_limit=None)
    atexit.register(server.shutdown, 10.0)  # runs end before the interpreter does
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), **launch_options(demo))


if __name__ == "__main__":
    main()
