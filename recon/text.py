"""The words the page and the command line show: the status line, durations, live-edit notes, and
escaping of user text (file names, messages) before it goes into Markdown."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

from .metrics import LIVE, Metric

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


def md_escape(text: str) -> str:
    """`text` shown literally in Markdown: no links, images, HTML or emphasis from user input."""
    return _MARKDOWN.sub(r"\\\1", str(text))


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def human_seconds(s: float) -> str:
    """A duration as a person says it: "40 s", "3 min", "2.5 h", "12 days"."""
    if s < 90:
        return f"{max(1, round(s))} s"
    if s < 90 * 60:
        return f"{round(s / 60)} min"
    if s < 48 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.0f} days"


def edit_note(events: list[dict[str, Any]], labels: dict[str, str] | None = None) -> str:
    """Live edits in words: "Chamfer weight → 3 at iteration 40; ..."."""
    labels = labels or {}
    parts = []
    for e in events:
        value = f"{e['value']:.4g}" if isinstance(e["value"], (int, float)) else str(e["value"])
        parts.append(f"{labels.get(e['name'], e['name'])} → {value} at iteration {e['iteration']}")
    return "; ".join(parts)


def status_text(view: Any, metrics: dict[str, Metric], device: str, capacity: int) -> str:
    """The status line of a :class:`recon.runner.RunView`: state, progress, speed, timing, device;
    then the latest losses and quality; then the run's message."""
    if view.state == "queued":
        pos = view.queue_position
        if not pos:
            return f"queued · starting · device {device}"
        return (f"waiting · position {pos} in line for a free slot ({capacity} run{'s' * (capacity > 1)} at a "
                f"time on this server) · device {device}")
    rate = f"{1 / view.step_s:.2f} it/s" if view.step_s else "- it/s"
    lines = [f"{view.state} · iteration {view.iteration} / {view.total} · {rate} · elapsed "
             f"{fmt_seconds(view.elapsed)} · ETA {fmt_seconds(view.eta)} · device {device}"]
    parts = []
    if view.last_loss.get("total") is not None:
        parts.append(f"loss {view.last_loss['total']:.5g}")
    for key, m in metrics.items():
        if key in view.final:
            parts.append(f"{m.label} {view.final[key]:.4g}")
        elif LIVE + key in view.last_live:
            parts.append(f"{m.label} ~{view.last_live[LIVE + key]:.4g} (live)")
    if view.scoring:
        parts.append("scoring the result on the held-out views...")
    if parts:
        lines.append(" · ".join(parts))
    if view.message:
        lines.append(view.message)
    return "\n".join(lines)


def display_name(filename: str, limit: int = 60) -> str:
    """The uploaded file's name as messages show it: no directories, no control characters, at most
    `limit` characters (the extension kept); never empty."""
    name = unicodedata.normalize("NFC", str(filename)).replace("\\", "/").rsplit("/", 1)[-1]
    name = " ".join("".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in name).split())
    if len(name) > limit:
        ext = Path(name).suffix if len(Path(name).suffix) <= 8 else ""
        name = name[: limit - 1 - len(ext)] + "…" + ext
    return name or "(unnamed file)"


def safe_name(filename: str) -> str:
    """A display/file-name-safe stem: no path, only letters, digits, '-', '_'; never empty."""
    stem = Path(str(filename).replace("\\", "/")).name
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()  # "tëapot" -> "teapot"
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:48]
    return stem or "upload"
