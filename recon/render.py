"""Mesh rendering shared by the mesh methods and the target renders.

- :class:`TiledMeshRasterizer`: PyTorch3D's ``MeshRasterizer`` made fast on the CPU. PyTorch3D's
  coarse-to-fine rasteriser is CUDA-only (``bin_size > 0`` raises "NOT IMPLEMENTED" on the CPU), so
  on the CPU it falls back to naive rasterisation, which tests every face at every pixel: its cost
  grows as H x W x F. Here the image is cut into square tiles and PyTorch3D's own naive rasteriser
  runs once over all tiles, each tile seeing only the faces whose (blur-expanded) bounding box
  touches it. The output is the same Fragments (up to float rounding at pixel centres that sit
  exactly on an edge) and gradients flow through it as through ``MeshRasterizer``. On a GPU it is
  plain ``MeshRasterizer``.
- :func:`render_target`: the tutorials' target images of a mesh (hard-rasterised Phong RGB and soft
  silhouettes), with the one light and the one blur-radius formula every mesh renderer here uses.
- :func:`mesh_turntable`: frames of a mesh (vertex colours or plain shading) from cameras circling it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pytorch3d.renderer import (
    BlendParams,
    FoVPerspectiveCameras,
    HardPhongShader,
    MeshRasterizer,
    MeshRenderer,
    PointLights,
    RasterizationSettings,
    SoftPhongShader,
    SoftSilhouetteShader,
    TexturesVertex,
    look_at_view_transform,
)
from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
from pytorch3d.renderer.mesh.rasterizer import Fragments
from pytorch3d.structures import Meshes

from .images import to_uint8

#: Distance from the origin of every camera that looks at a target (the tutorials' 2.7): targets,
#: turntables and timelapses; a dataset's cameras are scaled to it.
CAMERA_DIST = 2.7
#: The tutorials' light: one point light in front of the object, for the targets and the fitted mesh.
TARGET_LIGHT = ((0.0, 0.0, -3.0),)


def blur_radius(sigma: float) -> float:
    """The soft rasteriser's blur radius for edge softness `sigma`: where the sigmoid of the squared
    distance falls to 1e-4, as in the tutorials."""
    return math.log(1.0 / 1e-4 - 1.0) * sigma


#: Tile edge in pixels for CPU rasterisation: at 128 px, 16 px tiles cut the naive rasteriser's
#: face tests ~40x while the per-tile overhead stays small (measured on the cow, see targets.py).
TILE = 16


def _tile_for(size: int, tile: int) -> int | None:
    """The largest tile edge <= `tile` that divides `size` (at least 8 px), else None (no tiling)."""
    for t in range(min(tile, size), 7, -1):
        if size % t == 0:
            return t if t < size else None
    return None


#: The work of one call of PyTorch3D's CPU rasteriser, in seconds of a 2-core CPU. Its C++ forward and
#: backward hold Python's GIL for the whole call, so one big call freezes the page's server thread (Stop,
#: Pause) for as long: the tiles are rasterised in groups of about this much work. Measured: the
#: forward costs ~30 ns per face-pixel pair, the backward ~9 us per pixel and face layer (K).
RASTER_CALL_S = 0.02
FORWARD_S, BACKWARD_S = 3e-8, 9e-6


def _tile_groups(counts: list[int], pixels: int, layers: int) -> list[tuple[int, int]]:
    """Runs [a, b) of consecutive tiles, each group about RASTER_CALL_S of work (all at once when
    `pixels` is 0: a GPU call releases the GIL, and work without gradients is kept whole)."""
    if not pixels:
        return [(0, len(counts))]
    groups, a, work = [], 0, 0.0
    for i, c in enumerate(counts):
        cost = pixels * (c * FORWARD_S + layers * BACKWARD_S)
        if work and work + cost > RASTER_CALL_S:
            groups.append((a, i))
            a, work = i, 0.0
        work += cost
    groups.append((a, len(counts)))
    return groups


def _rasterize_tiled(meshes_ndc: Meshes, image_size: int, tile: int, blur_radius: float, faces_per_pixel: int,
                     **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``rasterize_meshes`` of `meshes_ndc` (already in NDC), tile by tile; same outputs.

    Each tile's faces are moved by an affine map of x and y that takes the tile's NDC window onto
    [-1, 1]^2: barycentric coordinates and z are unchanged by it, squared distances scale by s^2
    (so the blur radius is scaled in, and the distances scaled back out).
    """
    device = meshes_ndc.device
    S, t = image_size, tile
    n_t = S // t
    s = S / t  # scale from full-image NDC to tile NDC
    face_verts = meshes_ndc.verts_packed()[meshes_ndc.faces_packed()]  # (F, 3, 3)
    face_mesh = meshes_ndc.faces_packed_to_mesh_idx()  # (F,)
    B = len(meshes_ndc)
    # PyTorch3D's NDC: +X left, +Y up; pixel (row r, col c) has its centre at
    # (1 - (2c + 1) / S, 1 - (2r + 1) / S). Tile (i, j) covers rows i*t.. and cols j*t..
    centres = 1.0 - (2.0 * torch.arange(n_t, device=device) * t + t) / S  # (n_t,) tile centres
    half = t / S  # half the tile's extent in NDC
    pad = math.sqrt(max(blur_radius, 0.0)) + 2.0 / S  # the rasteriser's bbox expansion, plus a pixel of slack
    with torch.no_grad():
        xy = face_verts[..., :2].detach()
        lo, hi = xy.min(1).values - pad, xy.max(1).values + pad  # (F, 2)
        # (F, n_t) overlaps of each face's box with each tile column (x) and row (y)
        ox = (lo[:, :1] <= centres[None] + half) & (hi[:, :1] >= centres[None] - half)
        oy = (lo[:, 1:] <= centres[None] + half) & (hi[:, 1:] >= centres[None] - half)
        # every (mesh, tile row, tile col) with the faces it sees, in output order
        hit = oy[:, :, None] & ox[:, None, :]  # (F, n_t, n_t)
        f_idx, ti, tj = hit.nonzero(as_tuple=True)
        tile_id = (face_mesh[f_idx] * n_t + ti) * n_t + tj  # (P,) sorted by mesh since faces are packed by mesh
        order = torch.argsort(tile_id, stable=True)
        f_idx, tile_id = f_idx[order], tile_id[order]
        counts = torch.bincount(tile_id, minlength=B * n_t * n_t)  # (B * n_t * n_t,)
        ti, tj = (tile_id // n_t) % n_t, tile_id % n_t
    fv = face_verts[f_idx]  # (P, 3, 3), differentiable
    shift = torch.stack([centres[tj], centres[ti]], -1)[:, None, :]  # (P, 1, 2)
    fv = torch.cat([(fv[..., :2] - shift) * s, fv[..., 2:]], -1)
    verts = list(fv.reshape(-1, 3).split((counts * 3).tolist()))
    faces = [torch.arange(3 * int(c), device=device).view(-1, 3) for c in counts.tolist()]
    outs, first_face = [], 0
    # in groups only while training (the backward holds the GIL longest); one call otherwise, which
    # keeps the peak memory of target renders and evaluations at one set of outputs
    grouped = device.type == "cpu" and torch.is_grad_enabled() and face_verts.requires_grad
    per_tile = counts.tolist()
    for a, b in _tile_groups(per_tile, t * t if grouped else 0, faces_per_pixel):
        n_faces = sum(per_tile[a:b])
        if not n_faces:  # PyTorch3D returns no rows for an all-empty batch: pad with -1
            empty = torch.full((b - a, t, t, faces_per_pixel), -1, device=device)
            outs.append((empty.long(), empty.float(), empty.float()[..., None].expand(-1, -1, -1, -1, 3),
                         empty.float()))
            continue
        group = rasterize_meshes(Meshes(verts=verts[a:b], faces=faces[a:b]), image_size=t,
                                 blur_radius=blur_radius * s * s, faces_per_pixel=faces_per_pixel, bin_size=0,
                                 **kwargs)
        # the group's packed face ids -> the ids among all tiles' faces
        outs.append((torch.where(group[0] >= 0, group[0] + first_face, group[0]), *group[1:]))
        first_face += n_faces
    p2f, zbuf, bary, dists = (torch.cat(parts) if len(outs) > 1 else parts[0] for parts in zip(*outs))
    # (B * n_t * n_t, t, t, K) -> (B, S, S, K); tile-local face ids -> the input's packed face ids
    valid = p2f >= 0
    p2f = torch.where(valid, f_idx[p2f.clamp(min=0)], p2f)
    dists = torch.where(valid, dists / (s * s), dists)

    def untile(x: torch.Tensor) -> torch.Tensor:
        rest = x.shape[3:]
        x = x.reshape(B, n_t, n_t, t, t, *rest).transpose(2, 3)
        return x.reshape(B, S, S, *rest)

    return untile(p2f), untile(zbuf), untile(bary), untile(dists)


class TiledMeshRasterizer(MeshRasterizer):
    """``MeshRasterizer`` that rasterises tile by tile on the CPU (see the module docstring)."""

    def __init__(self, cameras=None, raster_settings=None, tile: int = TILE) -> None:
        super().__init__(cameras=cameras, raster_settings=raster_settings)
        self.tile = tile

    def forward(self, meshes_world: Meshes, **kwargs) -> Fragments:
        rs = kwargs.get("raster_settings", self.raster_settings)
        size = rs.image_size
        square = isinstance(size, int) or (len(size) == 2 and size[0] == size[1])
        size = size if isinstance(size, int) else int(size[0])
        tile = _tile_for(size, self.tile) if square else None
        if meshes_world.device.type != "cpu" or tile is None or rs.bin_size not in (None, 0) or rs.cull_to_frustum:
            return super().forward(meshes_world, **kwargs)
        meshes_ndc = self.transform(meshes_world, **kwargs)
        cameras = kwargs.get("cameras", self.cameras)
        # the same choices MeshRasterizer.forward makes
        clip_bary = rs.clip_barycentric_coords
        if clip_bary is None:
            clip_bary = rs.blur_radius > 0.0
        persp = rs.perspective_correct if rs.perspective_correct is not None else cameras.is_perspective()
        if rs.z_clip_value is not None:
            z_clip = rs.z_clip_value
        else:
            znear = cameras.get_znear()
            if isinstance(znear, torch.Tensor):
                znear = znear.min().item()
            z_clip = None if not persp or znear is None else znear / 2
        p2f, zbuf, bary, dists = _rasterize_tiled(
            meshes_ndc, size, tile, rs.blur_radius, rs.faces_per_pixel, perspective_correct=persp,
            clip_barycentric_coords=clip_bary, cull_backfaces=rs.cull_backfaces, z_clip_value=z_clip)
        return Fragments(pix_to_face=p2f, zbuf=zbuf, bary_coords=bary, dists=dists)


# --- targets and turntables -----------------------------------------------------------------------


@torch.no_grad()
def render_target(mesh: Meshes, R: torch.Tensor, T: torch.Tensor, size: int, background: tuple[float, float, float],
                  sigma: float = 1e-4, faces_per_pixel: int = 50, fov: float = 60.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The tutorials' target views of `mesh` (a batch of one) from cameras (R, T), on the CPU:
    RGB (N, S, S, 3) hard-rasterised with Phong shading, and soft silhouettes (N, S, S)."""
    device = mesh.device
    lights = PointLights(device=device, location=TARGET_LIGHT)
    blend = BlendParams(sigma=1e-4, gamma=1e-4, background_color=background)
    rgb_raster = RasterizationSettings(image_size=size, blur_radius=0.0, faces_per_pixel=1)
    sil_raster = RasterizationSettings(image_size=size, blur_radius=blur_radius(sigma), faces_per_pixel=faces_per_pixel)
    cams = FoVPerspectiveCameras(device=device, R=R.to(device), T=T.to(device), fov=fov)
    meshes = mesh.extend(len(cams))
    rgb = MeshRenderer(TiledMeshRasterizer(cameras=cams, raster_settings=rgb_raster),
                       SoftPhongShader(device=device, cameras=cams, lights=lights, blend_params=blend))
    sil = MeshRenderer(TiledMeshRasterizer(cameras=cams, raster_settings=sil_raster),
                       SoftSilhouetteShader(blend_params=BlendParams(sigma=sigma)))
    images = rgb(meshes, cameras=cams, lights=lights)[..., :3].clamp(0, 1).cpu()
    sils = sil(meshes, cameras=cams, lights=lights)[..., 3].clamp(0, 1).cpu()
    return images, sils


@torch.no_grad()
def phong_frames(meshes: Meshes, R: torch.Tensor, T: torch.Tensor, size: int = 128,
                 background: tuple[float, float, float] = (1.0, 1.0, 1.0), chunk: int = 8) -> list[np.ndarray]:
    """uint8 (size, size, 3) renders of ``meshes[i]`` seen from camera ``(R[i], T[i])``, in chunks.

    Hard rasterisation (one face per pixel) and Phong shading with vertex colours, lit from each
    camera so every frame is lit from the front. Turntables (one mesh, cameras circling it) and
    timelapses (many meshes, one camera) are both this.
    """
    settings = RasterizationSettings(image_size=size, blur_radius=0.0, faces_per_pixel=1)
    blend = BlendParams(background_color=background)
    out: list[np.ndarray] = []
    for start in range(0, len(meshes), chunk):
        part = meshes[start:start + chunk]
        cams = FoVPerspectiveCameras(R=R[start:start + chunk], T=T[start:start + chunk])
        lights = PointLights(location=cams.get_camera_center())
        frags = TiledMeshRasterizer(cameras=cams, raster_settings=settings)(part)
        imgs = HardPhongShader(cameras=cams, lights=lights, blend_params=blend)(frags, part)
        out.extend(to_uint8(im[..., :3].numpy()) for im in imgs)
    return out


@torch.no_grad()
def mesh_turntable(verts: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor | None = None,
                   frames: int = 36, size: int = 128, dist: float = CAMERA_DIST, elev: float = 15.0,
                   background: tuple[float, float, float] = (1.0, 1.0, 1.0), chunk: int = 8) -> list[np.ndarray]:
    """uint8 (size, size, 3) renders of a mesh from `frames` cameras circling it at elevation `elev`.

    `colors` (V, 3) in [0, 1] are per-vertex colours; without them the mesh is shaded plain grey-blue.
    """
    if frames <= 0:
        return []
    verts, faces = verts.detach().float().cpu(), faces.detach().long().cpu()
    if colors is None:
        colors = torch.tensor([0.62, 0.72, 0.86]).expand_as(verts)
    mesh = Meshes(verts=[verts], faces=[faces],
                  textures=TexturesVertex(verts_features=[colors.detach().float().cpu().clamp(0, 1)]))
    azim = torch.arange(frames) * (360.0 / frames)
    R, T = look_at_view_transform(dist=dist, elev=torch.full((frames,), float(elev)), azim=azim)
    return phong_frames(mesh.extend(frames), R, T, size=size, background=background, chunk=chunk)


@torch.no_grad()
def mesh_picture(verts: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None, size: int = 96) -> np.ndarray:
    """One uint8 (size, size, 3) picture of a mesh, from the side the page's 3D view looks from."""
    colors_t = torch.as_tensor(colors, dtype=torch.float32) if colors is not None else None
    return mesh_turntable(torch.as_tensor(verts, dtype=torch.float32), torch.as_tensor(faces, dtype=torch.int64),
                          colors_t, frames=1, size=size, elev=20.0)[0]
