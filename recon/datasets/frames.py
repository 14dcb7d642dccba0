"""A dataset in memory: :class:`Frames` (one split's RGBA images and cameras), :class:`Dataset` (the
training and held-out splits, with notes), and :func:`composite`, which turns RGBA frames into the
images and silhouettes the methods fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .cameras import camera_centres


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
