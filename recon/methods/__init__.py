"""The registry of methods: name -> (class, one-line description), in the page's order; and their presets."""

from __future__ import annotations

from typing import Any

from ..params import to_values, validate
from .base import Method
from .deform import Deform
from .nerf import Nerf
from .splats import Splats
from .textured_mesh import TexturedMesh
from .volume import Volume

METHODS: dict[str, tuple[type[Method], str]] = {
    Deform.name: (Deform, "Deform an ico-sphere into the target with a Chamfer loss and mesh regularisers"),
    TexturedMesh.name: (TexturedMesh, "Fit a coloured mesh to multi-view images by differentiable rendering"),
    Volume.name: (Volume, "Fit a voxel grid of densities and colours to multi-view images by ray marching"),
    Nerf.name: (Nerf, "Fit a small neural radiance field (MLP density and colour) to multi-view images"),
    Splats.name: (Splats, "Fit coloured, semi-transparent point splats to multi-view images (pulsar renderer)"),
}


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise KeyError(f"Unknown method {name!r}; methods are {', '.join(METHODS)}.")
    return METHODS[name][0]


def device_preset(method: str, device_type: str) -> str:
    """The preset a method starts with on this device (e.g. "Quick" on a CPU): recon's default."""
    cls = get_method(method)
    return cls.device_presets.get(device_type) or next(iter(cls.presets), "Defaults")


def preset_values(method: str, preset: str | None = None, device_type: str = "cpu") -> dict[str, Any]:
    """Every knob's value under `preset` (default: the device's): the defaults updated with the preset."""
    cls = get_method(method)
    preset = preset or device_preset(method, device_type)
    cfg, _ = validate(cls.Config, cls.presets.get(preset, {}))
    return to_values(cfg)
