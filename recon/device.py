"""The one place that decides where tensors live.

`RECON_DEVICE` (e.g. ``cpu``, ``cuda``, ``cuda:1``) overrides the automatic choice.
Nothing here runs at import time.
"""

from __future__ import annotations

import os

import torch


def pick_device(override: str | None = None) -> torch.device:
    """The device runs use: ``override``, else ``$RECON_DEVICE``, else CUDA when present, else CPU."""
    name = override or os.environ.get("RECON_DEVICE", "").strip()
    if name:
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"RECON_DEVICE={name} but CUDA is not available on this machine")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe(device: torch.device) -> str:
    """A short human name: ``cpu (2 threads)`` or ``cuda:0 (NVIDIA H100)``."""
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)})"
    return f"cpu ({torch.get_num_threads()} threads)"
