"""The registry of methods: name -> (class, one-line description), in the page's order."""

from __future__ import annotations

from .base import Method
from .deform import Deform
from .nerf import Nerf
from .textured_mesh import TexturedMesh
from .volume import Volume

METHODS: dict[str, tuple[type[Method], str]] = {
    Deform.name: (Deform, "Deform an ico-sphere into the target with a Chamfer loss and mesh regularisers"),
    TexturedMesh.name: (TexturedMesh, "Fit a coloured mesh to multi-view images by differentiable rendering"),
    Volume.name: (Volume, "Fit a voxel grid of densities and colours to multi-view images by ray marching"),
    Nerf.name: (Nerf, "Fit a small neural radiance field (MLP density and colour) to multi-view images"),
}


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise KeyError(f"Unknown method {name!r}; methods are {', '.join(METHODS)}.")
    return METHODS[name][0]
