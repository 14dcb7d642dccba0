"""Target meshes: the built-in ones and uploads; loading, validation and normalisation.

Every mesh is centred on its vertex mean and scaled so that its largest absolute coordinate is 1,
exactly as the tutorials do ("fit in a sphere of radius 1 centred at the origin"). Every asset
carries colours: the cow its UV texture, every other mesh a smooth colour ramp over its vertices,
so that RGB fitting still means something.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .meshcheck import Declared, MalformedMesh, StructureTooLarge, declared_size

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets"

#: Uploads larger than this are refused before they are parsed.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: The most faces a target may have. An upload with more (up to HARD_MAX_FACES) is simplified to this.
MAX_FACES = 200_000

# What an upload may declare, checked (recon.meshcheck) before anything is parsed. A 20 MB binary file
# holds at most ~1.1 million triangles; only instancing (GLB nodes) or huge polygons declare more, and
# those are what cost the loaders gigabytes.
#: Uploads declaring more faces (triangles, once polygons are split) are refused. Simplifying 1 million
#: faces takes fast-simplification ~3 s and ~300 MB (2.6 million: 8 s, 725 MB); a whole 19 MB upload of
#: 1 million faces took 14 s and +0.5 GB on a busy 2-core machine.
HARD_MAX_FACES = 1_000_000
#: A triangle soup (STL, unindexed GLB) has three vertices a face.
HARD_MAX_VERTICES = 3 * HARD_MAX_FACES
#: A face with more corners is no modelling polygon: fan-triangulating one 199,701-corner face gave
#: 199,699 slivers on 3 vertices.
MAX_FACE_CORNERS = 64
#: PyTorch3D reads .ply/.off faces of differing sizes one face at a time (~0.5 KB and 5-40 us a
#: triangle), so such files may hold at most this many triangles; faces all of one size are vectorised.
MAX_MIXED_FACES = 100_000
#: GLB nodes, and mesh parts (primitives times placements): trimesh spends ~0.15 ms on each node when
#: it builds a scene, and flattening it copies every part.
MAX_GLB_NODES = 2_000
#: Bytes trimesh copies out of a GLB's buffer views and accessors (it materialises every accessor).
MAX_GLB_DATA_BYTES = 128 * 2**20
#: Embedded images with more pixels than 4096 x 4096 are refused. Upload textures are never decoded
#: (uploads are coloured by position), but a PNG of a few bytes can declare gigapixels to whatever does.
MAX_TEXTURE_PIXELS = 4096 * 4096
UPLOAD_EXTENSIONS = (".obj", ".ply", ".off", ".stl", ".glb")

_SIMPLIFY = ("Simplify it first (e.g. Blender's Decimate modifier or MeshLab's Quadric Edge Collapse Decimation) "
             "and upload the result.")
_JOIN = "Join its parts into one mesh (e.g. in Blender: select all, Ctrl+J) and export it again."


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


# --- uploads ---------------------------------------------------------------------------------


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


#: Leading bytes of common files that are not meshes, so the message can say what was uploaded.
_NOT_MESH_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a zip archive (unzip it and upload the mesh inside)"),
    (b"\x1f\x8b", "a gzip archive (decompress it first)"),
    (b"7z\xbc\xaf", "a 7-Zip archive (extract the mesh first)"),
    (b"\x7fELF", "a program"),
    (b"MZ", "a Windows program"),
    (b"\x80\x02", "a Python pickle (never loaded here)"),
    (b"\x80\x03", "a Python pickle (never loaded here)"),
    (b"\x80\x04", "a Python pickle (never loaded here)"),
    (b"\x80\x05", "a Python pickle (never loaded here)"),
)


def _sniff_not_mesh(head: bytes, ext: str) -> str | None:
    """What kind of non-mesh file `head` starts, or None. A binary STL's 80-byte header is free text,
    so it is only sniffed for the unambiguous image and archive signatures."""
    if ext == ".glb" and head.startswith(b"glTF"):
        return None
    for magic, what in _NOT_MESH_MAGIC:
        if head.startswith(magic) and not (ext == ".stl" and len(magic) < 3):
            return what
    if head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "a web page"
    return None


def _read_mesh(path: str, data: bytes, ext: str) -> tuple[torch.Tensor, torch.Tensor]:
    if ext == ".obj":
        from pytorch3d.io import load_obj

        # No textures: an OBJ's mtllib/map_Kd names must never make the server open other files.
        verts, faces, _ = load_obj(path, load_textures=False)
        return verts, faces.verts_idx
    if ext in (".ply", ".off"):
        from pytorch3d.io import IO

        mesh = IO().load_mesh(path, include_textures=False)
        return mesh.verts_list()[0], mesh.faces_list()[0]
    import trimesh

    # From memory and without a resolver: a glTF's external buffer/image URIs cannot reach the disk.
    # Without materials: uploads are coloured by position, so a GLB's textures are never decoded.
    extra = {"skip_materials": True} if ext == ".glb" else {}
    loaded = trimesh.load(io.BytesIO(data), file_type=ext[1:], force="mesh", process=False, **extra)
    if not isinstance(loaded, trimesh.Trimesh):
        raise AssetError("the file holds no triangle mesh")
    return torch.as_tensor(loaded.vertices, dtype=torch.float32), torch.as_tensor(loaded.faces, dtype=torch.int64)


def _check_declared(d: Declared, ext: str, what: str) -> None:
    """Refuse, before anything is parsed, a file that declares more than the loaders can build in
    bounded time and memory (see the limits at the top of this module)."""
    if d.max_corners > MAX_FACE_CORNERS:
        raise AssetError(f"{what} has a face with {d.max_corners:,} corners (at most {MAX_FACE_CORNERS} are accepted): "
                         "it is not a usable polygon mesh. Export it with triangulated faces and upload it again.")
    if d.faces > HARD_MAX_FACES:
        kind = "faces" if d.max_corners <= 3 else "triangles once its polygons are split"
        raise AssetError(f"{what} declares {d.faces:,} {kind}; the limit is {HARD_MAX_FACES:,} (meshes above "
                         f"{MAX_FACES:,} faces are simplified automatically). {_SIMPLIFY}")
    if d.vertices > HARD_MAX_VERTICES:
        raise AssetError(f"{what} declares {d.vertices:,} vertices; the limit is {HARD_MAX_VERTICES:,}. {_SIMPLIFY}")
    if ext in (".ply", ".off") and not d.uniform and d.faces > MAX_MIXED_FACES:
        raise AssetError(f"{what} mixes faces of {d.min_corners} to {d.max_corners} corners ({d.faces:,} triangles once "
                         f"split); {ext} files like that are read one face at a time, so at most {MAX_MIXED_FACES:,} are "
                         "accepted. Export it with triangulated faces, or as .obj, and upload it again.")
    if d.nodes > MAX_GLB_NODES:
        raise AssetError(f"{what} has {d.nodes:,} nodes; the limit is {MAX_GLB_NODES:,}. {_JOIN}")
    if d.parts > MAX_GLB_NODES:
        raise AssetError(f"{what} is made of {d.parts:,} mesh parts (primitives, counting every placement); the limit is "
                         f"{MAX_GLB_NODES:,}. {_JOIN}")
    if d.data_bytes > MAX_GLB_DATA_BYTES:
        raise AssetError(f"{what} declares {d.data_bytes / 2**20:,.0f} MB of vertex, index and image data; the limit is "
                         f"{MAX_GLB_DATA_BYTES // 2**20} MB. {_SIMPLIFY}")
    for width, height in d.images:
        if width * height > MAX_TEXTURE_PIXELS:
            side = math.isqrt(MAX_TEXTURE_PIXELS)
            raise AssetError(f"{what} embeds a {width:,}×{height:,}-pixel image; the limit is {side}×{side} pixels. Textures "
                             "are not used here: export it without textures, or with smaller ones, and upload it again.")


#: fast-simplification keeps the mesh in module-global C++ state between its load, simplify and
#: return steps, so concurrent uploads must take turns.
_SIMPLIFY_LOCK = threading.Lock()


def simplify(verts: torch.Tensor, faces: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mesh (more than `target` faces) decimated to about `target` faces by quadric edge collapse
    (fast-simplification, which trimesh also uses): float64 (V', 3) vertices and int64 (F', 3) faces.

    Identical vertex positions are welded first: STL and unindexed GLB store each triangle's corners
    separately, and edges between triangles that share no vertex cannot be collapsed.
    """
    import fast_simplification

    rows = np.ascontiguousarray(verts.double().numpy()).view(np.dtype((np.void, 24)))[:, 0]  # (V,) a position each
    unique, weld = np.unique(rows, return_inverse=True)  # (U,), (V,)
    points = unique.view(np.float64).reshape(-1, 3)  # (U, 3)
    with _SIMPLIFY_LOCK:
        points, triangles = fast_simplification.simplify(points, weld[faces.numpy()], target_count=target)
    return torch.from_numpy(points), torch.from_numpy(triangles).long()


def load_upload(path: str | os.PathLike, filename: str | None = None) -> MeshAsset:
    """Load, check and normalise an uploaded mesh file; :class:`AssetError` says what is wrong.

    The byte size, and then the sizes the file declares (recon.meshcheck: faces, polygon sizes, GLB
    nodes, accessors and images), are checked before anything is parsed. Vertices no face uses are
    dropped, and the mesh is centred and scaled in float64 so that huge coordinates cannot overflow. A
    mesh with more than MAX_FACES faces is simplified to MAX_FACES. A mesh with non-manifold edges is
    accepted (every method only samples its surface and renders it). The asset's ``notes`` say what
    was changed.
    """
    path = str(path)
    shown = display_name(filename or path)
    base = Path(str(filename or path).replace("\\", "/")).name
    ext = (Path(base).suffix or (base if base.count(".") == 1 and base.startswith(".") else "")).lower()
    if ext not in UPLOAD_EXTENSIONS:
        raise AssetError(
            f"'{shown}': unsupported file type {ext or '(none)'!r}. Upload one of {', '.join(UPLOAD_EXTENSIONS)}."
        )
    try:
        size = os.path.getsize(path)
    except OSError:
        raise AssetError(f"'{shown}': the uploaded file could not be read.") from None
    if size == 0:
        raise AssetError(f"'{shown}' is empty (0 bytes).")
    if size > MAX_UPLOAD_BYTES:
        raise AssetError(
            f"'{shown}' is {size / 2**20:.1f} MB ({size:,} bytes), over the {MAX_UPLOAD_BYTES / 2**20:.0f} MB upload "
            f"limit. Simplify the mesh (at most {MAX_FACES:,} faces) or save it as binary .ply or .glb."
        )
    with open(path, "rb") as fh:
        data = fh.read()
    kind = _sniff_not_mesh(data[:64], ext)
    if kind is not None:
        raise AssetError(f"'{shown}' is not a mesh: it looks like {kind}. Upload one of {', '.join(UPLOAD_EXTENSIONS)}.")
    digest = hashlib.sha1(data).hexdigest()[:16]
    what = f"'{shown}'"
    try:
        declared = declared_size(data, ext)
    except MalformedMesh as exc:
        raise AssetError(f"{what} could not be read as a {ext} mesh ({exc}). The file is damaged or truncated: "
                         "export it again.") from None
    except StructureTooLarge as exc:
        raise AssetError(f"{what} is too complex to load: {exc}. {_JOIN if ext == '.glb' else _SIMPLIFY}") from None
    _check_declared(declared, ext, what)
    try:
        verts, faces = _read_mesh(path, data, ext)
    except AssetError as exc:
        raise AssetError(f"'{shown}': {exc}") from None
    except Exception as exc:  # loaders raise anything from ValueError to IndexError on junk
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise AssetError(f"'{shown}' could not be read as a {ext} mesh ({reason}).") from None
    if verts.numel() == 0 and faces.numel() == 0:
        raise AssetError(f"{what} holds no mesh: no vertices or faces were found in it. Is it really a {ext} file?")
    verts, faces = verts.float(), faces.long()
    check_mesh(verts, faces, what, max_faces=HARD_MAX_FACES)
    notes = []
    used, faces = faces.unique(return_inverse=True)  # (U,), (F, 3) renumbered
    if used.numel() < verts.shape[0]:
        n = verts.shape[0] - used.numel()
        notes.append(f"{n:,} vert{'ex' if n == 1 else 'ices'} that no face uses {'was' if n == 1 else 'were'} dropped.")
    verts = verts[used].double()
    verts = (verts - verts.mean(0)) / (verts - verts.mean(0)).abs().max()  # float64: no overflow
    if faces.shape[0] > MAX_FACES:
        n = faces.shape[0]
        verts, faces = simplify(verts, faces, MAX_FACES)
        notes.append(f"Simplified from {n:,} to {faces.shape[0]:,} faces (quadric decimation) to fit the "
                     f"{MAX_FACES:,}-face limit.")
    bad_edges = non_manifold_edges(faces)
    if bad_edges:
        notes.append(f"{bad_edges:,} edge{' is' if bad_edges == 1 else 's are'} shared by more than two faces "
                     "(non-manifold). The mesh is used as it is: the methods only sample points on its surface "
                     "and render it.")
    return _asset(f"upload:{digest}", safe_name(shown), verts.float(), faces, what=what, notes=tuple(notes))
