"""Plain data -> plotly figures and uint8 images. Returns figures, never shows them.

Figures are plain JSON-ready dicts in plotly's figure format (:class:`Figure`), so this module
needs no plotly at all on the hot path and stays importable on machines without it. Figures
carry a fixed ``uirevision`` so the browser keeps the user's rotation and zoom when a newer
figure replaces an older one.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from .methods.base import MeshData, PointData, Snapshot
from .metrics import LIVE, Metric

#: Most points drawn per line in the loss chart (longer histories are thinned evenly).
MAX_LINE_POINTS = 600
#: Most points drawn in a point cloud (target points, density voxels, splats). Each scene update costs
#: the browser's main thread time in proportion (a software-WebGL browser: about a second at 20,000),
#: and a busy main thread delays everything else the page shows, Stop's answer included.
MAX_CLOUD_POINTS = 8_000

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


class Figure(dict):
    """A plotly figure as plain JSON-ready data: ``{"data": [...], "layout": {...}}``.

    Building plotly's ``go.Figure`` validates every property in Python, which costs ~50-90 ms per
    chart: enough, at the page's refresh rate, to take CPU and the GIL from the optimisation. This
    dict is what plotly.js receives anyway. ``gr.Plot`` accepts it (it calls ``to_json()``).
    """

    def to_json(self) -> str:
        return json.dumps(self, separators=(",", ":"), default=_jsonable)

    @property
    def data(self) -> list[dict]:
        return self["data"]

    @property
    def layout(self) -> dict:
        return self["layout"]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _thin(rows: Sequence[dict], limit: int = MAX_LINE_POINTS) -> Sequence[dict]:
    if len(rows) <= limit:
        return rows
    idx = np.linspace(0, len(rows) - 1, limit).round().astype(int)
    return [rows[i] for i in idx]


_AXIS = dict(gridcolor="#eaeaea", zerolinecolor="#d0d0d0", linecolor="#bbb", automargin=True)


def _base_layout(title: str, height: int) -> dict[str, Any]:
    return dict(title=dict(text=title, x=0.02, font=dict(size=14)), height=height,
                margin=dict(l=50, r=10, t=40, b=40), paper_bgcolor="white", plot_bgcolor="white",
                font=dict(family="sans-serif", size=12, color="#2a3f5f"), uirevision="keep",
                xaxis=dict(title=dict(text="iteration"), **_AXIS), yaxis=dict(**_AXIS),
                legend=dict(orientation="h", x=1, xanchor="right", y=1.0, yanchor="bottom", font=dict(size=10)))


def _note(text: str) -> dict[str, Any]:
    return dict(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font=dict(color="#888"))


def loss_figure(history: Sequence[dict], events: Sequence[dict] = (), overlays: Sequence[tuple[str, Sequence[dict]]] = (),
                height: int = 300) -> Figure:
    """Loss terms and total against iteration, log scale; live edits as dotted vertical lines.

    `overlays` are (label, history) pairs of earlier runs, drawn as faint total-loss lines.
    """
    rows = _thin(history)
    keys = [k for k in (rows[0] if rows else {}) if k not in ("iteration", "time")]
    keys = [k for k in keys if k != "total"] + (["total"] if "total" in keys else [])
    its = [r["iteration"] for r in rows]
    data = []
    for i, key in enumerate(keys):
        is_total = key == "total"
        data.append(dict(type="scatter", x=its, y=[max(r[key], 1e-12) for r in rows], mode="lines", name=key,
                         line=dict(width=3 if is_total else 1.5, color="#222" if is_total else PALETTE[i % len(PALETTE)])))
    for label, past in overlays:
        past_rows = _thin(past)
        if past_rows and "total" in past_rows[0]:
            data.append(dict(type="scatter", x=[r["iteration"] for r in past_rows],
                             y=[max(r["total"], 1e-12) for r in past_rows], mode="lines", name=f"{label} total",
                             opacity=0.55, line=dict(width=2, dash="dash")))
    layout = _base_layout("Loss", height)
    layout["yaxis"]["type"] = "log"
    layout["shapes"] = [dict(type="line", x0=ev["iteration"], x1=ev["iteration"], y0=0, y1=1, yref="paper",
                             line=dict(color="#888", dash="dot", width=1)) for ev in events]
    layout["annotations"] = [dict(x=ev["iteration"], y=1, yref="paper", text=f"{ev['name']}={ev['value']:.3g}",
                                  showarrow=False, textangle=-90, xanchor="left", yanchor="top", font=dict(size=10))
                             for ev in events]
    if not rows and not overlays:
        layout["annotations"].append(_note("Press Run to start"))
    return Figure(data=data, layout=layout)


def metrics_figure(metric_history: Sequence[dict], metrics: dict[str, Metric], live_note: str = "",
                   height: int = 300) -> Figure:
    """Held-out quality against iteration, one y axis per measure (up to two), the legend below.

    The live estimate (keys ``live_<metric>``) is a line, labelled with what it measures; the full
    score (the metric's own key, at the end of a run or when asked for) is a large marker on it.
    """
    keys = list(metrics)[:2]
    data = []
    for i, key in enumerate(keys):
        m, axis, color = metrics[key], "y" if i == 0 else "y2", PALETTE[(i + 3) % len(PALETTE)]
        live = _thin([r for r in metric_history if LIVE + key in r])
        full = [r for r in metric_history if key in r]
        if live:
            data.append(dict(type="scatter", x=[r["iteration"] for r in live], y=[r[LIVE + key] for r in live],
                             mode="lines+markers", yaxis=axis,
                             name=f"{m.short} (live estimate{': ' + live_note if live_note and i == 0 else ''})",
                             line=dict(color=color), marker=dict(size=4)))
        if full:
            data.append(dict(type="scatter", x=[r["iteration"] for r in full], y=[r[key] for r in full],
                             mode="markers", name=f"{m.short} (full score)", yaxis=axis,
                             marker=dict(color=color, size=11, symbol="diamond", line=dict(color="#222", width=1))))
    layout = _base_layout("", height)  # the panel's label names it; the long legend goes below
    layout["margin"] = dict(l=50, r=55 if len(keys) > 1 else 10, t=14, b=110)
    layout["xaxis"]["title"] = dict(text="")  # iterations, as on the loss chart beside it: room for the legend
    layout["legend"] = dict(orientation="h", x=0, xanchor="left", y=-0.18, yanchor="top", font=dict(size=10))
    if keys:
        first = metrics[keys[0]]
        layout["yaxis"]["title"] = dict(text=first.label)
        if first.log_axis:
            layout["yaxis"].update(type="log", dtick="D2")  # labels at 1, 2, 5: not every digit of a short range
    if len(keys) > 1:
        layout["yaxis2"] = dict(title=dict(text=metrics[keys[1]].label), overlaying="y", side="right", showgrid=False,
                               tickmode="auto")  # not synced to the left axis's grid (odd values)
    if not data:
        layout["annotations"] = [_note("Quality is measured while the run goes")]
    return Figure(data=data, layout=layout)


def _cap_index(n: int, limit: int) -> np.ndarray:
    """Indices of at most `limit` of `n` points (a fixed random subset, so successive frames agree)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, limit, replace=False))


def _rgb_strings(colors: np.ndarray) -> list[str]:
    c = (np.clip(colors, 0, 1) * 255).round().astype(int)
    return [f"rgb({r},{g},{b})" for r, g, b in c]


def _round(a: np.ndarray) -> np.ndarray:
    """Coordinates to 4 decimals (a tenth of a millimetre on a metre-sized object): a smaller payload."""
    return np.round(np.asarray(a, dtype=np.float64), 4)


def scene_figure(mesh: MeshData | None = None, points: PointData | None = None,
                 target_points: np.ndarray | None = None, title: str = "3D view", height: int = 460,
                 target_label: str = "target points", points_label: str = "density points") -> Figure:
    """The current mesh and/or point cloud, with the target's points for reference."""
    data = []
    if target_points is not None and len(target_points):
        tp = np.asarray(target_points)
        tp = _round(tp[_cap_index(len(tp), MAX_CLOUD_POINTS)])
        data.append(dict(type="scatter3d", x=tp[:, 0], y=tp[:, 1], z=tp[:, 2], mode="markers", name=target_label,
                         marker=dict(size=2, color="rgba(60,60,60,0.35)")))
    if mesh is not None:
        v, f = _round(mesh.verts), np.asarray(mesh.faces)
        trace: dict[str, Any] = dict(type="mesh3d", x=v[:, 0], y=v[:, 1], z=v[:, 2], i=f[:, 0], j=f[:, 1], k=f[:, 2],
                                     name="current mesh", flatshading=True, showlegend=True,
                                     lighting=dict(ambient=0.45, diffuse=0.8, specular=0.15, roughness=0.6),
                                     lightposition=dict(x=100, y=200, z=300))
        if mesh.colors is not None:
            trace["vertexcolor"] = _rgb_strings(mesh.colors)
        else:
            trace["color"] = "#4f8fd6"
        data.append(trace)
    if points is not None and len(points.xyz):
        idx = _cap_index(len(points.xyz), MAX_CLOUD_POINTS)
        xyz, col = _round(points.xyz[idx]), None if points.colors is None else points.colors[idx]
        marker: dict[str, Any] = dict(size=2.5, color=_rgb_strings(col) if col is not None else "#d62728")
        if points.sizes is not None:  # splats: marker size (pixels) grows with the radius (world units)
            marker["size"] = np.clip(np.asarray(points.sizes)[idx] * 120.0, 1.0, 12.0).round(1)
        data.append(dict(type="scatter3d", x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="markers",
                         name=points_label, marker=marker))
    axis = dict(range=[-1.3, 1.3], showbackground=False, title=dict(text=""), showticklabels=False, showgrid=True,
                gridcolor="#eee", zeroline=False)
    layout = dict(
        title=dict(text=title, x=0.02, font=dict(size=14)), height=height, margin=dict(l=0, r=0, t=36, b=0),
        paper_bgcolor="white", uirevision="keep", showlegend=True, legend=dict(orientation="h", y=0.02),
        scene=dict(xaxis=axis, yaxis=axis, zaxis=axis, aspectmode="cube",
                   camera=dict(eye=dict(x=1.2, y=0.6, z=1.6), up=dict(x=0, y=1, z=0))),
    )
    return Figure(data=data, layout=layout)


def snapshot_figure(snap: Snapshot | None, target_points: np.ndarray | None, title: str = "3D view",
                    target_label: str = "target points", points_label: str = "density points") -> Figure:
    labels = dict(target_label=target_label, points_label=points_label)
    if snap is None:
        return scene_figure(target_points=target_points, title=title, **labels)
    return scene_figure(mesh=snap.mesh, points=snap.points, target_points=target_points,
                        title=f"{title} - iteration {snap.iteration}", **labels)
