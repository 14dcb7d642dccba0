"""What a mesh file declares (:class:`Declared`), and the two ways reading it can fail
(:class:`MalformedMesh`, :class:`StructureTooLarge`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class MalformedMesh(ValueError):
    """The file contradicts itself: truncated, or declaring more than its bytes can hold. The message
    completes "the file could not be read: ..."."""


class StructureTooLarge(ValueError):
    """The file's structure alone (a GLB's scene description, a PLY header) is too large to read safely."""


@dataclass(frozen=True)
class Declared:
    """What a mesh file declares, in the units its loader will allocate.

    For a GLB every count is multiplied by the number of nodes that place each mesh in the scene,
    because trimesh (loading with ``force="mesh"``) concatenates one copy per placement.
    """

    vertices: int
    faces: int  # triangles, once polygons are fan-triangulated as the loaders do
    min_corners: int = 3  # fewest corners of a face (equal to max_corners: every face has the same size)
    max_corners: int = 3  # most corners of a face
    nodes: int = 0  # GLB: nodes in the file
    parts: int = 0  # GLB: mesh primitives after instancing, the pieces trimesh concatenates
    data_bytes: int = 0  # GLB: bytes trimesh materialises from buffer views and accessors
    images: tuple[tuple[int, int], ...] = ()  # GLB: (width, height) of each embedded PNG or JPEG

    @property
    def uniform(self) -> bool:
        """Whether every face has the same number of corners (the loaders' vectorised path)."""
        return self.min_corners == self.max_corners


def polygons(corners: np.ndarray, vertices: int) -> Declared:
    """A Declared for `vertices` vertices and faces with `corners` (F,) corners each."""
    if not len(corners):
        return Declared(vertices=vertices, faces=0, min_corners=0, max_corners=0)
    return Declared(vertices=vertices, faces=int(np.clip(corners - 2, 0, None).sum()),
                    min_corners=int(corners.min()), max_corners=int(corners.max()))
