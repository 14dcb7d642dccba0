"""Images as plain numpy arrays: conversion to uint8, resizing, and putting views side by side.

The ground floor of the package: it imports nothing from recon, so methods, the renderers, the
page's views, the history's thumbnails and the exports all use these and none of them has to reach
up into another.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

WHITE = 255


def to_uint8(img: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) as uint8 RGB (H, W, 3).

    uint8 input is passed through (alpha dropped, grey expanded), so callers need not check.
    """
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    img = img[..., :3]
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img)
    img = np.nan_to_num(img.astype(np.float32))
    return (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def resize_nearest(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W, ...) array to (height, width, ...): pixels are repeated
    or dropped, never blended, so small renders stay crisp when enlarged."""
    h, w = img.shape[:2]
    ys = np.minimum((np.arange(height) * h / height).astype(int), h - 1)
    xs = np.minimum((np.arange(width) * w / width).astype(int), w - 1)
    return img[ys][:, xs]


def fit_longest(img: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize so that the longer side is `size`, keeping the aspect ratio."""
    h, w = img.shape[:2]
    s = size / max(h, w)
    return resize_nearest(img, max(1, round(h * s)), max(1, round(w * s)))


def square(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB (size, size, 3): every frame of a video must have the same shape."""
    return np.ascontiguousarray(resize_nearest(to_uint8(img), size, size))


def side_by_side(images: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """uint8 images in a row, each brought to the tallest one's height, with white gaps."""
    h = max(im.shape[0] for im in images)
    parts: list[np.ndarray] = []
    for i, im in enumerate(images):
        im = to_uint8(im)
        if im.shape[0] != h:
            im = resize_nearest(im, h, max(1, round(im.shape[1] * h / im.shape[0])))
        parts.append(im)
        if i < len(images) - 1:
            parts.append(np.full((h, gap, 3), WHITE, np.uint8))
    return np.concatenate(parts, axis=1)


def stack_rows(rows: Sequence[np.ndarray], gap: int = 4, min_height: int = 384) -> np.ndarray:
    """Rows of images one above the other (padded white to the widest), enlarged by a whole factor
    until at least `min_height` pixels tall so that small renders are visible in the page."""
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=WHITE) for r in rows]
    out = np.concatenate(padded, axis=0)
    scale = max(1, min_height // max(out.shape[0], 1))
    return out.repeat(scale, 0).repeat(scale, 1) if scale > 1 else out


def views_grid(images: dict[str, np.ndarray]) -> np.ndarray | None:
    """Target vs current render (top) and target vs current silhouette (bottom), as one image."""
    rows = []
    for pair in (("target", "render"), ("target_silhouette", "silhouette")):
        row = [images[k] for k in pair if k in images]
        if row:
            rows.append(side_by_side(row))
    return stack_rows(rows) if rows else None
