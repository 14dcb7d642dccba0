"""recon: the Gradio page. Builds the UI only; all tensor work happens in recon's worker threads.

Run it with ``python app.py`` (or ``make run``). ``build_demo()`` builds the page without doing any
work, so tests can import this module and launch it in-process. Session state, the status line and
the run history live in :mod:`recon.session` and :mod:`recon.history` (plain python, no gradio).
"""

# No `from __future__ import annotations` here: Gradio finds the `request: gr.Request` parameters by
# resolving annotations, and string annotations naming the locally imported `gr` cannot be resolved,
# so every handler would get request=None and all browser sessions would share one state.
import os
import shutil
import threading
import time
from typing import Any

from recon import vis
from recon.assets import BUILTINS, MAX_FACES, MAX_UPLOAD_BYTES, UPLOAD_EXTENSIONS, AssetError, load_builtin, load_upload
from recon.history import HEADERS as HISTORY_HEADERS
from recon.methods import METHODS, get_method
from recon.params import Knob, from_values, knobs
from recon.runner import Run, RunSlots
from recon.session import (  # noqa: F401
    METRIC_LABELS,
    UPLOADED,
    Sessions,
    SessionState,
    default_max_runs,
    device_preset,
    edit_note,
    preset_choices,
    preset_values,
    resolve_target,
    status_text,
    target_choice,
    views_image,
)
from recon.session import grouped as _grouped

#: Seconds between page updates while a run streams (status, loss chart).
REFRESH_S = 0.5
#: Seconds between 3D-view updates (a mesh figure is heavier than the loss chart).
SCENE_REFRESH_S = 2.0

#: Keyboard shortcuts, bound once the page has loaded: Alt+R run, Alt+P pause/resume, Alt+S stop
#: (by key position, so other keyboard layouts and macOS's Option characters work too).
SHORTCUTS_JS = """
() => {
  if (window.__reconKeys) return;
  window.__reconKeys = true;
  const ids = {KeyR: "run", KeyP: "pause", KeyS: "stop"};
  document.addEventListener("keydown", (e) => {
    if (!e.altKey || e.ctrlKey || e.metaKey || !(e.code in ids)) return;
    const btn = document.getElementById(ids[e.code]);
    if (btn && !btn.disabled) { e.preventDefault(); btn.click(); }
  });
  for (const [code, id] of Object.entries(ids)) {
    const btn = document.getElementById(id);
    if (btn) btn.title = `Alt+${code.slice(3)}`;
  }
}
"""
LIVE_MARK = "⚡ live · "


def _knob_component(gr, method: str, k: Knob, value: Any):
    eid = f"{method}-{k.name}".replace("_", "-")
    info = (LIVE_MARK if k.live else "") + k.help
    common = dict(label=k.label, info=info, elem_id=eid, interactive=True)
    if k.kind == "bool":
        return gr.Checkbox(value=value, **common)
    if k.kind == "choice":
        return gr.Dropdown(choices=list(k.choices), value=value, **common)
    if k.log:
        return gr.Number(value=value, minimum=k.lo, maximum=k.hi, step=k.step, **common)
    return gr.Slider(minimum=k.lo, maximum=k.hi, step=k.step, value=value,
                     precision=0 if k.kind == "int" else None, **common)


def build_demo(max_runs: int | None = None) -> Any:
    """Build the page. Nothing heavy happens here: no model, no device, no target is loaded."""
    import gradio as gr

    sessions = Sessions()
    slots = RunSlots(max_runs if max_runs is not None else default_max_runs())
    method_names = list(METHODS)
    # Knobs grouped as the page shows them (group by group, in first-appearance order); the
    # components and the values coming back from the page follow exactly this order.
    knob_lists = {m: _grouped(knobs(get_method(m).Config)) for m in method_names}

    def method_intro(name: str) -> str:
        cls, line = METHODS[name]
        return f"**{cls.title}.** {line}. Follows the PyTorch3D tutorial *{cls.tutorial}*.\n\n{cls.explain}"

    # delete_cache: gradio's own copies of uploads and downloads (not tied to a session) go after 2 h.
    with gr.Blocks(title="recon: 3D reconstruction playground", delete_cache=(3600, 7200)) as demo:
        gr.Markdown("# recon\nWatch a 3D reconstruction converge: pick a target and a method, move the "
                    "sliders, press **Run**. Settings marked ⚡ can change while it runs.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=360):
                method_dd = gr.Dropdown(choices=[(get_method(m).title, m) for m in method_names],
                                        value=method_names[0], label="Method", elem_id="method")
                with gr.Accordion("About this method", open=False):
                    method_md = gr.Markdown(method_intro(method_names[0]), elem_id="method-info")
                target_dd = gr.Dropdown(choices=[*BUILTINS, UPLOADED], value="cow", label="Target",
                                        elem_id="target")
                target_msg = gr.Markdown("", elem_id="target-msg")
                with gr.Accordion("Upload your own mesh", open=False):
                    upload = gr.File(label=f"Mesh file ({', '.join(UPLOAD_EXTENSIONS)}; at most "
                                           f"{MAX_UPLOAD_BYTES // 2**20} MB and {MAX_FACES:,} faces)",
                                     file_types=list(UPLOAD_EXTENSIONS), elem_id="upload", height=90)
                with gr.Accordion("Load a saved config", open=False):
                    config_upload = gr.File(label="Config .json (from Downloads or `python -m recon fit`)",
                                            file_types=[".json"], elem_id="config-upload", height=90)
                config_msg = gr.Markdown("", elem_id="config-msg")
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run")
                    pause_btn = gr.Button("Pause", elem_id="pause")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
                gr.Markdown("Keys: **Alt+R** run · **Alt+P** pause/resume · **Alt+S** stop. While a run goes, "
                            "⚡ settings apply from its next step; the others are locked.", elem_id="keys-hint")
                with gr.Row():
                    first = get_method(method_names[0])
                    preset_dd = gr.Dropdown(choices=preset_choices(first), value=device_preset(first),
                                            label="Preset", elem_id="preset", scale=3,
                                            info="Sets the sliders; you can still move them.")
                    reset_btn = gr.Button("Reset to defaults", elem_id="reset", scale=1, size="sm")
                knob_components: dict[str, list] = {}
                knob_columns = []
                for m in method_names:
                    with gr.Column(visible=(m == method_names[0])) as col:
                        comps = []
                        for gi, group in enumerate(dict.fromkeys(k.group for k in knob_lists[m])):
                            with gr.Accordion(group, open=gi == 0):
                                start = preset_values(get_method(m), device_preset(get_method(m)))
                                comps.extend(_knob_component(gr, m, k, start[k.name])
                                             for k in knob_lists[m] if k.group == group)
                    knob_components[m] = comps
                    knob_columns.append(col)
            with gr.Column(scale=7, min_width=480):
                status = gr.Textbox(label="Status", value="idle · press Run", lines=3, max_lines=4,
                                    interactive=False, elem_id="status")
                with gr.Row():
                    loss_plot = gr.Plot(vis.loss_figure([]), label="Loss", elem_id="loss-plot")
                    metrics_plot = gr.Plot(vis.metrics_figure([]), label="Held-out quality", elem_id="metrics-plot")
                with gr.Row():
                    scene_plot = gr.Plot(label="3D view", elem_id="scene-plot", scale=3)
                    views = gr.Image(label="target | current render (top), silhouettes (bottom)",
                                     elem_id="views", visible=False, interactive=False, scale=2, height=440,
                                     buttons=["download", "fullscreen"])
                turntable_img = gr.Image(label="Turntable of the result", elem_id="turntable", type="filepath",
                                         visible=False, interactive=False, height=320)
                with gr.Accordion("Run history", open=True, elem_id="history"):
                    history_table = gr.Dataframe(headers=HISTORY_HEADERS, value=None, interactive=False, wrap=True,
                                                 elem_id="history-table", max_height=260, show_label=False,
                                                 column_widths=["4%", "10%", "10%", "33%", "10%", "10%", "14%", "9%"])
                    history_gallery = gr.Gallery(label="Final state of each run (newest first)", columns=8,
                                                 height=120, allow_preview=False, object_fit="contain", fit_columns=False,
                                                 elem_id="history-gallery", interactive=False, visible=False)
                    with gr.Row(equal_height=False):
                        overlay_dd = gr.Dropdown(choices=[], value=[], multiselect=True, allow_custom_value=True,
                                                 label="Overlay on the loss chart", elem_id="overlay", scale=3,
                                                 info="Past runs' total loss, dashed, against the current run.")
                        restore_dd = gr.Dropdown(choices=[], value=None, allow_custom_value=True, label="Run",
                                                 elem_id="restore-run", scale=2,
                                                 info="Or click a row of the table.")
                        restore_btn = gr.Button("Restore", elem_id="restore", scale=1, size="sm", min_width=80)
                    restore_msg = gr.Markdown("", elem_id="restore-msg")
                # Always rendered and visible: a Model3D first shown inside a hidden container never draws
                # (gradio 6.31), and a closed Accordion mounts its children only when opened, which leaves the
                # Model3D empty too. Compact instead: the result next to its files.
                with gr.Group(elem_id="downloads") as downloads_box:
                    gr.Markdown("**Downloads** (when a run ends or is stopped): the result as GLB (volumetric methods: "
                                "the surface at the threshold), turntable and timelapse videos, loss history, config.",
                                elem_id="downloads-head")
                    with gr.Row(equal_height=False):
                        result_3d = gr.Model3D(label="Result", elem_id="result-3d", height=260, interactive=False,
                                               scale=1, min_width=240)
                        with gr.Column(scale=1, min_width=240):
                            result_files = gr.Files(label="Files", elem_id="result-files", interactive=False,
                                                    height=170)
                            with gr.Row():
                                iso_level = gr.Number(value=0, minimum=0, label="Surface threshold (volume, NeRF)",
                                                      info="Density at which the surface is extracted; 0: half the "
                                                           "largest density.", elem_id="iso-level", scale=3)
                                reexport_btn = gr.Button("Export again", elem_id="reexport", scale=1, size="sm",
                                                         min_width=80)
                            export_msg = gr.Markdown("", elem_id="export-msg")

        all_knobs = [c for m in method_names for c in knob_components[m]]
        # What a run locks: settings that cannot change mid-run, and whatever would reset the sliders.
        locked = ([c for m in method_names for k, c in zip(knob_lists[m], knob_components[m]) if not k.live]
                  + [method_dd, target_dd, preset_dd, reset_btn, restore_btn])

        def knob_values(method: str, data: dict) -> dict[str, Any]:
            return {k.name: data[c] for k, c in zip(knob_lists[method], knob_components[method])}

        # --- method, presets, target, upload ---------------------------------------------------
        def on_method(name: str, request: gr.Request):
            cls = get_method(name)
            has_images = bool(getattr(cls, "shows_images", False))
            preset = device_preset(cls)
            knob_updates = preset_updates(name, preset)
            sess = sessions.get(request)
            pending, sess.pending_config = sess.pending_config, None
            if pending is not None and pending[0] == name:  # a loaded config or a restore chose this method
                knob_updates = ordered_for(name, [gr.update(value=pending[1][k.name]) for k in knob_lists[name]])
            return ([gr.update(visible=(m == name)) for m in method_names]
                    + [method_intro(name), gr.update(choices=preset_choices(cls), value=preset),
                       gr.update(visible=has_images)] + knob_updates)

        method_dd.change(on_method, method_dd, [*knob_columns, method_md, preset_dd, views, *all_knobs],
                         api_visibility="private")

        def ordered_for(method: str, updates: list) -> list:
            """Place `method`'s updates at its slice of all_knobs, skipping the other methods'."""
            out = []
            for m in method_names:
                n = len(knob_components[m])
                out.extend(updates[:n] if m == method else [gr.skip()] * n)
            return out

        def preset_updates(method: str, preset: str):
            values = preset_values(get_method(method), preset)
            return ordered_for(method, [gr.update(value=values[k.name]) for k in knob_lists[method]])

        preset_dd.input(preset_updates, [method_dd, preset_dd], all_knobs, api_visibility="private")

        def on_reset(method: str):
            preset = device_preset(get_method(method))
            return preset_updates(method, preset) + [gr.update(value=preset)]

        reset_btn.click(on_reset, method_dd, [*all_knobs, preset_dd], api_visibility="private")

        def preview(target: str, request: gr.Request):
            sess = sessions.get(request)
            try:
                asset = resolve_target(sess, target)
            except AssetError as exc:
                return gr.skip(), f"⚠️ {exc}"
            from recon.targets import target_points

            return (vis.scene_figure(target_points=target_points(asset), title=f"target: {asset.name}"),
                    f"Target **{asset.name}**: {asset.verts.shape[0]:,} vertices, {asset.num_faces:,} faces. "
                    + (BUILTINS[target][1] + "." if target in BUILTINS else ""))

        target_dd.change(preview, target_dd, [scene_plot, target_msg], api_visibility="private")
        demo.load(preview, target_dd, [scene_plot, target_msg], api_visibility="private")
        demo.load(None, None, None, js=SHORTCUTS_JS, api_visibility="private")

        def on_upload(file: Any, request: gr.Request):
            sess = sessions.get(request)
            if file is None:
                return gr.skip(), gr.skip(), ""
            path = file if isinstance(file, str) else getattr(file, "path", None) or getattr(file, "name", "")
            try:
                asset = load_upload(path, os.path.basename(str(path)))
            except AssetError as exc:
                return gr.skip(), gr.skip(), f"⚠️ {exc}"
            except Exception as exc:  # never let a malformed upload take the page down
                return gr.skip(), gr.skip(), f"⚠️ That file could not be used ({type(exc).__name__})."
            sess.uploaded = asset
            from recon.targets import target_points

            return (gr.update(value=UPLOADED),
                    vis.scene_figure(target_points=target_points(asset), title=f"target: {asset.name}"),
                    f"Uploaded **{asset.name}**: {asset.verts.shape[0]:,} vertices, {asset.num_faces:,} faces, "
                    "centred and scaled into [-1, 1]³ as the tutorials do."
                    + "".join(f"\n\nNote: {n}" for n in asset.notes))

        upload.upload(on_upload, upload, [target_dd, scene_plot, target_msg], api_name="upload")

        # --- running ----------------------------------------------------------------------------
        def current_loss_figure(sess: SessionState):
            run = sess.run
            return vis.loss_figure(list(run.history) if run else [], list(run.events) if run else [],
                                   sess.loss_overlays())

        def run_stream(data: dict, request: gr.Request):
            """Start a run for this session and stream its progress until it ends."""
            sess = sessions.get(request)
            method, target = data[method_dd], data[target_dd]
            from recon.device import describe, pick_device
            from recon.targets import target_points

            try:
                cls = get_method(method)
                asset = resolve_target(sess, target)
                cfg, messages = from_values(cls.Config, knob_values(method, data))
                device = pick_device()
            except (AssetError, KeyError, RuntimeError) as exc:
                yield f"error · {exc}", gr.skip(), gr.skip(), gr.skip(), gr.skip()
                return
            for msg in messages:
                gr.Warning(msg)
            with sess.lock:
                previous = sess.run
                if previous is not None:
                    previous.close()  # one run per session: the previous one ends and frees its memory
                run = Run(cls, asset, cfg, device, slots=slots).start()
                sess.run, sess.run_target = run, asset
            if previous is not None:
                sess.record(previous)
            dev_name = describe(device)
            tpts = target_points(asset)
            seq_sent, scene_sent_at = -1, 0.0
            metrics_len = -1
            try:
                while True:
                    finished = run.finished  # read before building the update, so the last one is complete
                    st = run.status()
                    scene = img = gr.skip()
                    now = time.monotonic()
                    seq, snap = run.latest_snapshot()
                    if seq != seq_sent and (finished or now - scene_sent_at >= SCENE_REFRESH_S or seq_sent < 0):
                        scene = vis.snapshot_figure(snap, tpts, title=f"{cls.title}: {asset.name}")
                        img = views_image(snap) if snap is not None and snap.images else gr.skip()
                        seq_sent, scene_sent_at = seq, now
                        run.request_snapshot()
                    metrics = gr.skip()
                    if len(run.metric_history) != metrics_len:
                        metrics_len = len(run.metric_history)
                        metrics = vis.metrics_figure(list(run.metric_history), METRIC_LABELS)
                    loss = vis.loss_figure(list(run.history), list(run.events), sess.loss_overlays())
                    text = status_text(st, dev_name, slots.capacity)
                    if messages:  # API clients never see gr.Warning toasts: repeat what was clamped
                        text += "\nadjusted: " + "; ".join(messages)
                    if run.events:
                        text += "\nlive edits: " + edit_note(run.events, {k.name: k.label for k in knob_lists[method]})
                    yield text, loss, scene, metrics, img
                    if finished and not run.alive:
                        break
                    time.sleep(REFRESH_S)
            finally:
                if not run.finished:  # the tab closed or the event was cancelled: end the worker too
                    run.stop()
                    run.join(3)
                sess.record(run)

        def lock_settings():
            return [gr.update(interactive=False) for _ in locked]

        run_btn.click(lock_settings, None, locked, api_visibility="private", concurrency_limit=None)
        run_event = run_btn.click(run_stream, {method_dd, target_dd, *all_knobs},
                                  [status, loss_plot, scene_plot, metrics_plot, views],
                                  api_name="run", concurrency_limit=None)

        def on_pause(request: gr.Request):
            run = sessions.get(request).run
            if run is None or run.finished:
                return gr.update(value="Pause")
            if run.paused:
                run.resume()
                return gr.update(value="Pause")
            run.pause()
            return gr.update(value="Resume")

        pause_btn.click(on_pause, None, pause_btn, api_name="pause", concurrency_limit=None)

        def on_stop(request: gr.Request):
            run = sessions.get(request).run
            if run is not None:
                run.stop()
                run.join(5)
            return gr.update(value="Pause")

        stop_btn.click(on_stop, None, pause_btn, api_name="stop", concurrency_limit=None)
        run_event.then(lambda: gr.update(value="Pause"), None, pause_btn, api_visibility="private")

        # --- live edits -------------------------------------------------------------------------
        def live_edit(method: str, name: str, value: float, request: gr.Request) -> str:
            """Change a live setting (a loss weight, the learning rate) of this session's running run.

            It applies from the run's next step. Returns what happened, or why it was refused.
            """
            applied, messages = sessions.get(request).live_edit(method, name, value)
            return "; ".join(messages) if messages else ("applied" if applied else "unchanged")

        gr.api(live_edit, api_name="live_edit", concurrency_limit=None)

        def live_handler(method: str, k: Knob):
            def on_edit(value: Any, request: gr.Request):
                sess = sessions.get(request)
                run = sess.run
                if run is None or run.finished or run.method_cls.name != method:
                    return  # no run of this method is going: the value waits for the next Run
                applied, messages = sess.live_edit(method, k.name, value)
                for msg in messages:
                    gr.Warning(msg)
                if applied:
                    gr.Info(f"{k.label} → {value:g} from iteration {run.iteration + 1}", duration=3)

            return on_edit

        for m in method_names:
            for k, comp in zip(knob_lists[m], knob_components[m]):
                if not k.live:
                    continue
                triggers = ([comp.release] if isinstance(comp, gr.Slider) else
                            [comp.submit, comp.blur] if isinstance(comp, gr.Number) else [comp.input])
                for trigger in triggers:
                    trigger(live_handler(m, k), comp, None, api_visibility="private", concurrency_limit=None,
                            show_progress="hidden")

        # --- run history ------------------------------------------------------------------------
        def history_updates(sess: SessionState) -> list:
            hist = sess.history
            kept = [n for n in sess.overlays if hist.get(n) is not None]
            sess.overlays = kept
            newest = hist.records[-1].number if len(hist) else None
            gallery = [(r.thumbnail, r.label) for r in reversed(hist.records) if r.thumbnail is not None]
            return [gr.update(value={"data": hist.rows(), "headers": HISTORY_HEADERS} if len(hist) else None),
                    gr.update(value=gallery or None, visible=bool(gallery)),
                    gr.update(choices=hist.choices(), value=kept),
                    gr.update(choices=hist.choices(), value=str(newest) if newest else None)]

        history_outputs = [history_table, history_gallery, overlay_dd, restore_dd]

        def after_run(request: gr.Request):
            """Unlock the settings and list the run that has just ended."""
            sess = sessions.get(request)
            sess.record()
            return [gr.update(interactive=True) for _ in locked] + history_updates(sess)

        run_event.then(after_run, None, [*locked, *history_outputs], api_visibility="private", concurrency_limit=None)

        def on_overlay(numbers: list[str] | None, request: gr.Request):
            sess = sessions.get(request)
            sess.overlays = [str(n).lstrip("#").split()[0] for n in (numbers or []) if str(n).strip()]
            return current_loss_figure(sess)

        overlay_dd.input(on_overlay, overlay_dd, loss_plot, api_name="overlay", concurrency_limit=None)

        def pick_row(evt: gr.SelectData):
            row = getattr(evt, "row_value", None)
            return gr.update(value=str(row[0])) if row else gr.skip()

        history_table.select(pick_row, None, restore_dd, api_visibility="private")

        def pick_thumb(evt: gr.SelectData, request: gr.Request):
            shown = [r for r in reversed(sessions.get(request).history.records) if r.thumbnail is not None]
            i = evt.index if isinstance(evt.index, int) else None
            return gr.update(value=str(shown[i].number)) if i is not None and i < len(shown) else gr.skip()

        history_gallery.select(pick_thumb, None, restore_dd, api_visibility="private")

        def apply_settings(method: str, current_method: str, values: dict, sess: SessionState) -> list:
            """Updates that put `method` and its knob `values` into the page (method first, then knobs)."""
            if method != current_method:  # the method change resets the sliders: let it apply these instead
                sess.pending_config = (method, values)
            return [gr.update(value=method),
                    *ordered_for(method, [gr.update(value=values[k.name]) for k in knob_lists[method]])]

        def on_restore(number: str | None, method: str, request: gr.Request):
            """Put a past run's method, target and every setting (as it ended, live edits included) back."""
            sess = sessions.get(request)
            skip_all = [gr.skip(), gr.skip(), *([gr.skip()] * len(all_knobs))]
            rec = sess.history.get(number)
            if rec is None:
                return [*skip_all, "⚠️ Pick a run from the history to restore."]
            if sess.run is not None and sess.run.alive:
                return [*skip_all, "⚠️ Stop the current run first."]
            values = {**preset_values(get_method(rec.method), device_preset(get_method(rec.method))), **rec.settings}
            target = target_choice(sess, rec.target, rec.target_source)
            method_upd, *knob_upd = apply_settings(rec.method, method, values, sess)
            msg = f"Restored run **#{rec.number}**: {get_method(rec.method).title} on {rec.target}."
            if rec.events:
                msg += " Its live edits are in the sliders: " + edit_note(rec.events) + "."
            if target is None:
                msg += f"\n\nNote: target {rec.target!r} is no longer here: upload that mesh again."
            return [method_upd, gr.update(value=target) if target else gr.skip(), *knob_upd, msg]

        restore_btn.click(on_restore, [restore_dd, method_dd], [method_dd, target_dd, *all_knobs, restore_msg],
                          api_name="restore", concurrency_limit=None)

        # --- downloads and configs ------------------------------------------------------------
        def export_downloads(threshold: float | None, request: gr.Request):
            """Write the finished run's files into this session's folder and show them."""
            from recon.export import export_run

            sess = sessions.get(request)
            run, asset = sess.run, sess.run_target
            if run is None or asset is None or run.alive:
                return gr.skip(), None, None, ""
            root = sess.downloads_dir()
            for old in os.listdir(root):  # only the latest run's files are kept
                shutil.rmtree(os.path.join(root, old), ignore_errors=True)
            notes: list[str] = []
            source = "builtin" if asset.key.startswith("builtin:") else "upload"
            try:
                # Turntables of a NeRF cost minutes at full size on a CPU: fewer, smaller frames there.
                frames, size = (36, 128) if run.device.type == "cuda" else (24, 96)
                files = export_run(run, os.path.join(root, f"run{run.ticket}"), asset.name, source,
                                   threshold=threshold if threshold and threshold > 0 else None, notes=notes,
                                   frames=frames, size=size)
            except Exception as exc:  # an export problem must not take the page down
                return gr.update(visible=True), None, None, f"⚠️ Export failed ({type(exc).__name__}: {exc})"
            glb = str(files["glb"]) if "glb" in files else None
            return (gr.update(visible=True), glb, [str(p) for p in files.values()] or None,
                    " ".join(f"⚠️ {n}" for n in notes))

        export_outputs = [downloads_box, result_3d, result_files, export_msg]
        run_btn.click(lambda: (None, None, ""), None, [result_3d, result_files, export_msg], api_visibility="private")
        export_event = run_event.then(export_downloads, iso_level, export_outputs, api_name="export",
                                      concurrency_limit=None)

        def show_turntable(request: gr.Request):
            """The finished run's turntable, shown in the page: the GIF the export has just written."""
            import glob

            sess = sessions.get(request)
            gifs = glob.glob(os.path.join(sess.downloads_dir(), "*", "*_turntable.gif"))
            if not gifs:
                return gr.update(value=None, visible=False)
            return gr.update(value=max(gifs, key=os.path.getmtime), visible=True)

        export_event.then(show_turntable, None, turntable_img, api_visibility="private")
        run_btn.click(lambda: gr.update(value=None, visible=False), None, turntable_img, api_visibility="private")
        reexport_btn.click(export_downloads, iso_level, export_outputs, api_visibility="private",
                           concurrency_limit=None).then(show_turntable, None, turntable_img,
                                                        api_visibility="private")

        def on_config(file: Any, method: str, request: gr.Request):
            """A config JSON sets the method, the target (when available) and every setting."""
            from recon.export import ConfigError, load_config
            from recon.params import to_values

            skip_all = [gr.skip(), gr.skip(), *([gr.skip()] * len(all_knobs))]
            if file is None:
                return [*skip_all, ""]
            path = file if isinstance(file, str) else getattr(file, "path", None) or getattr(file, "name", "")
            try:
                loaded = load_config(path)
            except ConfigError as exc:
                return [*skip_all, f"⚠️ {exc}"]
            sess = sessions.get(request)
            values = to_values(loaded.cfg)
            notes = list(loaded.messages)
            target = gr.skip()
            choice = target_choice(sess, loaded.target or "", loaded.target_source)
            if choice is not None:
                target = gr.update(value=choice)
            elif loaded.target:
                notes.append(f"target {loaded.target!r} is not here: upload that mesh, then pick it")
            method_upd, *knob_upd = apply_settings(loaded.method, method, values, sess)
            msg = f"Loaded the config: **{get_method(loaded.method).title}**, {len(values)} settings."
            return [method_upd, target, *knob_upd, msg + "".join(f"\n\nNote: {n}" for n in notes)]

        config_upload.upload(on_config, [config_upload, method_dd], [method_dd, target_dd, *all_knobs, config_msg],
                             api_name="load_config")

        def on_unload(request: gr.Request):
            sessions.drop(request)

        demo.unload(on_unload)

    demo.recon_sessions = sessions  # for tests and diagnostics
    demo.recon_slots = slots
    return demo


def _import_pytorch3d() -> None:
    """Import PyTorch3D's packages on this thread, before any other thread can: their circular
    imports, first run from two threads at once (a run's worker, a page handler, a warm-up), can
    fail with "cannot import name ... from partially initialized module"."""
    import pytorch3d.loss  # noqa: F401
    import pytorch3d.ops  # noqa: F401
    import pytorch3d.renderer  # noqa: F401
    import pytorch3d.utils  # noqa: F401


def _warm_up() -> None:
    """Load the default target in the background, so the first Run starts fast."""
    load_builtin("cow")


def main() -> None:
    _import_pytorch3d()
    threading.Thread(target=_warm_up, name="recon-warm-up", daemon=True).start()
    demo = build_demo()
    demo.queue(max_size=64, default_concurrency_limit=None)
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        ssr_mode=False,
        show_error=True,
        max_file_size=MAX_UPLOAD_BYTES,  # gradio refuses bigger uploads before they reach the disk
    )


if __name__ == "__main__":
    main()
