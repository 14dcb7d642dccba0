"""Target meshes: the built-in ones, the checks every mesh passes, and normalisation (uploads are read
by :mod:`recon.uploads`).

Every mesh is centred on its vertex mean and scaled so that its largest absolute coordinate is 1,
exactly as the tutorials do ("fit in a sphere of radius 1 centred at the origin"). Every asset
carries colours: the cow its UV texture, every other mesh a smooth colour ramp over its vertices,
so that RGB fitting still means something.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets"

_SIMPLIFY = ("Simplify it first (e.g. Blender's Decimate modifier or MeshLab's Quadric Edge Collapse Decimation) "
             "and upload the result.")
#: The most faces a target may have; an upload with more (up to uploads.HARD_MAX_FACES) is simplified to this.
MAX_FACES = 200_000


class AssetError(ValueError):
    """A mesh that cannot be used; the message is meant for the person who supplied it."""


@dataclass(frozen=True)
class UVTexture:
    verts_uvs: torch.Tensor  # (T, 2)
    faces_uvs: torch.Tensor  # (F, 3) int64
    image: torch.Tensor  # (H, W, 3) float32 in [0, 1]


@dataclass(frozen=True)
class MeshAsset:
    """A normalised target mesh on the CPU. Treat its tensors as read-only: they are shared."""

    key: str  # cache key: "builtin:cow" or "upload:<sha1>"
    name: str  # display name
    verts: torch.Tensor  # (V, 3) float32, centred, inside [-1, 1]^3
    faces: torch.Tensor  # (F, 3) int64
    vert_colors: torch.Tensor  # (V, 3) float32 in [0, 1]; used when there is no texture
    texture: UVTexture | None = None
    notes: tuple[str, ...] = ()  # things worth telling the uploader about a mesh that was accepted

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def meshes(self, device: torch.device | str = "cpu"):
        """The asset as a PyTorch3D ``Meshes`` (batch of one) with its texture or vertex colours."""
        from pytorch3d.renderer import TexturesUV, TexturesVertex
        from pytorch3d.structures import Meshes

        if self.texture is not None:
            tex = TexturesUV(
                maps=self.texture.image[None].to(device),
                faces_uvs=self.texture.faces_uvs[None].to(device),
                verts_uvs=self.texture.verts_uvs[None].to(device),
            )
        else:
            tex = TexturesVertex(verts_features=self.vert_colors[None].to(device))
        return Meshes(verts=[self.verts.to(device)], faces=[self.faces.to(device)], textures=tex)


# --- normalisation and checks ---------------------------------------------------------------


def normalise(verts: torch.Tensor) -> torch.Tensor:
    """Centre on the vertex mean and divide by the largest absolute coordinate, as the tutorials do.

    The result lies in the cube [-1, 1]^3 (the tutorials' "sphere of radius 1"): the same framing
    as the tutorials' renders, so that their settings (camera distance 2.7, a 3-unit volume)
    apply unchanged.
    """
    verts = verts - verts.mean(0)
    return verts / verts.abs().max()


def colour_ramp(verts: torch.Tensor) -> torch.Tensor:
    """A smooth, saturated colour per vertex from its normalised position."""
    lo, hi = verts.min(0).values, verts.max(0).values
    t = (verts - lo) / (hi - lo).clamp_min(1e-8)  # (V, 3) in [0, 1]
    return (0.15 + 0.75 * t).float()


def check_mesh(verts: torch.Tensor, faces: torch.Tensor, what: str, max_faces: int | None = None) -> None:
    """Raise :class:`AssetError` with a plain message for anything that cannot be fitted.

    `max_faces` defaults to MAX_FACES; uploads are checked against HARD_MAX_FACES before simplifying.
    """
    max_faces = MAX_FACES if max_faces is None else max_faces
    if verts.ndim != 2 or verts.shape[0] == 0:
        raise AssetError(f"{what} has no vertices.")
    if faces.ndim != 2 or faces.shape[0] == 0:
        raise AssetError(f"{what} has no faces (is it a point cloud?). A triangle mesh is needed.")
    if faces.shape[1] != 3:
        raise AssetError(f"{what} has faces with {faces.shape[1]} corners; triangles are needed.")
    if faces.shape[0] > max_faces:
        raise AssetError(
            f"{what} has {faces.shape[0]:,} faces; the limit is {max_faces:,}. {_SIMPLIFY}"
        )
    if not torch.isfinite(verts).all():
        raise AssetError(f"{what} has NaN or infinite vertex coordinates.")
    if faces.min() < 0 or faces.max() >= verts.shape[0]:
        raise AssetError(
            f"{what} has face indices outside the vertex range 0..{verts.shape[0] - 1} "
            f"(found {int(faces.min())}..{int(faces.max())})."
        )
    used = verts[faces.unique()].double()  # float64: huge but finite coordinates must not overflow
    extent = (used.max(0).values - used.min(0).values).max()
    if not extent > 1e-9 * used.abs().max().clamp_min(1e-30):
        raise AssetError(f"{what} is degenerate: all its faces collapse to a point.")
    v0, v1, v2 = (verts[faces[:, i]].double() / extent for i in range(3))
    areas = torch.linalg.cross(v1 - v0, v2 - v0).norm(dim=1)
    if not (areas > 1e-12).any():
        raise AssetError(f"{what} is degenerate: all its faces have zero area.")


def non_manifold_edges(faces: torch.Tensor) -> int:
    """How many edges are shared by more than two faces."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1).values  # (3F, 2)
    keys = edges[:, 0] * (int(faces.max()) + 1) + edges[:, 1]  # (3F,) one integer per edge: unique(dim=0) is ~10x slower
    _, counts = keys.unique(return_counts=True)
    return int((counts > 2).sum())


def _asset(key: str, name: str, verts: torch.Tensor, faces: torch.Tensor, texture=None,
           what: str | None = None, notes: tuple[str, ...] = ()) -> MeshAsset:
    verts = verts.float()
    faces = faces.long()
    check_mesh(verts, faces, what or f"The mesh {name!r}")
    verts = normalise(verts)
    return MeshAsset(key=key, name=name, verts=verts, faces=faces, vert_colors=colour_ramp(verts),
                     texture=texture, notes=notes)


# --- built-in targets ---------------------------------------------------------------------


def _load_cow() -> MeshAsset:
    from pytorch3d.io import load_obj

    verts, faces, aux = load_obj(ASSET_DIR / "cow_mesh" / "cow.obj", load_textures=True)
    image = next(iter(aux.texture_images.values())).float()  # (H, W, 3)
    tex = UVTexture(verts_uvs=aux.verts_uvs.float(), faces_uvs=faces.textures_idx.long(), image=image)
    return _asset("builtin:cow", "cow", verts, faces.verts_idx, texture=tex)


def _load_teapot() -> MeshAsset:
    from pytorch3d.io import load_obj

    verts, faces, _ = load_obj(ASSET_DIR / "teapot.obj", load_textures=False)
    return _asset("builtin:teapot", "teapot", verts, faces.verts_idx)


def _torus(major: float = 1.0, minor: float = 0.4, n_major: int = 64, n_minor: int = 24) -> MeshAsset:
    u = torch.arange(n_major) * (2 * math.pi / n_major)
    v = torch.arange(n_minor) * (2 * math.pi / n_minor)
    uu, vv = torch.meshgrid(u, v, indexing="ij")  # (n_major, n_minor)
    ring = major + minor * torch.cos(vv)
    verts = torch.stack([ring * torch.cos(uu), minor * torch.sin(vv), ring * torch.sin(uu)], -1)
    verts = verts.reshape(-1, 3)
    i = torch.arange(n_major)[:, None]
    j = torch.arange(n_minor)[None, :]
    a = i * n_minor + j
    b = ((i + 1) % n_major) * n_minor + j
    c = ((i + 1) % n_major) * n_minor + (j + 1) % n_minor
    d = i * n_minor + (j + 1) % n_minor
    faces = torch.cat([torch.stack([a, b, c], -1), torch.stack([a, c, d], -1)]).reshape(-1, 3)
    return _asset("builtin:torus", "torus", verts, faces)


def _bumpy_sphere(level: int = 5) -> MeshAsset:
    from pytorch3d.utils import ico_sphere

    sphere = ico_sphere(level)
    verts = sphere.verts_packed()
    x, y, z = verts.unbind(1)
    bumps = 0.12 * torch.sin(5 * x) * torch.sin(5 * y) * torch.sin(5 * z) + 0.08 * torch.cos(7 * y)
    return _asset("builtin:bumpy_sphere", "bumpy sphere", verts * (1 + bumps)[:, None],
                  sphere.faces_packed())


#: Built-in targets: name -> (loader, one-line description). Order is the dropdown's.
BUILTINS: dict[str, tuple[Callable[[], MeshAsset], str]] = {
    "cow": (_load_cow, "Spot the cow with its UV texture: the PyTorch3D tutorials' target"),
    "teapot": (_load_teapot, "The Utah teapot (untextured; coloured by position)"),
    "torus": (_torus, "A procedural torus: genus one, which a sphere cannot deform into"),
    "bumpy sphere": (_bumpy_sphere, "A procedural sphere with smooth bumps"),
}


@functools.lru_cache(maxsize=None)
def load_builtin(name: str) -> MeshAsset:
    """A built-in target by name (cached: loading the cow takes ~0.3 s)."""
    if name not in BUILTINS:
        raise AssetError(f"Unknown target {name!r}; built-in targets are {', '.join(BUILTINS)}.")
    return BUILTINS[name][0]()
