"""Results -> files: meshes (GLB, OBJ), density grids (NPZ), videos (MP4, GIF), history (CSV), config (JSON).

Everything here works from plain data (:class:`~recon.methods.base.MeshData`, numpy arrays, history
rows), so neither the page nor the CLI needs anything but :func:`export_run`, and tests need no
gradio. File names are built from :func:`recon.assets.safe_name` stems only, never from raw input.

The config JSON (:func:`config_dict` / :func:`parse_config`) is the reproducible description of a
run: method, target, every knob, seed, device and library versions. Loading it validates each
field and raises :class:`ConfigError` with a message meant for the person who wrote the file.
"""

from __future__ import annotations

import csv
import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .assets import safe_name
from .methods.base import MeshData, Snapshot
from .params import from_values, knobs, to_values

CONFIG_FORMAT = "recon-config"
CONFIG_VERSION = 1
#: Camera of the turntable and the timelapse frames (the tutorials' distance).
CAMERA_DIST = 2.7
CAMERA_ELEV = 15.0
TIMELAPSE_AZIM = 30.0
VIDEO_FPS = 12


class ConfigError(ValueError):
    """A config file that cannot be used; the message says what is wrong with it."""


# --- meshes -------------------------------------------------------------------------------------


def transfer_colors(verts: np.ndarray, asset: Any | None) -> np.ndarray:
    """Vertex colours for a mesh without its own: each vertex takes the colour of the nearest target vertex.

    Without a target, a colour ramp over the mesh's own positions. (V, 3) float32 in [0, 1].
    """
    v = torch.as_tensor(verts, dtype=torch.float32)
    if asset is None:
        from .assets import colour_ramp

        return colour_ramp(v).numpy()
    nearest = torch.cdist(v, asset.verts.float()).argmin(1) if v.shape[0] * asset.verts.shape[0] <= 4e7 else None
    if nearest is None:  # very large meshes: a chunked search keeps memory bounded
        nearest = torch.cat([torch.cdist(c, asset.verts.float()).argmin(1) for c in v.split(2048)])
    return asset.vert_colors[nearest].numpy().astype(np.float32)


def _rgba8(colors: np.ndarray) -> np.ndarray:
    rgb = (np.clip(colors, 0.0, 1.0) * 255).round().astype(np.uint8)
    return np.concatenate([rgb, np.full((rgb.shape[0], 1), 255, np.uint8)], axis=1)


def write_glb(mesh: MeshData, path: str | Path) -> Path:
    """Binary glTF with per-vertex colours (COLOR_0), vertex order kept."""
    import trimesh

    colors = mesh.colors if mesh.colors is not None else np.full((len(mesh.verts), 3), 0.7, np.float32)
    tm = trimesh.Trimesh(vertices=np.asarray(mesh.verts, np.float64), faces=np.asarray(mesh.faces, np.int64),
                         vertex_colors=_rgba8(colors), process=False)
    path = Path(path)
    path.write_bytes(tm.export(file_type="glb"))
    return path


def write_obj(mesh: MeshData, path: str | Path) -> Path:
    """Wavefront OBJ with the common ``v x y z r g b`` vertex-colour extension (read by MeshLab, Blender, trimesh)."""
    path = Path(path)
    verts = np.asarray(mesh.verts, np.float64)
    faces = np.asarray(mesh.faces, np.int64) + 1
    lines = ["# recon export"]
    if mesh.colors is not None:
        cols = np.clip(np.asarray(mesh.colors, np.float64), 0, 1)
        lines += [f"v {x:.6f} {y:.6f} {z:.6f} {r:.4f} {g:.4f} {b:.4f}" for (x, y, z), (r, g, b) in zip(verts, cols)]
    else:
        lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    lines += [f"f {a} {b} {c}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- density fields -----------------------------------------------------------------------------


def auto_threshold(density: np.ndarray) -> float:
    """Half the largest density: 0.5 for the volume tutorial's sigmoid densities in [0, 1]."""
    top = float(np.nanmax(density)) if density.size else 0.0
    return 0.5 * top if top > 0 else 0.0


def density_mesh(density: np.ndarray, colors: np.ndarray | None, extent: float,
                 threshold: float | None = None) -> MeshData:
    """The surface ``density == threshold`` by marching cubes, coloured from the colour grid.

    Grid convention (that of ``Method.density_grid`` in the volume method): ``density[i, j, k]`` is
    the cell centred at ``(x_i, y_j, z_k)`` with ``x_i = (i + 0.5) / D * extent - extent / 2``, a cube
    of side `extent` centred at the origin. Faces are wound so that normals point out of the dense
    region. Raises ValueError when no surface crosses the threshold.
    """
    from pytorch3d.ops.marching_cubes import marching_cubes

    dens = torch.as_tensor(np.asarray(density, np.float32))  # (X, Y, Z)
    if dens.ndim != 3 or min(dens.shape) < 2:
        raise ValueError(f"a density grid must be 3-D with at least 2 cells a side, not {tuple(dens.shape)}")
    level = auto_threshold(density) if threshold is None else float(threshold)
    lo, hi = float(dens.min()), float(dens.max())
    if not lo < level < hi:
        raise ValueError(f"no surface at threshold {level:.4g}: the densities lie in [{lo:.4g}, {hi:.4g}]")
    # marching_cubes reads its volume as (z, y, x) and returns (x, y, z) vertices in index units.
    verts_l, faces_l = marching_cubes(dens.permute(2, 1, 0)[None], level, return_local_coords=False)
    idx, faces = verts_l[0], faces_l[0]  # (V, 3) fractional cell indices (x, y, z); (F, 3)
    if faces.shape[0] == 0:
        raise ValueError(f"no surface at threshold {level:.4g}")
    size = torch.tensor(dens.shape, dtype=torch.float32)  # (3,) cells along x, y, z
    verts = (idx + 0.5) / size * extent - extent / 2  # (V, 3) world
    v0, v1, v2 = (verts[faces[:, c]] for c in range(3))
    if torch.linalg.cross(v1, v2).mul(v0).sum() < 0:  # negative enclosed volume: normals point inwards
        faces = faces[:, [0, 2, 1]]
    rgb = None
    if colors is not None:
        grid = torch.as_tensor(np.asarray(colors, np.float32)).permute(3, 2, 1, 0)[None]  # (1, 3, Z, Y, X)
        at = ((idx + 0.5) / size * 2 - 1)[None, None, None]  # (1, 1, 1, V, 3) in grid_sample's (x, y, z)
        rgb = torch.nn.functional.grid_sample(grid, at, mode="bilinear", padding_mode="border",
                                              align_corners=False)[0, :, 0, 0].T  # (V, 3)
        rgb = rgb.clamp(0, 1).numpy().astype(np.float32)
    return MeshData(verts=verts.numpy().astype(np.float32), faces=faces.numpy().astype(np.int64), colors=rgb)


def write_npz(density: np.ndarray, colors: np.ndarray | None, extent: float, path: str | Path) -> Path:
    path = Path(path)
    arrays = dict(density=np.asarray(density, np.float32), extent=np.float32(extent),
                  layout=np.array("density[i, j, k] is the cell centred at (x_i, y_j, z_k), "
                                  "x_i = (i + 0.5) / D * extent - extent / 2"))
    if colors is not None:
        arrays["colors"] = np.asarray(colors, np.float32)
    np.savez_compressed(path, **arrays)
    return path


# --- rendering (fixed cameras, for turntables and timelapses of meshes) ------------------------


def render_meshes(meshes: Sequence[MeshData], azim: float = TIMELAPSE_AZIM, elev: float = CAMERA_ELEV,
                  size: int = 128, dist: float = CAMERA_DIST, chunk: int = 12) -> list[np.ndarray]:
    """uint8 (size, size, 3) Phong renders of each mesh from one fixed camera (white background).

    The timelapse's renderer: a batch of different meshes seen from the same place, through the same
    :func:`recon.render.phong_frames` as the turntables.
    """
    from pytorch3d.renderer import TexturesVertex, look_at_view_transform
    from pytorch3d.structures import Meshes

    from .render import phong_frames

    if not meshes:
        return []
    R, T = look_at_view_transform(dist=dist, elev=elev, azim=azim)  # (1, 3, 3), (1, 3)
    cols = [torch.as_tensor(m.colors if m.colors is not None else np.full((len(m.verts), 3), 0.7), dtype=torch.float32)
            for m in meshes]
    batch = Meshes(verts=[torch.as_tensor(m.verts, dtype=torch.float32) for m in meshes],
                   faces=[torch.as_tensor(m.faces, dtype=torch.int64) for m in meshes],
                   textures=TexturesVertex(verts_features=cols))
    n = len(meshes)
    return phong_frames(batch, R.expand(n, 3, 3), T.expand(n, 3), size=size, chunk=chunk)


def mesh_turntable(mesh: MeshData, frames: int = 36, size: int = 128) -> list[np.ndarray]:
    from .render import mesh_turntable as turntable

    colors = torch.as_tensor(mesh.colors, dtype=torch.float32) if mesh.colors is not None else None
    return turntable(torch.as_tensor(mesh.verts, dtype=torch.float32), torch.as_tensor(mesh.faces, dtype=torch.int64),
                     colors, frames=frames, size=size, dist=CAMERA_DIST, elev=CAMERA_ELEV)


def timelapse_frames(snaps: Sequence[Snapshot], size: int = 128, colors: np.ndarray | None = None) -> list[np.ndarray]:
    """One frame per captured snapshot: its mesh from a fixed camera, else its "render" image.

    `colors` colour meshes that carry none (when their vertex count matches).
    """
    out: list[np.ndarray] = []
    pending: list[MeshData] = []

    def flush() -> None:
        if pending:
            out.extend(render_meshes(pending, size=size))
            pending.clear()

    for snap in snaps:
        if snap.mesh is not None and len(snap.mesh.faces):
            m = snap.mesh
            if m.colors is None and colors is not None and len(colors) == len(m.verts):
                m = MeshData(m.verts, m.faces, colors)
            pending.append(m)
        elif "render" in snap.images:
            flush()
            out.append(_fit(snap.images["render"], size))
    flush()
    return out


def _fit(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB image resized (nearest) to size x size, so every frame of a video matches."""
    from .vis import to_uint8

    img = np.asarray(img)
    if img.dtype != np.uint8:  # float images in [0, 1]
        img = to_uint8(img)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    img = img[..., :3]
    if img.shape[:2] != (size, size):
        ys = np.linspace(0, img.shape[0] - 1, size).round().astype(int)
        xs = np.linspace(0, img.shape[1] - 1, size).round().astype(int)
        img = img[ys][:, xs]
    return np.ascontiguousarray(img)


# --- videos -------------------------------------------------------------------------------------


def write_mp4(frames: Sequence[np.ndarray], path: str | Path, fps: int = VIDEO_FPS) -> Path:
    """H.264 MP4 through imageio-ffmpeg (yuv420p, so browsers play it)."""
    import imageio.v2 as imageio

    if not frames:
        raise ValueError("no frames to write")
    path = Path(path)
    with imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=7,
                            pixelformat="yuv420p", macro_block_size=16, ffmpeg_log_level="error") as writer:
        for f in frames:
            writer.append_data(np.asarray(f, np.uint8))
    return path


def write_gif(frames: Sequence[np.ndarray], path: str | Path, fps: int = VIDEO_FPS) -> Path:
    import imageio.v3 as iio

    if not frames:
        raise ValueError("no frames to write")
    path = Path(path)
    iio.imwrite(path, np.stack([np.asarray(f, np.uint8) for f in frames]), extension=".gif",
                duration=int(round(1000 / fps)), loop=0)
    return path


# --- history and config -------------------------------------------------------------------------


def history_rows(history: Sequence[dict], metric_history: Sequence[dict]) -> tuple[list[str], list[dict]]:
    """Loss rows and metric rows merged by iteration: (columns, rows); metrics blank where not evaluated."""
    loss_keys = list(dict.fromkeys(k for r in history for k in r if k not in ("iteration", "time")))
    metric_keys = list(dict.fromkeys(k for r in metric_history for k in r if k not in ("iteration", "time")))
    by_it: dict[int, dict] = {}
    for r in metric_history:
        by_it.setdefault(int(r["iteration"]), {"iteration": int(r["iteration"]), "time": r.get("time")}).update(
            {k: r[k] for k in metric_keys if k in r})
    for r in history:
        by_it.setdefault(int(r["iteration"]), {"iteration": int(r["iteration"])}).update(r)
    return ["iteration", "time", *loss_keys, *metric_keys], [by_it[i] for i in sorted(by_it)]


def write_history_csv(history: Sequence[dict], metric_history: Sequence[dict], path: str | Path) -> Path:
    path = Path(path)
    columns, rows = history_rows(history, metric_history)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r[k]) for k in columns})
    return path


def versions() -> dict[str, str]:
    from . import __version__

    try:
        import pytorch3d

        p3d = pytorch3d.__version__
    except Exception:  # pragma: no cover - pytorch3d is a hard dependency
        p3d = "unknown"
    return {"recon": __version__, "torch": torch.__version__, "pytorch3d": p3d, "numpy": np.__version__,
            "python": platform.python_version()}


def config_dict(method: str, target: str, cfg: Any, device: Any = "cpu", target_source: str = "builtin",
                **extra: Any) -> dict[str, Any]:
    """The reproducible description of a run, as plain JSON-able data.

    `target_source` is "builtin" (target is a built-in name), "file" (a path) or "upload" (the
    page's uploaded mesh; target is its display name).
    """
    settings = {k: (v.item() if hasattr(v, "item") else v) for k, v in to_values(cfg).items()}
    out = {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, "method": method, "target": target,
           "target_source": target_source, "settings": settings, "seed": settings.get("seed"),
           "device": str(device), "versions": versions()}
    out.update(extra)
    return out


def write_config(config: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")
    return path


@dataclass
class LoadedConfig:
    method: str
    target: str | None
    target_source: str
    cfg: Any
    messages: list[str]  # values that were clamped or settings that were ignored
    seed: int | None = None


def parse_config(data: str | bytes | dict, strict: bool = False) -> LoadedConfig:
    """A config JSON (text or parsed) -> method, target and a validated config.

    Raises :class:`ConfigError` for anything structural (not JSON, not an object, no or unknown
    method, settings not an object). Out-of-range values are clamped and reported in ``messages``;
    unknown settings are reported too, or raise with ``strict=True``.
    """
    from .methods import METHODS, get_method

    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"the config is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError("the config must be a JSON object with at least a \"method\" field")
    if data.get("format", CONFIG_FORMAT) != CONFIG_FORMAT:
        raise ConfigError(f"not a recon config (format {data.get('format')!r})")
    version = data.get("version", CONFIG_VERSION)
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise ConfigError(f"config version {version!r} is newer than this recon understands ({CONFIG_VERSION})")
    method = data.get("method")
    if not isinstance(method, str) or method not in METHODS:
        raise ConfigError(f"unknown or missing method {method!r}; methods are {', '.join(METHODS)}")
    target = data.get("target")
    if target is not None and not isinstance(target, str):
        raise ConfigError(f"\"target\" must be a string, not {type(target).__name__}")
    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        raise ConfigError("\"settings\" must be a JSON object of setting name -> value")
    cls = get_method(method)
    names = {k.name for k in knobs(cls.Config)}
    unknown = [n for n in settings if n not in names]
    if unknown and strict:
        raise ConfigError(f"unknown setting(s) {', '.join(map(repr, unknown))} for {method}; "
                          f"settings are {', '.join(sorted(names))}")
    settings = dict(settings)
    seed = data.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"\"seed\" must be an integer, not {seed!r}")
        if "seed" in names:
            settings.setdefault("seed", seed)
    cfg, messages = from_values(cls.Config, settings)
    return LoadedConfig(method=method, target=target, target_source=str(data.get("target_source", "builtin")),
                        cfg=cfg, messages=messages, seed=seed)


def load_config(path: str | Path, strict: bool = False) -> LoadedConfig:
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {Path(path).name!r} ({exc.strerror or exc})") from None
    if len(text) > 1_000_000:
        raise ConfigError("the config file is larger than 1 MB; that is not a recon config")
    return parse_config(text, strict=strict)


# --- everything at once -------------------------------------------------------------------------

#: File kinds in the order the page lists them.
KINDS = ("glb", "obj", "npz", "turntable_mp4", "turntable_gif", "timelapse_mp4", "history_csv", "config_json")


def export_result(out_dir: str | Path, stem: str, *, mesh: MeshData | None = None,
                  grid: tuple[np.ndarray, np.ndarray, float] | None = None, turntable: Sequence[np.ndarray] = (),
                  timelapse: Sequence[np.ndarray] = (), history: Sequence[dict] = (),
                  metric_history: Sequence[dict] = (), config: dict | None = None,
                  fps: int = VIDEO_FPS) -> dict[str, Path]:
    """Write whatever is given into `out_dir` as ``<stem>.<ext>`` files; returns kind -> path (see KINDS)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = safe_name(stem)
    files: dict[str, Path] = {}
    if mesh is not None and len(mesh.faces):
        files["glb"] = write_glb(mesh, out / f"{stem}.glb")
        files["obj"] = write_obj(mesh, out / f"{stem}.obj")
    if grid is not None:
        files["npz"] = write_npz(*grid, out / f"{stem}_density.npz")
    if len(turntable):
        files["turntable_mp4"] = write_mp4(turntable, out / f"{stem}_turntable.mp4", fps)
        files["turntable_gif"] = write_gif(turntable, out / f"{stem}_turntable.gif", fps)
    if len(timelapse):
        files["timelapse_mp4"] = write_mp4(timelapse, out / f"{stem}_timelapse.mp4", fps)
    if history or metric_history:
        files["history_csv"] = write_history_csv(history, metric_history, out / f"{stem}_history.csv")
    if config is not None:
        files["config_json"] = write_config(config, out / f"{stem}_config.json")
    return {k: files[k] for k in KINDS if k in files}


def export_run(run: Any, out_dir: str | Path, target: str, target_source: str = "builtin", *,
               threshold: float | None = None, grid_resolution: int = 64, frames: int = 36, size: int = 128,
               notes: list[str] | None = None) -> dict[str, Path]:
    """Every file of a finished (done or stopped) :class:`~recon.runner.Run` into `out_dir`.

    Uses the run's method through ``run.with_result`` (never during the step loop). A failed run
    still gets its history and config. Problems with single files are appended to `notes`.
    """
    notes = notes if notes is not None else []
    method = run.method_cls.name
    stem = f"{method}_{safe_name(target)}"
    extra: dict[str, Any] = {"iterations_run": run.iteration, "state": run.state}
    events = [dict(e) for e in getattr(run, "events", [])]
    if events:  # "settings" are the values it ended with; these say when each one changed
        start = getattr(run, "initial_cfg", None)
        if start is not None:
            extra["start_settings"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in to_values(start).items()}
        extra["live_edits"] = [{"iteration": int(e["iteration"]), "name": e["name"],
                                "value": e["value"].item() if hasattr(e["value"], "item") else e["value"]}
                               for e in events]
    config = config_dict(method, target, run.cfg, run.device, target_source, **extra)
    mesh = grid = None
    turntable: list[np.ndarray] = []

    def collect(m: Any) -> None:
        nonlocal mesh, grid, turntable
        snap = m.snapshot()
        try:
            grid = m.density_grid(grid_resolution)
        except NotImplementedError:
            grid = None
        if grid is not None:
            try:
                mesh = density_mesh(*grid, threshold=threshold)
            except ValueError as exc:
                notes.append(f"No mesh extracted from the density field: {exc}.")
        elif snap.mesh is not None:
            mesh = snap.mesh
        if mesh is not None and mesh.colors is None:
            mesh = MeshData(mesh.verts, mesh.faces, transfer_colors(mesh.verts, run.asset))
        turntable = list(m.turntable(frames, size) or [])
        if not turntable and mesh is not None:
            turntable = mesh_turntable(mesh, frames, size)
        turntable = [_fit(f, size) for f in turntable]

    try:
        run.with_result(collect)
    except RuntimeError as exc:
        notes.append(f"Only the history and config were saved: {exc}.")
    colors = mesh.colors if mesh is not None and grid is None else None
    timelapse = timelapse_frames(list(getattr(run, "timelapse", [])), size=size, colors=colors)
    return export_result(out_dir, stem, mesh=mesh, grid=grid, turntable=turntable, timelapse=timelapse,
                         history=list(run.history), metric_history=list(run.metric_history), config=config)


def describe_files(files: dict[str, Path]) -> str:
    """One line per file: name and size."""
    def size(p: Path) -> str:
        n = p.stat().st_size
        return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{math.ceil(n / 1024)} kB"

    return "\n".join(f"{p.name} ({size(p)})" for p in files.values())


__all__ = ["ConfigError", "LoadedConfig", "config_dict", "density_mesh", "export_result", "export_run",
           "load_config", "mesh_turntable", "parse_config", "render_meshes", "timelapse_frames", "write_glb",
           "write_gif", "write_history_csv", "write_mp4", "write_npz", "write_obj"]
