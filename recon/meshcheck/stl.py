"""STL: the triangle count, from a binary file's header or an ASCII file's facets."""

from __future__ import annotations

import struct

from .declared import Declared, MalformedMesh


def declared_stl(data: bytes) -> Declared:
    """STL: a binary one is 84 + 50 bytes per triangle (trimesh reads it as binary only then); any other
    file is read as ASCII, with one "endfacet" per triangle."""
    if len(data) >= 84:
        (n,) = struct.unpack_from("<I", data, 80)
        if 84 + 50 * n == len(data):
            return Declared(vertices=3 * n, faces=n)
    if data.lstrip()[:5].lower() == b"solid":
        n = data.count(b"endfacet") + data.count(b"ENDFACET")
        return Declared(vertices=3 * n, faces=n)
    if len(data) < 84:
        raise MalformedMesh("it is shorter than a binary STL header and is not an ASCII STL")
    raise MalformedMesh(f"its header declares {n:,} triangles, which need {84 + 50 * n:,} bytes, but the file has "
                        f"{len(data):,}")
