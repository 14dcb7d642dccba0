"""Multi-view image datasets in the NeRF-synthetic ("Blender") layout: reading, checking, writing.

The layout is the one nerfstudio, instant-ngp and most NeRF code read::

    transforms_train.json        {"camera_angle_x": 0.69, "frames": [{"file_path": "./train/r_0",
    transforms_test.json          "transform_matrix": [[...4 numbers...] x 4]}, ...]}
    train/r_0.png ...            RGBA PNGs; alpha is the object's silhouette
    test/r_0.png ...

``transform_matrix`` is camera-to-world in the OpenGL convention (x right, y up, the camera looking
down -z) and ``camera_angle_x`` the horizontal field of view in radians; ``file_path`` is relative to
the JSON, with or without ``.png``. ``transforms_val.json`` stands in for a missing test split, and a
single ``transforms.json`` holding every frame is accepted too: then every 8th frame (0, 8, 16, ...)
is held out, as NeRF code does for its LLFF scenes.

- :func:`read_dataset` reads a folder or a ``.zip`` (members are read from the archive, never
  extracted), checks everything, and places the scene where the methods expect it
  (:func:`normalise_scene`). :class:`DatasetError` says what is wrong, for the person who made it.
- :func:`composite` turns the RGBA frames into the images and silhouettes the methods fit.
- :func:`write_dataset` writes recon's own target views in the same layout.
- :func:`opengl_to_pytorch3d` / :func:`pytorch3d_to_opengl` convert the cameras.

Limits (module constants, all checked before the data they guard is read or decoded):

- a zip is at most :data:`MAX_ZIP_BYTES` (the page's upload limit), with at most
  :data:`MAX_MEMBERS` members declaring at most :data:`MAX_UNCOMPRESSED_BYTES` in all, none of more
  than :data:`MAX_FILE_BYTES`, and none over 1 MiB compressed more than :data:`MAX_RATIO` times;
- at most :data:`MAX_FRAMES` frames in all: more is refused (not subsampled), saying so;
- images of more than :data:`MAX_IMAGE_PIXELS` pixels are refused from their header, before they
  are decoded; images larger than :data:`LOAD_SIZE` are downscaled to it (area filter) as they
  are read, one at a time, and the dataset's notes say so. Non-square images are centre-cropped
  to a square and their field of view converted, and the notes say so too.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import posixpath
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .text import display_name, safe_name

#: Largest zip accepted (the page's upload limit for datasets).
MAX_ZIP_BYTES = 64 * 2**20
#: Largest total uncompressed size the members of a zip may declare.
MAX_UNCOMPRESSED_BYTES = 256 * 2**20
#: Most members (files and folders) a zip may hold.
MAX_MEMBERS = 2000
#: Largest single file (image or JSON) read, from a zip or a folder.
MAX_FILE_BYTES = 64 * 2**20
#: Largest transforms JSON (one of MAX_FRAMES frames is a few hundred kB).
MAX_JSON_BYTES = 8 * 2**20
#: Largest compression ratio of any zip member over 1 MiB: PNGs barely compress, zip bombs do.
MAX_RATIO = 100
#: Most frames (training and held-out together); more is refused.
MAX_FRAMES = 300
#: Largest image, in pixels, read from its header before it is decoded; larger ones are refused.
MAX_IMAGE_PIXELS = 4096 * 4096
#: Images larger than this (pixels a side) are downscaled to it as they are read: the methods'
#: largest image size.
LOAD_SIZE = 256
#: With a single transforms.json (or no test/val split), frames 0, 8, 16, ... are held out.
HOLDOUT_EVERY = 8
#: Distance of recon's cameras from the origin, where the volume and NeRF expect the object.
CAMERA_DISTANCE = 2.7

_FLIP = torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64))  # OpenGL <-> PyTorch3D camera axes


class DatasetError(ValueError):
    """A dataset that cannot be used; the message is meant for the person who supplied it."""


# --- cameras -----------------------------------------------------------------------------------


def opengl_to_pytorch3d(c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch3D's (R, T) of cameras given as OpenGL/Blender camera-to-world matrices.

    Derivation. PyTorch3D maps world points to view space with row vectors,
    ``X_view = X_world @ R + T``; as columns, ``x_view = Rᵀ x_world + T``, so
    ``x_world = R (x_view - T)``: the columns of R are the view axes written in world coordinates,
    and the camera centre (``x_view = 0``) is ``C = -R T``, or in rows ``C = -T @ Rᵀ``. The view
    axes are +X left, +Y up, +Z forward (into the scene).

    An OpenGL camera-to-world matrix ``[[A, C], [0, 1]]`` maps ``x_world = A x_cam + C``: the
    columns of A are the camera's axes in world coordinates, +x right, +y up, +z backward (the
    camera looks down -z), and C is its centre.

    The same camera therefore has PyTorch3D axes (left, up, forward) = (-x, y, -z) of OpenGL's:
    ``R = A @ F`` with ``F = diag(-1, 1, -1)``, and ``T = -C @ R`` (from ``C = -T @ Rᵀ``, R being
    orthonormal). Example: the OpenGL camera at (0, 0, d) with A = I looks at the origin down -z;
    it gets ``R = diag(-1, 1, -1)`` and ``T = (0, 0, d)``, exactly what
    ``look_at_view_transform(dist=d, elev=0, azim=0)`` returns. Left and right agree on the image
    too: PyTorch3D's NDC has +X on the left of the rendered image, OpenGL's +x is on the right.
    The tests check all of this against ``look_at_view_transform`` and a render.

    Args:
        c2w: (N, 4, 4) rigid camera-to-world matrices.
    Returns:
        R (N, 3, 3) and T (N, 3), in the dtype of `c2w`.
    """
    m = c2w.double()
    R = m[:, :3, :3] @ _FLIP  # (N, 3, 3)
    T = -(m[:, None, :3, 3] @ R)[:, 0]  # (N, 3)
    return R.to(c2w.dtype), T.to(c2w.dtype)


def pytorch3d_to_opengl(R: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`opengl_to_pytorch3d`: (N, 4, 4) OpenGL camera-to-world matrices of
    PyTorch3D cameras R (N, 3, 3), T (N, 3). ``A = R @ F`` (F is its own inverse), ``C = -T @ Rᵀ``."""
    R64, T64 = R.double(), T.double()
    c2w = torch.zeros(R.shape[0], 4, 4, dtype=torch.float64)
    c2w[:, :3, :3] = R64 @ _FLIP
    c2w[:, :3, 3] = -(T64[:, None] @ R64.transpose(1, 2))[:, 0]
    c2w[:, 3, 3] = 1.0
    return c2w.to(R.dtype)


def camera_centres(R: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """(N, 3) world positions of PyTorch3D cameras: ``C = -T @ Rᵀ``."""
    return -(T[:, None] @ R.transpose(1, 2))[:, 0]


def _fmt(v: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.3g}" if abs(x) >= 5e-4 else "0" for x in v) + ")"


def normalise_scene(R: torch.Tensor, T: torch.Tensor, center: Sequence[float] | None = None,
                    scale: float | None = None, distance: float = CAMERA_DISTANCE,
                    ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Move and scale the world so that the object sits where recon's methods expect it.

    recon's own cameras sit `distance` (2.7) units from the origin, around an object inside
    [-1, 1]^3, and the volume and NeRF sample a 3-unit cube centred there. A dataset's cameras may
    sit anywhere at any scale, so the scene is centred on the point nearest (least squares) to all
    the cameras' optical axes, which is where a capture rig or a turntable points, and scaled by
    ``distance / median camera distance from it``. ``center`` (world units of the dataset) and
    ``scale`` override either. World points move as ``X' = scale (X - center)``; cameras keep their
    rotation and get ``T' = scale (T + center @ R)``, which scales view space uniformly and so
    leaves every image unchanged.

    Cameras already `distance` units around the origin (within 1e-5) are left exactly as they are.
    Camera sets with no such point are refused: optical axes (nearly) parallel, or looking away
    from the point nearest to them (then give ``center``).

    Args:
        R: (N, 3, 3), T: (N, 3) PyTorch3D cameras.
    Returns:
        R (N, 3, 3), T (N, 3) and a plain-language note of what was done.
    """
    R64, T64 = R.double(), T.double()
    C = camera_centres(R64, T64)  # (N, 3)
    n = C.shape[0]
    if center is None:
        axes = R64[:, :, 2]  # (N, 3) view +Z (forward) in world coordinates
        proj = torch.eye(3, dtype=torch.float64) - axes[:, :, None] * axes[:, None, :]  # (N, 3, 3) onto planes ⟂ axes
        A = proj.sum(0)  # (3, 3)
        b = (proj @ C[:, :, None]).sum(0)[:, 0]  # (3,)
        if torch.linalg.eigvalsh(A)[0] < 1e-2 * n:
            raise DatasetError(
                f"the {n} cameras' optical axes are (nearly) parallel, so there is no point they all look at "
                "to centre the scene on (recon needs views from around the object). Give the centre and scale "
                "yourself (command line: --center X Y Z --scale S).")
        c = torch.linalg.solve(A, b)  # (3,)
        if (((c - C) * axes).sum(1) > 0).double().mean() < 0.5:
            raise DatasetError(
                "most cameras look away from the point nearest to their optical axes, so the scene has no "
                "centre recon can find (recon needs views from around the object). Give the centre and scale "
                "yourself (command line: --center X Y Z --scale S).")
        where = f"the point nearest to all {n} optical axes"
    else:
        c = torch.as_tensor(center, dtype=torch.float64).flatten()
        if c.numel() != 3 or not torch.isfinite(c).all():
            raise DatasetError(f"the centre must be three finite numbers, not {list(center)}.")
        where = "as asked"
    dist = (C - c).norm(dim=1)  # (N,)
    median = float(torch.quantile(dist, 0.5))
    if scale is None:
        if not median > 1e-9:
            raise DatasetError("the cameras all sit at the centre of the scene; give the scale yourself (--scale S).")
        s = distance / median
        how = f"so that the cameras sit {distance:g} units from it (their median distance; it was {median:.3g})"
    else:
        s = float(scale)
        if not (math.isfinite(s) and s > 0):
            raise DatasetError(f"the scale must be a positive number, not {scale!r}.")
        how = f"as asked (the cameras now sit {s * median:.3g} units from it, median; recon's sit {distance:g})"
    if float(c.norm()) <= 1e-5 * distance and abs(s - 1.0) <= 1e-5:
        return R.clone(), T.clone(), (f"The cameras already sit {distance:g} units around the origin, where the "
                                      "methods expect the object: the scene was left as it is.")
    T_new = s * (T64 + (c[None, None] @ R64)[:, 0])  # (N, 3)
    note = f"The scene was centred on {_fmt(c.tolist())}, {where}, and scaled by {s:.3g} {how}."
    return R.clone(), T_new.to(T.dtype), note


# --- data --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frames:
    """One split of a dataset on the CPU, images at load size."""

    images: torch.Tensor  # (N, S, S, 4) uint8 RGBA, straight (not premultiplied) alpha
    R: torch.Tensor  # (N, 3, 3) float32, PyTorch3D
    T: torch.Tensor  # (N, 3) float32
    fov_deg: float  # FoVPerspectiveCameras' fov: the square images' horizontal = vertical field of view

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def camera_centres(self) -> np.ndarray:
        """(N, 3) world positions of the cameras."""
        return camera_centres(self.R, self.T).numpy()


@dataclass(frozen=True)
class Dataset:
    """A multi-view image dataset, checked and placed where recon's methods expect the object."""

    name: str  # file-name-safe
    key: str  # "dataset:<hash of the files read and the overrides>", for caching
    train: Frames
    test: Frames  # the held-out set
    notes: tuple[str, ...]  # what was done to it, for the person who supplied it


def composite(frames: Frames, background: Sequence[float], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and silhouettes the methods fit: RGB over `background`, at `size` pixels a side.

    Straight alpha: ``rgb * a + background * (1 - a)``; the silhouette is alpha. Compositing is
    done at load size and then both are area-averaged to `size` (area averaging is linear, so this
    equals compositing the downscaled RGBA); a `size` above the load size is upsampled bilinearly.

    Returns:
        images (N, size, size, 3) float32 in [0, 1] and silhouettes (N, size, size) float32.
    """
    bg = torch.tensor(background, dtype=torch.float32).view(1, 3, 1, 1)
    images, sils = [], []
    for chunk in frames.images.split(32):  # bounded peak memory: float copies of 32 images at a time
        rgba = chunk.permute(0, 3, 1, 2).float() / 255.0  # (n, 4, S, S)
        alpha = rgba[:, 3:]
        out = torch.cat([rgba[:, :3] * alpha + bg * (1 - alpha), alpha], 1)  # (n, 4, S, S)
        if size < out.shape[-1]:
            out = torch.nn.functional.interpolate(out, size=(size, size), mode="area")
        elif size > out.shape[-1]:
            out = torch.nn.functional.interpolate(out, size=(size, size), mode="bilinear", align_corners=False)
        out = out.clamp(0, 1)
        images.append(out[:, :3].permute(0, 2, 3, 1))
        sils.append(out[:, 3])
    return torch.cat(images).contiguous(), torch.cat(sils).contiguous()


# --- writing -----------------------------------------------------------------------------------


def _png(rgb: np.ndarray, alpha: np.ndarray) -> bytes:
    """RGBA PNG bytes of rgb (H, W, 3) and alpha (H, W) floats in [0, 1]."""
    rgba = np.concatenate([rgb, alpha[..., None]], -1)  # (H, W, 4)
    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(rgba, 0, 1) * 255).astype(np.uint8), "RGBA").save(buf, "PNG", optimize=True)
    return buf.getvalue()


def write_dataset(out: str | os.PathLike, train: tuple, test: tuple, fov_deg: float = 60.0) -> Path:
    """Write views in the Blender layout, to a folder or (when `out` ends in .zip) a zip.

    `train` and `test` are each ``(images (N, H, W, 3) float in [0, 1], silhouettes (N, H, W),
    R (N, 3, 3), T (N, 3))`` with PyTorch3D cameras of field of view `fov_deg`, e.g. a target's
    training and held-out views. The PNGs hold the RGB as given and the silhouette as alpha:
    recon's renders are composited on a background, which only shows where alpha is below 1.
    Files: ``transforms_train.json``, ``transforms_test.json``, ``train/r_000.png``, ...,
    ``test/r_000.png``, ...; ``file_path`` without extension, as in the Blender data.
    """
    out = Path(out)
    files: dict[str, bytes] = {}
    for split, (images, sils, R, T) in (("train", train), ("test", test)):
        images = torch.as_tensor(images).float().cpu().numpy()
        sils = torch.as_tensor(sils).float().cpu().numpy()
        c2w = pytorch3d_to_opengl(torch.as_tensor(R).double(), torch.as_tensor(T).double()).numpy()  # (N, 4, 4)
        digits = max(3, len(str(len(images) - 1)))
        frames = []
        for i in range(len(images)):
            stem = f"{split}/r_{i:0{digits}d}"
            files[stem + ".png"] = _png(images[i], sils[i])
            frames.append({"file_path": f"./{stem}", "transform_matrix": c2w[i].tolist()})
        doc = {"camera_angle_x": math.radians(fov_deg), "frames": frames}
        files[f"transforms_{split}.json"] = json.dumps(doc, indent=2).encode()
    if out.suffix.lower() == ".zip":
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data, zipfile.ZIP_DEFLATED if name.endswith(".json") else zipfile.ZIP_STORED)
    else:
        for name, data in files.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(data)
    return out


# --- reading: where the files come from ----------------------------------------------------------


class _Source:
    """The files of a dataset by POSIX path relative to its root (the folder holding the JSON)."""

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def read(self, rel: str) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        """Release the source (a zip's file handle)."""


class _FolderSource(_Source):
    def __init__(self, root: Path):
        self.root = root.resolve()

    def _path(self, rel: str) -> Path:
        path = (self.root / rel).resolve()  # follows symbolic links: they must stay inside too
        if not path.is_relative_to(self.root):
            raise DatasetError(f"{rel} points outside the dataset folder.")
        return path

    def exists(self, rel: str) -> bool:
        return self._path(rel).is_file()

    def read(self, rel: str) -> bytes:
        path = self._path(rel)
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise DatasetError(f"{rel} is {_size(size)}; the limit per file is {_size(MAX_FILE_BYTES)}.")
            return path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"{rel} could not be read ({exc.strerror or type(exc).__name__}).") from None


class _ZipSource(_Source):
    def __init__(self, zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], prefix: str):
        self.zf, self.members, self.prefix = zf, members, prefix

    def exists(self, rel: str) -> bool:
        return self.prefix + rel in self.members

    def read(self, rel: str) -> bytes:
        try:
            return self.zf.read(self.members[self.prefix + rel])  # sizes were checked when the zip was opened
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError):
            raise DatasetError(f"{rel} could not be read from the zip: the archive is damaged, or compressed "
                               "with a method other than Deflate.") from None

    def close(self) -> None:
        self.zf.close()


def _size(n: int) -> str:
    """A byte count as messages show it: '3,072 MB', or '6,000 bytes' under a megabyte."""
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n:,} bytes"


def _quote(name: str, limit: int = 80) -> str:
    """A file name as messages show it: quoted, control characters escaped, at most `limit` characters."""
    return repr(name if len(name) <= limit else name[:limit - 1] + "…")


def _unsafe_member(name: str) -> bool:
    """Whether a zip member name could reach outside the archive's folder (zip slip)."""
    n = name.replace("\\", "/")
    return n.startswith("/") or bool(re.match(r"[A-Za-z]:", n)) or ".." in n.split("/")


def _check_zip(path: Path) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
    """Open a zip and check every member's header before anything is read from it."""
    size = path.stat().st_size
    if size > MAX_ZIP_BYTES:
        raise DatasetError(f"the zip is {_size(size)}, over the {_size(MAX_ZIP_BYTES)} limit. "
                           f"Use fewer or smaller images (they are read at {LOAD_SIZE} px at most).")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        raise DatasetError("is not a zip archive (or a damaged one). Upload a .zip of the dataset folder.") from None
    try:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise DatasetError(f"the zip holds {len(infos):,} files; the limit is {MAX_MEMBERS:,} "
                               f"(and {MAX_FRAMES} frames). Refused before extracting anything.")
        for info in infos:
            if _unsafe_member(info.filename):
                raise DatasetError(f"the zip holds a file named {_quote(info.filename)}, which points "
                                   "outside the archive (an absolute path or '..'): refused (zip slip).")
            if info.flag_bits & 0x1:
                raise DatasetError("the zip is encrypted (password-protected); upload an unencrypted zip.")
            if info.file_size > MAX_FILE_BYTES:
                raise DatasetError(f"the zip holds {_quote(info.filename)}, declaring {_size(info.file_size)} "
                                   f"uncompressed; the limit per file is {_size(MAX_FILE_BYTES)}. Refused "
                                   "before extracting anything (a zip bomb?).")
            if info.file_size > 2**20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise DatasetError(f"the zip holds {_quote(info.filename)}, which compresses "
                                   f"{info.file_size / max(info.compress_size, 1):,.0f} times (the limit is "
                                   f"{MAX_RATIO}): refused before extracting anything (a zip bomb?).")
        total = sum(info.file_size for info in infos)
        if total > MAX_UNCOMPRESSED_BYTES:
            raise DatasetError(f"the zip's files declare {_size(total)} uncompressed; the limit is "
                               f"{_size(MAX_UNCOMPRESSED_BYTES)}. Refused before extracting anything (a zip bomb?).")
    except BaseException:
        zf.close()
        raise
    members = {info.filename.replace("\\", "/"): info for info in infos
               if not info.is_dir() and not info.filename.startswith("__MACOSX/")}
    return zf, members


_JSON_NAMES = ("transforms_train.json", "transforms.json")


def _open_source(path: Path) -> _Source:
    """The dataset's files, rooted at the folder that holds its transforms JSON."""
    expected = ("no transforms_train.json or transforms.json found; a dataset in the NeRF-synthetic (Blender) "
                "layout has them next to its image folders")
    if path.is_dir():
        source: _Source = _FolderSource(path)
        if not any(source.exists(name) for name in _JSON_NAMES):
            raise DatasetError(expected + ".")
        return source
    zf, members = _check_zip(path)
    roots = sorted({name.rsplit("/", 1)[0] + "/" if "/" in name else "" for name in members
                    if name.rsplit("/", 1)[-1] in _JSON_NAMES and name.count("/") <= 1})
    if len(roots) != 1:
        zf.close()
        if not roots:
            raise DatasetError(expected + " (at the top of the zip or in one folder at its top).")
        raise DatasetError(f"the zip holds several datasets ({', '.join(r or '(top)' for r in roots)}); zip one.")
    return _ZipSource(zf, members, roots[0])


# --- reading: the JSON ----------------------------------------------------------------------------


@dataclass
class _Split:
    """One transforms file, checked: the images' paths, cameras and field of view."""

    json_name: str
    paths: list[str]
    c2w: np.ndarray  # (N, 4, 4) float64
    angle_x: float  # radians


def _load_json(source: _Source, name: str, hasher) -> dict:
    data = source.read(name)
    if len(data) > MAX_JSON_BYTES:
        raise DatasetError(f"{name} is {_size(len(data))}; the limit is {_size(MAX_JSON_BYTES)}.")
    hasher.update(name.encode() + b"\0" + data)
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise DatasetError(f"{name} is not text (UTF-8 JSON).") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{name} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from None
    except RecursionError:
        raise DatasetError(f"{name} is not valid JSON (nested too deeply).") from None
    if not isinstance(doc, dict):
        raise DatasetError(f"{name} must hold a JSON object with camera_angle_x and frames.")
    return doc


def _resolve(source: _Source, name: str, i: int, file_path) -> str:
    """The image of frame `i` of `name`: `file_path` relative to the dataset root, '.png' optional."""
    where = f"{name}, frame {i}"
    if not isinstance(file_path, str) or not file_path.strip():
        raise DatasetError(f"{where}: file_path is missing or not a string.")
    if any(ord(ch) < 32 for ch in file_path):
        raise DatasetError(f"{where}: file_path {_quote(file_path)} holds control characters.")
    fp = file_path.replace("\\", "/")
    rel = posixpath.normpath(fp)
    if fp.startswith("/") or re.match(r"[A-Za-z]:", fp) or rel == ".." or rel.startswith("../"):
        raise DatasetError(f"{where}: file_path {_quote(file_path)} points outside the dataset; "
                           "paths must be relative to the JSON file, inside its folder.")
    for candidate in (rel, rel + ".png"):
        if source.exists(candidate):
            return candidate
    raise DatasetError(f"{where}: its image {rel!r} is not in the dataset (looked for {rel} and {rel}.png).")


def _check_matrix(m, where: str) -> np.ndarray:
    """A rigid 4x4 camera-to-world matrix as float64, its rotation made exactly orthonormal."""
    try:
        a = np.array(m, dtype=np.float64)
    except (ValueError, TypeError):
        raise DatasetError(f"{where}: transform_matrix is not a 4x4 matrix of numbers.") from None
    if a.shape != (4, 4):
        raise DatasetError(f"{where}: transform_matrix must be 4x4, not {'x'.join(map(str, a.shape)) or 'a number'}.")
    if not np.isfinite(a).all():
        raise DatasetError(f"{where}: transform_matrix holds NaN or infinite values.")
    rot = a[:3, :3]
    err = float(np.abs(rot.T @ rot - np.eye(3)).max())
    if err > 1e-3 or not np.allclose(a[3], [0, 0, 0, 1], atol=1e-4) or np.linalg.det(rot) < 0:
        raise DatasetError(f"{where}: transform_matrix is not a rigid camera-to-world transform (a rotation and a "
                           "translation, last row 0 0 0 1, no scale, shear or mirroring).")
    u, _, vt = np.linalg.svd(rot)
    a[:3, :3] = u @ vt  # the nearest rotation: removes the rounding of the numbers as written
    return a


def _subset(split: _Split, mask: np.ndarray) -> _Split:
    return _Split(split.json_name, [p for p, m in zip(split.paths, mask) if m], split.c2w[mask], split.angle_x)


def _parse_split(source: _Source, name: str, hasher) -> _Split:
    doc = _load_json(source, name, hasher)
    angle = doc.get("camera_angle_x")
    if angle is None:
        raise DatasetError(f"{name} has no camera_angle_x (the horizontal field of view in radians).")
    if isinstance(angle, bool) or not isinstance(angle, (int, float)) or not (0 < angle < math.pi):
        raise DatasetError(f"{name}: camera_angle_x must be a number of radians between 0 and pi, not {angle!r}.")
    frames = doc.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DatasetError(f"{name} has no frames (a list of file_path and transform_matrix).")
    if len(frames) > MAX_FRAMES:
        raise DatasetError(f"{name} has {len(frames):,} frames; the limit is {MAX_FRAMES}. Refused rather than "
                           "subsampled: keep fewer views (e.g. every second one).")
    paths, mats = [], []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise DatasetError(f"{name}, frame {i}: not an object with file_path and transform_matrix.")
        if "transform_matrix" not in frame:
            raise DatasetError(f"{name}, frame {i}: no transform_matrix.")
        mats.append(_check_matrix(frame["transform_matrix"], f"{name}, frame {i}"))
        paths.append(_resolve(source, name, i, frame.get("file_path")))
    return _Split(name, paths, np.stack(mats), float(angle))


# --- reading: the images -------------------------------------------------------------------------


def _decode(data: bytes, rel: str, expect: tuple[int, int] | None) -> tuple[np.ndarray, tuple[int, int]]:
    """An image as (S, S, 4) uint8 RGBA: centre-cropped to a square, downscaled to LOAD_SIZE at most."""
    try:
        im = Image.open(io.BytesIO(data), formats=["PNG"])
    except Image.DecompressionBombError:
        raise DatasetError(f"{rel} is too large an image; the limit is {MAX_IMAGE_PIXELS:,} pixels.") from None
    except Exception:
        raise DatasetError(f"{rel} could not be read as a PNG image; the images must be RGBA PNGs.") from None
    w, h = im.size
    if w * h > MAX_IMAGE_PIXELS:
        raise DatasetError(f"{rel} is {w}x{h} pixels, over the limit of {MAX_IMAGE_PIXELS:,} pixels "
                           f"(e.g. {math.isqrt(MAX_IMAGE_PIXELS)}x{math.isqrt(MAX_IMAGE_PIXELS)}): refused rather "
                           f"than decoded. Downscale the images (recon reads them at {LOAD_SIZE} px at most).")
    if expect is not None and (w, h) != expect:
        raise DatasetError(f"{rel} is {w}x{h} pixels but the first image is {expect[0]}x{expect[1]}: all images "
                           "must have the same size.")
    if "A" not in im.getbands() and "transparency" not in im.info:
        raise DatasetError(f"{rel} has no alpha channel: the silhouettes come from alpha; save RGBA PNGs "
                           "(e.g. with a transparent background).")
    try:
        im = im.convert("RGBA")
    except Exception:
        raise DatasetError(f"{rel} could not be read as a PNG image (damaged or truncated).") from None
    side = min(w, h)
    if w != h:
        left, top = (w - side) // 2, (h - side) // 2
        im = im.crop((left, top, left + side, top + side))
    if side > LOAD_SIZE:
        im = im.resize((LOAD_SIZE, LOAD_SIZE), Image.BOX)  # Pillow averages RGBA premultiplied
    return np.asarray(im), (w, h)


def _crop_fov(angle_x: float, size: tuple[int, int]) -> float:
    """Degrees of field of view of the centre square of an image W x H of horizontal FoV `angle_x`.

    The square keeps the shorter side: a wide image loses width, so its FoV shrinks to
    ``2 atan(tan(angle_x / 2) H / W)``; a tall one keeps its full width and horizontal FoV.
    """
    w, h = size
    return math.degrees(2 * math.atan(math.tan(angle_x / 2) * min(w, h) / w))


# --- reading: the whole dataset -------------------------------------------------------------------


def read_dataset(path: str | os.PathLike, *, center: Sequence[float] | None = None, scale: float | None = None,
                 filename: str | None = None) -> Dataset:
    """Read, check and place a dataset in the Blender layout, from a folder or a .zip.

    The held-out set is ``transforms_test.json``, else ``transforms_val.json``, else every 8th
    frame. `center` and `scale` override :func:`normalise_scene`'s. `filename` is the name to show
    in messages (an upload's original name). A zip is never extracted: its members' names, flags
    and declared sizes are checked first, then each file is read from it into memory. Anything
    unusable raises :class:`DatasetError` naming the dataset and what is wrong.
    """
    path = Path(path)
    shown = display_name(filename or str(path))
    try:
        if not path.exists():
            raise DatasetError("does not exist.")
        if not path.is_dir() and not path.is_file():
            raise DatasetError("is neither a folder nor a .zip file.")
        source = _open_source(path)
        try:
            return _read(source, safe_name(filename or path.name), center, scale)
        finally:
            source.close()
    except DatasetError as exc:
        msg = str(exc)
        raise DatasetError(f"'{shown}' {msg}" if msg.startswith(("is ", "does ")) else f"'{shown}': {msg}") from None


def _read(source: _Source, name: str, center, scale) -> Dataset:
    hasher = hashlib.sha1()
    notes = []
    if source.exists("transforms_train.json"):
        train = _parse_split(source, "transforms_train.json", hasher)
        held_name = next((n for n in ("transforms_test.json", "transforms_val.json") if source.exists(n)), None)
        if held_name == "transforms_test.json" and source.exists("transforms_val.json"):
            notes.append("transforms_val.json was not used: the test split is the held-out set.")
        test = _parse_split(source, held_name, hasher) if held_name else None
    else:
        train, test = _parse_split(source, "transforms.json", hasher), None
    if test is None:
        n = len(train.paths)
        if n < 2:
            raise DatasetError(f"{train.json_name} has a single frame; at least 2 are needed (one is held out).")
        held = np.arange(n) % HOLDOUT_EVERY == 0
        train, test = _subset(train, ~held), _subset(train, held)
        notes.append(f"{train.json_name} has no separate test split: every {HOLDOUT_EVERY}th frame (0, "
                     f"{HOLDOUT_EVERY}, {2 * HOLDOUT_EVERY}, ...) is held out, {len(test.paths)} of {n}.")
    total = len(train.paths) + len(test.paths)
    if total > MAX_FRAMES:
        raise DatasetError(f"the dataset has {total:,} frames ({len(train.paths)} training, {len(test.paths)} held "
                           f"out); the limit is {MAX_FRAMES}. Refused rather than subsampled: keep fewer views.")

    size = None
    images = []
    for rel in train.paths + test.paths:
        data = source.read(rel)
        hasher.update(rel.encode() + b"\0" + data)
        image, size = _decode(data, rel, size)
        images.append(image)
    stack = torch.from_numpy(np.stack(images))  # (N, S, S, 4) uint8
    w, h = size
    if w != h:
        side = min(w, h)
        notes.append(f"The images are {w}x{h}: the centre {side}x{side} square of each is used, and the field of "
                     f"view is that of the square ({_crop_fov(train.angle_x, size):.1f} degrees).")
    if min(w, h) > LOAD_SIZE:
        notes.append(f"The images were downscaled to {LOAD_SIZE}x{LOAD_SIZE} (area filter) as they were read: "
                     f"recon fits images of {LOAD_SIZE} px at most.")

    R, T = opengl_to_pytorch3d(torch.from_numpy(np.concatenate([train.c2w, test.c2w])))  # (N, 3, 3), (N, 3)
    R, T, note = normalise_scene(R, T, center=center, scale=scale)
    notes.append(note)
    overrides = (None if center is None else [float(x) for x in center], None if scale is None else float(scale))
    hasher.update(repr(overrides).encode())
    n = len(train.paths)
    R, T = R.float(), T.float()

    def frames(split: _Split, sl: slice) -> Frames:
        return Frames(images=stack[sl], R=R[sl].contiguous(), T=T[sl].contiguous(),
                      fov_deg=_crop_fov(split.angle_x, size))

    notes.insert(0, f"{n} training and {len(test.paths)} held-out views of {w}x{h} pixels.")
    return Dataset(name=name, key=f"dataset:{hasher.hexdigest()[:16]}", train=frames(train, slice(0, n)),
                   test=frames(test, slice(n, None)), notes=tuple(notes))
