"""The page's handlers: Gradio values in, the session's :class:`~recon.workbench.Workbench`, Gradio
updates out. Each takes the session's workbench first and returns it first (Gradio counts a
session's time to live from each return). No logic lives here beyond translating values."""

import os
import weakref
from typing import Any, Callable

import gradio as gr
import numpy as np

from liveplot import figure_value
from recon import api
from recon.history import HEADERS
from recon.methods import METHODS, device_preset, get_method, preset_values
from recon.params import grouped, knobs, validate
from recon.server import Server
from recon.targets import TargetChoice, views_for_config
from recon.workbench import Loaded, Update, Workbench

METHOD_NAMES = list(METHODS)
#: Every method's knobs as the page shows them (group by group); the components follow this order.
KNOBS = {m: grouped(knobs(get_method(m).Config)) for m in METHOD_NAMES}
#: The public API: every other handler is private to the page (see guard()).
PUBLIC = ("fit", "estimate")
_by_session: "weakref.WeakValueDictionary[str, Workbench]" = weakref.WeakValueDictionary()

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


def method_intro(name: str) -> str:
    cls, line = METHODS[name]
    source = f"Follows the PyTorch3D tutorial *{cls.tutorial}*." if cls.tutorial else ""
    return f"**{cls.title}.** {line}. {source}\n\n{cls.explain}"


def preset_choices(name: str) -> list[str]:
    return list(get_method(name).presets) or ["Defaults"]


def new_workbench(server: Server) -> Workbench:
    return Workbench(server)


def close_workbench(wb: Any) -> None:
    if isinstance(wb, Workbench):
        wb.close()


# --- knob values ------------------------------------------------------------------------------


def values_of(method: str, values: tuple) -> dict[str, Any]:
    """`method`'s knob values out of every knob component's value, in the page's order."""
    start = sum(len(KNOBS[m]) for m in METHOD_NAMES[:METHOD_NAMES.index(method)])
    return {k.name: v for k, v in zip(KNOBS[method], values[start:start + len(KNOBS[method])])}


def knob_updates(method: str, values: dict[str, Any]) -> list:
    """Updates of every knob component: `method`'s set to `values`, the others' left as they are."""
    return [gr.update(value=values[k.name]) if m == method else gr.skip() for m in METHOD_NAMES for k in KNOBS[m]]


def method_view(name: str, server: Server, preset: str | None = None) -> list:
    """Column visibilities, the method's intro, its presets and the rendered-views panel."""
    cls = get_method(name)
    return ([gr.update(visible=(m == name)) for m in METHOD_NAMES]
            + [method_intro(name), gr.update(choices=preset_choices(name),
                                             value=preset or device_preset(name, server.device.type)),
               gr.update(visible=cls.shows_images)])


def shown(u: Update) -> list:
    """status, loss, scene, metrics and views of an Update (None: unchanged)."""
    return [gr.skip() if u.status is None else u.status, *map(chart, (u.loss, u.scene, u.metrics)),
            gr.skip() if u.views is None else np.asarray(u.views)]


def chart(figure: Any) -> Any:
    """A figure for a live plot (None: leave the chart as it is)."""
    return gr.skip() if figure is None else figure_value(figure)


# --- handlers -----------------------------------------------------------------------------------


def on_load(wb: Workbench, target: str, request: gr.Request):
    if request is not None and request.session_hash:
        _by_session[request.session_hash] = wb
    scene, msg = wb.preview(target)
    return wb, chart(scene), msg


def on_unload(request: gr.Request) -> None:
    wb = _by_session.pop(getattr(request, "session_hash", None) or "", None)
    if wb is not None:
        wb.close()


def on_method(server: Server) -> Callable:
    def handler(wb: Workbench, name: str):
        return [wb, *method_view(name, server), *knob_updates(name, preset_values(name, None, server.device.type))]
    return handler


def on_preset(wb: Workbench, method: str, preset: str):
    return [wb, *knob_updates(method, preset_values(method, preset))]


def on_reset(server: Server) -> Callable:
    def handler(wb: Workbench, method: str):
        preset = device_preset(method, server.device.type)
        return [wb, *knob_updates(method, preset_values(method, preset)), gr.update(value=preset)]
    return handler


def on_target(wb: Workbench, name: str):
    scene, msg = wb.preview(name)
    return wb, chart(scene), msg


def on_upload(wb: Workbench, file: Any):
    choice, scene, msg = wb.upload(file)
    return wb, gr.skip() if choice is None else gr.update(value=choice), chart(scene), msg


def on_estimate(wb: Workbench, method: str, target: str, *values: Any):
    return wb, wb.estimate(method, target, values_of(method, values))


def run_stream(wb: Workbench, method: str, target: str, *values: Any):
    """Start a run for this session and stream its progress until it has ended and been scored."""
    update = wb.start(method, target, values_of(method, values))
    try:
        yield wb, *shown(update)
        while not update.done:
            update = wb.tick()
            yield wb, *shown(update)
    finally:
        run = wb.run
        if run is not None and not run.poll().finished:  # the tab closed or the event was cancelled
            run.close()


def on_pause(wb: Workbench):
    label, status = wb.pause()
    return wb, gr.update(value=label), gr.skip() if status is None else status


def on_stop(wb: Workbench):
    status = wb.stop()
    return wb, gr.update(value="Pause"), gr.skip() if status is None else status


def on_score(wb: Workbench):
    return wb, wb.request_full_evaluation()


def live_handler(method: str, name: str, label: str) -> Callable:
    def on_edit(wb: Workbench, value: Any):
        run = wb.run
        if run is None or run.poll().finished or run.method_cls.name != method:
            return wb  # no run of this method is going: the value waits for the next Run
        applied, messages = wb.live_edit(method, name, value)
        for msg in messages:
            gr.Warning(msg)
        if applied:
            gr.Info(f"{label} → {value} from iteration {run.poll().iteration + 1}", duration=3)
        return wb
    return on_edit


def history_updates(wb: Workbench) -> list:
    hist = wb.history
    newest = hist.records[-1].number if len(hist) else None
    gallery = [(r.thumbnail, r.label) for r in reversed(hist.records) if r.thumbnail is not None]
    return [gr.update(value={"data": hist.rows(), "headers": HEADERS} if len(hist) else None),
            gr.update(value=gallery or None, visible=bool(gallery)),
            gr.update(choices=hist.choices(), value=[n for n in wb.overlays if hist.get(n)]),
            gr.update(choices=hist.choices(), value=str(newest) if newest else None)]


def after_run(n_locked: int) -> Callable:
    def handler(wb: Workbench):
        """Unlock the settings and list the run that has just ended."""
        return [wb, *[gr.update(interactive=True) for _ in range(n_locked)], *history_updates(wb)]
    return handler


def export_core(wb: Workbench, threshold: float | None):
    files, notes = wb.export(threshold)
    model = files.pop("viewer_ply", None) or files.get("glb")  # splats: framed for the viewer (not a download)
    return (wb, None if model is None else str(model), [str(p) for p in files.values()] or None,
            " ".join(f"⚠️ {n}" for n in notes))


def export_extras(wb: Workbench, shown_files: Any):
    files, notes = wb.export(extras=True)
    before = [f if isinstance(f, str) else getattr(f, "path", str(f)) for f in (shown_files or [])]
    before = [f for f in before if os.path.exists(f)]  # a new run's export may have replaced them
    gif = files.get("turntable_gif")
    return (wb, (before + [str(p) for p in files.values()]) or None,
            gr.update(value=str(gif), visible=True) if gif else gr.update(value=None, visible=False),
            " ".join(f"⚠️ {n}" for n in notes) or gr.skip())


def on_overlay(wb: Workbench, numbers: list | None):
    return wb, chart(wb.set_overlays(numbers))


def _apply(server: Server, wb: Workbench, loaded: Loaded | str) -> list:
    """Outputs of restore and load-config: method, method view, target, knobs, message."""
    n = len(METHOD_NAMES) + 3 + sum(len(v) for v in KNOBS.values())
    if isinstance(loaded, str):
        return [wb, gr.skip(), *[gr.skip()] * n, gr.skip(), loaded]
    return [wb, gr.update(value=loaded.method), *method_view(loaded.method, server),
            gr.update(value=loaded.target) if loaded.target else gr.skip(),
            *knob_updates(loaded.method, loaded.values), loaded.message]


def on_restore(server: Server) -> Callable:
    def handler(wb: Workbench, number: Any):
        return _apply(server, wb, wb.restore(number))
    return handler


def on_config(server: Server) -> Callable:
    def handler(wb: Workbench, file: Any):
        return _apply(server, wb, wb.load_config(file))
    return handler


def on_export_views(wb: Workbench, method: str, target: str, *values: Any):
    path, msg = wb.export_views(method, target, values_of(method, values))
    return wb, gr.skip() if path is None else [str(path)], msg


def pick_row(evt: gr.SelectData):
    row = getattr(evt, "row_value", None)
    return gr.update(value=str(row[0])) if row else gr.skip()


def waiting_runs(demo: gr.Blocks) -> int:
    """Runs waiting in Gradio's queue for a run slot (the page's Run and the API's /fit share it)."""
    queue = getattr(demo, "_queue", None)
    line = queue.event_queue_per_concurrency_id.get("run") if queue is not None else None
    return len(line.queue) if line is not None else 0


def guard(demo: gr.Blocks) -> Callable[[str | None, dict], bool]:
    """Which requests may run a handler: the public API by name or number; the page's own handlers
    only as the page calls them, naming one of their triggers (see recon.gate). A handler chained
    with ``.then`` is sent with the trigger of the event that started the chain."""
    def triggers(fn: Any) -> set:
        while getattr(fn, "trigger_after", None) is not None:
            fn = demo.fns[fn.trigger_after]
        return {t[0] for t in fn.targets}

    def allowed(name: str | None, body: dict) -> bool:
        fns = demo.fns
        index = body.get("fn_index")
        if index is None:
            return name in PUBLIC
        fn = fns.get(index) if isinstance(index, int) else None
        if fn is None or fn.api_name in PUBLIC:
            return True
        trigger = body.get("trigger_id")
        return trigger is not None and trigger in triggers(fn)
    return allowed


def import_pytorch3d() -> None:
    """Import PyTorch3D's packages on this thread, before any other thread can: their circular
    imports, first run from two threads at once, can fail with "partially initialized module"."""
    import pytorch3d.loss  # noqa: F401
    import pytorch3d.ops  # noqa: F401
    import pytorch3d.renderer  # noqa: F401
    import pytorch3d.utils  # noqa: F401


# --- the public API ------------------------------------------------------------------------------


def bind_public(demo: gr.Blocks, server: Server) -> None:
    """``/fit`` (a config JSON and an optional mesh; streams JSON progress, ends with the files) and
    ``/estimate`` (a config JSON; returns its price). Runs share the page's run slots."""

    def fit(config: str, mesh: Any):
        """Run a recon config (the JSON the page downloads). Streams progress; ends with the files."""
        stream = api.fit(server, config, mesh if isinstance(mesh, str) else getattr(mesh, "path", None))
        try:
            for progress, files in stream:
                yield progress, files
        except api.ApiError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        finally:
            stream.close()

    def estimate(config: str) -> dict:
        """The price of a recon config on this server: memory_gb, seconds, fits, message."""
        try:
            return api.estimate(server, config)
        except api.ApiError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    with gr.Group(visible=False):
        config_in = gr.Textbox(label="config (JSON)")
        mesh_in = gr.File(label="mesh file (optional)")
        progress_out = gr.JSON(label="progress")
        files_out = gr.File(label="files", file_count="multiple")
        go = gr.Button("fit")
    go.click(fit, [config_in, mesh_in], [progress_out, files_out], api_name="fit", concurrency_limit=server.max_runs,
             concurrency_id="run", show_progress="hidden")
    gr.api(estimate, api_name="estimate", concurrency_limit=None)


def warm_up(server: Server) -> None:
    """Prepare the default target's views for every image method's default preset in the background,
    so that the first Run of each starts at once (they are cached with the targets)."""
    target = TargetChoice().resolve("cow")
    for name, (cls, _) in METHODS.items():
        if cls.fits_images:
            cfg, _ = validate(cls.Config, preset_values(name, None, server.device.type))
            views_for_config(cls, target, cfg, server.device)
