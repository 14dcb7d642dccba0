"""Results -> files: meshes (GLB, OBJ), density grids (NPZ), splats (PLY), videos (MP4, GIF), history
(CSV), config (JSON).

Everything here works from plain data (:class:`~recon.methods.base.Result`, numpy arrays, history
rows read through :meth:`recon.runner.Run.poll`), so neither the page nor the CLI needs anything
but :func:`export_core` and :func:`export_extras`, and tests need no gradio. The core files (the
fitted model, history and config) take seconds; the videos may take longer and come second. File
names are built from :func:`recon.assets.safe_name` stems only, never from raw input.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from pytorch3d.ops.marching_cubes import marching_cubes
from pytorch3d.renderer import TexturesVertex, look_at_view_transform
from pytorch3d.structures import Meshes

from .assets import colour_ramp
from .config import config_dict, plain, write_config
from .images import square
from .methods.base import MeshData, Result, Snapshot
from .params import to_values
from .render import CAMERA_DIST, phong_frames
from .render import mesh_turntable as render_turntable
from .splatting import write_splat_ply
from .text import safe_name

#: Camera of the turntable and the timelapse frames.
CAMERA_ELEV = 15.0
TIMELAPSE_AZIM = 30.0
VIDEO_FPS = 12


# --- meshes -------------------------------------------------------------------------------------


def transfer_colors(verts: np.ndarray, asset: Any | None) -> np.ndarray:
    """Vertex colours for a mesh without its own: each vertex takes the colour of the nearest target vertex.

    Without a target, a colour ramp over the mesh's own positions. (V, 3) float32 in [0, 1].
    """
    v = torch.as_tensor(verts, dtype=torch.float32)
    if asset is None or not hasattr(asset, "vert_colors"):  # no target mesh (e.g. a dataset): a ramp
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
    colors = torch.as_tensor(mesh.colors, dtype=torch.float32) if mesh.colors is not None else None
    return render_turntable(torch.as_tensor(mesh.verts, dtype=torch.float32), torch.as_tensor(mesh.faces, dtype=torch.int64),
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
            out.append(square(snap.images["render"], size))
    flush()
    return out


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


# --- a finished run ------------------------------------------------------------------------------

#: File kinds in the order the page lists them.
KINDS = ("glb", "obj", "splat_ply", "npz", "history_csv", "config_json", "turntable_mp4", "turntable_gif",
         "timelapse_mp4")


def write_points_glb(xyz: np.ndarray, colors: np.ndarray, path: str | Path) -> Path:
    """Binary glTF of a coloured point cloud (splat centres), for viewers that do not read splat PLYs."""
    import trimesh

    cloud = trimesh.PointCloud(np.asarray(xyz, np.float64), colors=_rgba8(colors))
    path = Path(path)
    path.write_bytes(trimesh.Scene(cloud).export(file_type="glb"))
    return path


def run_stem(run: Any, target: str) -> str:
    return f"{run.method_cls.name}_{safe_name(target)}"


def export_core(run: Any, out_dir: str | Path, target: str, target_source: str = "builtin", *,
                threshold: float | None = None, notes: list[str] | None = None) -> dict[str, Path]:
    """The fitted model (mesh, density grid or splats), the history and the config of a finished run:
    what a user downloads first (seconds). A failed run still gets its history and config; problems
    with single files are appended to `notes`."""
    notes = notes if notes is not None else []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = run_stem(run, target)
    view = run.poll()
    files: dict[str, Path] = {}
    try:
        result: Result = run.with_result(lambda m: m.result())
    except RuntimeError as exc:
        notes.append(f"Only the history and config were saved: {exc}.")
        result = Result()
    mesh = result.mesh
    if result.grid is not None:
        files["npz"] = write_npz(*result.grid, out / f"{stem}_density.npz")
        try:
            mesh = density_mesh(*result.grid, threshold=threshold)
        except ValueError as exc:
            notes.append(f"No mesh extracted from the density field: {exc}.")
    if mesh is not None and len(mesh.faces):
        if mesh.colors is None:
            mesh = MeshData(mesh.verts, mesh.faces, transfer_colors(mesh.verts, run.target))
        files["glb"] = write_glb(mesh, out / f"{stem}.glb")
        files["obj"] = write_obj(mesh, out / f"{stem}.obj")
    if result.splats is not None:
        sp = result.splats
        files["splat_ply"] = write_splat_ply(out / f"{stem}_splats.ply", sp["positions"], sp["colors"],
                                             sp["opacities"], sp["radii"])
        files["glb"] = write_points_glb(sp["positions"], sp["colors"], out / f"{stem}_points.glb")
    files["history_csv"] = write_history_csv(view.losses, view.metrics, out / f"{stem}_history.csv")
    extra: dict[str, Any] = {"iterations_run": view.iteration, "state": view.state,
                             "final_score": {k: plain(v) for k, v in view.final.items()}}
    if view.events:  # "settings" are the values it ended with; these say when each one changed
        extra["start_settings"] = {k: plain(v) for k, v in to_values(run.initial_cfg).items()}
        extra["live_edits"] = [{"iteration": int(e["iteration"]), "name": e["name"], "value": plain(e["value"])}
                               for e in view.events]
    config = config_dict(run.method_cls.name, target, run.cfg, run.device, target_source, **extra)
    files["config_json"] = write_config(config, out / f"{stem}_config.json")
    return {k: files[k] for k in KINDS if k in files}


def export_extras(run: Any, out_dir: str | Path, target: str, *, frames: int = 36, size: int = 128,
                  fps: int = VIDEO_FPS, notes: list[str] | None = None) -> dict[str, Path]:
    """The videos of a finished run: a turntable of the result (MP4 and GIF) and the optimisation timelapse."""
    notes = notes if notes is not None else []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = run_stem(run, target)

    def turntable(m: Any) -> list[np.ndarray]:
        shots = list(m.turntable(frames, size) or [])
        if not shots:
            mesh = m.result().mesh
            if mesh is not None:
                if mesh.colors is None:
                    mesh = MeshData(mesh.verts, mesh.faces, transfer_colors(mesh.verts, run.target))
                shots = mesh_turntable(mesh, frames, size)
        return [square(f, size) for f in shots]

    files: dict[str, Path] = {}
    try:
        shots = run.with_result(turntable)
    except RuntimeError:
        shots = []
    if shots:
        files["turntable_mp4"] = write_mp4(shots, out / f"{stem}_turntable.mp4", fps)
        files["turntable_gif"] = write_gif(shots, out / f"{stem}_turntable.gif", fps)
    snaps = list(run.timelapse)
    first_mesh = next((sn.mesh for sn in snaps if sn.mesh is not None), None)
    colors = None
    if first_mesh is not None and first_mesh.colors is None:  # deformation: colours from the target, once
        colors = transfer_colors(snaps[-1].mesh.verts, run.target) if snaps[-1].mesh is not None else None
    timelapse = timelapse_frames(snaps, size=size, colors=colors)
    if timelapse:
        files["timelapse_mp4"] = write_mp4(timelapse, out / f"{stem}_timelapse.mp4", fps)
    return files


def video_size(device: Any) -> tuple[int, int]:
    """(turntable frames, frame size in pixels) for a run on `device`: smaller on a CPU, where a
    ray-marched turntable costs seconds a frame at full size."""
    return (24, 96) if torch.device(device).type == "cpu" else (36, 128)


def export_run(run: Any, out_dir: str | Path, target: str, target_source: str = "builtin", *,
               threshold: float | None = None, frames: int = 36, size: int = 128,
               notes: list[str] | None = None) -> dict[str, Path]:
    """Every file of a finished run (:func:`export_core`, then :func:`export_extras`)."""
    files = export_core(run, out_dir, target, target_source, threshold=threshold, notes=notes)
    files.update(export_extras(run, out_dir, target, frames=frames, size=size, notes=notes))
    return {k: files[k] for k in KINDS if k in files}


def describe_files(files: dict[str, Path]) -> str:
    """One line per file: name and size."""
    def size(p: Path) -> str:
        n = p.stat().st_size
        return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{math.ceil(n / 1024)} kB"

    return "\n".join(f"{p.name} ({size(p)})" for p in files.values())


__all__ = ["density_mesh", "export_core", "export_extras", "export_run", "mesh_turntable", "render_meshes",
           "timelapse_frames", "video_size", "write_glb", "write_gif", "write_history_csv", "write_mp4", "write_npz",
           "write_obj"]
