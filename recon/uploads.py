"""Mesh uploads: bounded before they are parsed, read without following any reference out of the file,
simplified when they have more faces than a target may, checked and normalised like the built-ins.

The byte size is checked first, then what the file declares (:mod:`recon.meshcheck`: face and vertex
counts, polygon sizes, GLB nodes, accessors and image sizes), all before any loader runs.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import threading
from pathlib import Path

import numpy as np
import torch

from .assets import _SIMPLIFY, MAX_FACES, AssetError, MeshAsset, _asset, check_mesh, non_manifold_edges
from .meshcheck import Declared, MalformedMesh, StructureTooLarge, declared_size
from .text import display_name, safe_name

_JOIN = "Join its parts into one mesh (e.g. in Blender: select all, Ctrl+J) and export it again."

#: Uploads larger than this are refused before they are parsed.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024

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
