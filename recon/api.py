"""The public API in plain Python: run a config (:func:`fit`) and price one (:func:`estimate`).

Both take the config JSON that the page downloads and ``python -m recon fit --config`` reads
(``format``, ``method``, ``target``, ``settings``, ``seed``); :func:`fit` also an optional mesh file
for a config whose target was an uploaded mesh. Each call has a session of its own, released when
the call ends or is cancelled. ``page.py`` serves them as ``/fit`` and ``/estimate``, turning an
:class:`ApiError` into a Gradio error event.
"""

from __future__ import annotations

from typing import Any, Iterator

from .config import ConfigError, parse_config
from .params import to_values
from .server import GB, Server
from .targets import UPLOADED_MESH
from .workbench import Workbench


class ApiError(ValueError):
    """A call that cannot be served; the message says why and what to change."""


def _request(wb: Workbench, config_text: str, mesh_path: str | None) -> tuple[str, str, dict[str, Any], list[str]]:
    """(method, target choice, knob values, notes) of an API call, or ApiError."""
    if not isinstance(config_text, str) or not config_text.strip():
        raise ApiError("Pass the run's config as JSON text: {\"method\": \"deform\", \"target\": \"cow\", "
                       "\"settings\": {...}}.")
    try:
        loaded = parse_config(config_text)
    except ConfigError as exc:
        raise ApiError(f"Bad config: {exc}") from None
    target = loaded.target or "cow"
    if mesh_path:
        choice, _ = wb.targets.upload(mesh_path)
        target = choice
    elif target not in wb.targets.names() or target.startswith("uploaded"):
        raise ApiError(f"Unknown target {target!r}: use a built-in one ({', '.join(wb.targets.names()[:-2])}), or "
                       "pass the mesh file with the config.")
    return loaded.method, target, to_values(loaded.cfg), loaded.messages


def estimate(server: Server, config_text: str) -> dict[str, Any]:
    """The price of a config on this server: memory_gb, seconds, fits, message (and what it is)."""
    wb = Workbench(server)
    try:
        method, target, values, notes = _request(wb, config_text, None)
        try:
            cls, _, cfg, adjusted = wb.prepare(method, target, values)
        except ValueError as exc:
            raise ApiError(str(exc)) from None
        est = cls.estimate(cfg, server.device)
        fits = server.fits(est)
        message = (f"{est.describe()} on {server.device_name}: fits this server's limits ({server.describe_limits()})"
                   if fits else wb.refusal(cls, cfg, est))
        return {"method": method, "target": target, "memory_gb": round(est.memory_bytes / GB, 3),
                "seconds": round(est.total_seconds, 1), "seconds_per_step": est.seconds_per_step,
                "iterations": cfg.iterations, "fits": fits, "message": message, "adjusted": notes + adjusted}
    finally:
        wb.close()


def progress(wb: Workbench, notes: list[str] | tuple = ()) -> dict[str, Any]:
    """A run's progress as plain JSON: state, iteration, losses, quality, seconds left, message, and the
    settings that were adjusted (`notes` from reading the config, then the run's own)."""
    view = wb.run.poll()
    return {"state": view.state, "iteration": view.iteration, "total": view.total, "losses": view.last_loss,
            "live_metrics": view.last_live, "final_metrics": view.final,
            "seconds_left": None if view.eta is None else round(view.eta, 1),
            "elapsed": round(view.elapsed, 2), "message": view.message,
            "adjusted": [*notes, *wb.adjusted]}


def fit(server: Server, config_text: str, mesh_path: str | None = None) -> Iterator[tuple[dict, list[str] | None]]:
    """Run a config: yields (progress, None) while it goes, then (final progress, the written files).

    Refused (ApiError, before any work) when the config is bad or its price exceeds this server's
    limits. Closing the generator (a cancelled call) stops the run and releases everything.
    """
    wb = Workbench(server)
    try:
        try:
            method, target, values, notes = _request(wb, config_text, mesh_path)
        except ValueError as exc:  # AssetError, DatasetError: a bad mesh file
            raise ApiError(str(exc)) from None
        update = wb.start(method, target, values)
        if update.done:  # refused or failed before starting: say why as an error
            raise ApiError(update.status.split(" · ", 1)[-1])
        while not update.done:
            yield progress(wb, notes), None
            update = wb.tick()
        files, written = wb.export()
        extras, more = wb.export(extras=True)
        final = {**progress(wb, notes), "notes": written + more}
        files.pop("viewer_ply", None)  # the page's display copy, not a result
        yield final, [str(p) for p in {**files, **extras}.values()]
    finally:
        wb.close()


__all__ = ["ApiError", "UPLOADED_MESH", "estimate", "fit", "progress"]
