"""How the quality of a fit is measured and shown: the held-out measures of the image-based methods,
and the metadata every method gives its measures (label, which way is better, axis)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Metric:
    """How a quality measure is shown: its label, which way is better, and its axis."""

    label: str  # "PSNR (dB)"
    short: str  # "PSNR", for tables
    higher_is_better: bool
    log_axis: bool = False


#: Prefix of a live estimate's key: "live_psnr" is the cheap estimate of "psnr" taken while a run goes.
LIVE = "live_"

#: The quality measures of every method that fits images, on held-out views.
IMAGE_METRICS = {"psnr": Metric("PSNR (dB)", "PSNR", True), "iou": Metric("silhouette IoU", "IoU", True)}


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1] (mean over the whole batch)."""
    mse = torch.mean((pred.clamp(0, 1) - target) ** 2).item()
    return float(10 * math.log10(1.0 / max(mse, 1e-10)))


def silhouette_iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> float:
    """Intersection over union of silhouettes thresholded at `threshold` (over the whole batch)."""
    p, t = pred > threshold, target > threshold
    union = (p | t).sum().item()
    return float((p & t).sum().item() / union) if union else 1.0
