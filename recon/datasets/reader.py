"""Reading a dataset (:func:`read_dataset`): the transforms JSON, the camera matrices, the images.

The JSON and every frame's matrix and image path are checked first; then the images are decoded one
at a time (each refused from its header if too large, centre-cropped to a square and downscaled to
:data:`LOAD_SIZE` as it is read), the cameras converted to PyTorch3D's and the scene placed where
recon's methods expect it (:func:`recon.datasets.cameras.normalise_scene`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..text import display_name, safe_name
from .cameras import normalise_scene, opengl_to_pytorch3d
from .frames import Dataset, Frames
from .limits import LOAD_SIZE, MAX_FRAMES, MAX_IMAGE_PIXELS, MAX_JSON_BYTES, DatasetError, show_name, show_size
from .sources import Source, open_source

#: With a single transforms.json (or no test/val split), frames 0, 8, 16, ... are held out.
HOLDOUT_EVERY = 8


# --- reading: the JSON ----------------------------------------------------------------------------


@dataclass
class _Split:
    """One transforms file, checked: the images' paths, cameras and field of view."""

    json_name: str
    paths: list[str]
    c2w: np.ndarray  # (N, 4, 4) float64
    angle_x: float  # radians


def _load_json(source: Source, name: str, hasher) -> dict:
    data = source.read(name)
    if len(data) > MAX_JSON_BYTES:
        raise DatasetError(f"{name} is {show_size(len(data))}; the limit is {show_size(MAX_JSON_BYTES)}.")
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


def _resolve(source: Source, name: str, i: int, file_path) -> str:
    """The image of frame `i` of `name`: `file_path` relative to the dataset root, '.png' optional."""
    where = f"{name}, frame {i}"
    if not isinstance(file_path, str) or not file_path.strip():
        raise DatasetError(f"{where}: file_path is missing or not a string.")
    if any(ord(ch) < 32 for ch in file_path):
        raise DatasetError(f"{where}: file_path {show_name(file_path)} holds control characters.")
    fp = file_path.replace("\\", "/")
    rel = posixpath.normpath(fp)
    if fp.startswith("/") or re.match(r"[A-Za-z]:", fp) or rel == ".." or rel.startswith("../"):
        raise DatasetError(f"{where}: file_path {show_name(file_path)} points outside the dataset; "
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


def _parse_split(source: Source, name: str, hasher) -> _Split:
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
        source = open_source(path)
        try:
            return _read(source, safe_name(filename or path.name), center, scale)
        finally:
            source.close()
    except DatasetError as exc:
        msg = str(exc)
        raise DatasetError(f"'{shown}' {msg}" if msg.startswith(("is ", "does ")) else f"'{shown}': {msg}") from None


def _read(source: Source, name: str, center, scale) -> Dataset:
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
