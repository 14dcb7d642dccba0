"""Writing views in the Blender layout (:func:`write_dataset`): recon's own target views, as a folder
or a zip that :func:`recon.datasets.read_dataset` (and NeRF code) reads back.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .cameras import pytorch3d_to_opengl


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
