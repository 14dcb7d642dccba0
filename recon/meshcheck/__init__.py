"""How big a mesh file says it is, read from its header and structure without parsing its geometry.

The loaders (PyTorch3D for .obj/.ply/.off, trimesh for .stl/.glb) allocate whatever a file declares,
and some of them pay Python objects per face: a 1.7 MB GLB that places one mesh in 100,000 nodes, or a
0.2 MB PLY with one 199,701-corner polygon, costs them gigabytes and tens of seconds. This package
answers "how much would the loader build?" first, so that a caller can refuse before anything is
parsed. It reads PLY/OFF headers and the per-face corner counts, OBJ line kinds, STL triangle counts and
the GLB scene description (nodes, meshes, accessors, image headers), and checks the declared counts
against the bytes actually present: a file whose header claims more than it holds is `MalformedMesh`.

Its own work is bounded by the file's length (at most the upload limit): text is scanned with numpy one
megabyte at a time; Python loops run only over the rows of a binary PLY element whose rows differ in
size (at most MAX_WALKED_ROWS) and over a GLB's JSON objects (at most MAX_JSON_VALUES).

:func:`declared_size` sends a file to the reader of its format, a room per family:

- :mod:`recon.meshcheck.declared`: :class:`Declared` and the errors, which every reader shares;
- :mod:`recon.meshcheck.text`: the numpy text scanner, and OBJ and OFF;
- :mod:`recon.meshcheck.ply`: PLY, ASCII (with the text scanner) and binary;
- :mod:`recon.meshcheck.stl`: STL;
- :mod:`recon.meshcheck.glb`: GLB.

The ground floor of recon: it imports only the standard library and numpy.
"""

from __future__ import annotations

from .declared import Declared, MalformedMesh, StructureTooLarge
from .glb import MAX_JSON_VALUES, declared_glb
from .ply import MAX_PLY_HEADER_BYTES, MAX_WALKED_ROWS, declared_ply
from .stl import declared_stl
from .text import declared_obj, declared_off

__all__ = ["MAX_JSON_VALUES", "MAX_PLY_HEADER_BYTES", "MAX_WALKED_ROWS", "Declared", "MalformedMesh",
           "StructureTooLarge", "declared_size"]


def declared_size(data: bytes, ext: str) -> Declared:
    """What the mesh file `data` (with extension `ext`, e.g. ".ply") declares, without parsing its
    geometry. Raises :class:`MalformedMesh` or :class:`StructureTooLarge`."""
    readers = {".obj": declared_obj, ".ply": declared_ply, ".off": declared_off, ".stl": declared_stl,
               ".glb": declared_glb}
    return readers[ext](data)
