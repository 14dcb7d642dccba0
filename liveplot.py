"""A plotly chart the page draws once and then updates in place.

Gradio's own ``gr.Plot`` mounts a new chart for every new value: each 3D update builds a new WebGL
context and compiles its shaders again (about a second of the browser's main thread per update with
software WebGL, during which a Stop's answer cannot be shown), and the user's rotation and zoom are
lost every time. A ``live_plot`` hands the figure to ``Plotly.react`` on the same element instead: the
scene and its buffers are reused, and the figures' fixed ``uirevision`` keeps what the user did.
(A plain ``gr.HTML``: a subclass of a Gradio component would make Gradio write a stub file beside
this one at import.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import plotly

#: plotly.js as shipped with the pinned plotly package: served by the app itself (nothing is fetched
#: from the internet), and the same version the figures' JSON is written for.
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

#: The chart's element, below the panel's label.
_TEMPLATE = '<div style="padding-top:26px"><div class="live-plot" style="width:100%"></div></div>'

#: Runs once per chart. Values that arrive while a draw is pending are coalesced: the browser draws
#: the latest figure at its next frame and never queues stale ones. While the user holds the pointer
#: down on the chart (turning or zooming it) nothing is redrawn: a redraw in mid-drag would put the
#: view back where the figure says; on release plotly records the user's view, which the figures'
#: ``uirevision`` then keeps, and the latest figure is drawn.
_DRAW_JS = """
const box = element.querySelector('.live-plot');
let due = false, held = false;
const draw = () => {
  due = false;
  if (held) return;
  if (!window.Plotly) { due = true; setTimeout(draw, 50); return; }
  const text = props.value;
  if (!text) { window.Plotly.purge(box); return; }
  const fig = JSON.parse(text);
  window.Plotly.react(box, fig.data || [], fig.layout || {}, {responsive: true, displaylogo: false});
};
const later = () => { if (!due) { due = true; requestAnimationFrame(draw); } };
later();
watch('value', later);
box.addEventListener('pointerdown', () => { held = true; }, true);
const release = () => { if (held) { held = false; later(); } };
window.addEventListener('pointerup', release, true);
window.addEventListener('pointercancel', release, true);
let width = 0;  // follow the panel's width only: the chart sets its own height
new ResizeObserver(() => {
  const w = element.clientWidth;
  if (w !== width && window.Plotly && box.data) { width = w; window.Plotly.Plots.resize(box); }
}).observe(element);
"""


def live_plot(figure: Any = None, **kwargs: Any) -> gr.HTML:
    """A page component that shows a plotly figure and redraws it in place when its value changes.
    Its values are figures' JSON: pass every figure through :func:`figure_value` on its way out."""
    return gr.HTML(figure_value(figure), html_template=_TEMPLATE,
                   js_on_load=_DRAW_JS, head=f'<script src="gradio_api/file={PLOTLY_JS}"></script>',
                   container=True, show_label=True, **kwargs)


def figure_value(figure: Any) -> str | None:
    """A plotly figure as a live plot's value (None stays None: nothing drawn)."""
    return None if figure is None else figure.to_json()


def serve_plotly_js() -> None:
    """Let the server hand out plotly.js (call before launching)."""
    gr.set_static_paths([PLOTLY_JS])
