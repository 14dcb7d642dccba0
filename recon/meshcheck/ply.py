"""PLY: the header's elements and properties, and the corners of every face, ASCII or binary.

An ASCII body is counted with the text scanner (:mod:`recon.meshcheck.text`); a binary one is
stepped over without reading its values, checked first against the smallest size its counts need.
"""

from __future__ import annotations

import array
import re
import struct
from dataclasses import dataclass

import numpy as np

from .declared import Declared, MalformedMesh, StructureTooLarge, polygons
from .text import lines_of

#: A PLY header longer than this is refused before PyTorch3D walks it line by line.
MAX_PLY_HEADER_BYTES = 1 << 20
#: A binary PLY element with more rows of varying size than this is not walked (~0.4 us a row in Python).
MAX_WALKED_ROWS = 2_000_000

_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


#: The line that ends a PLY header (PyTorch3D strips each line, so "comment end_header" does not end it).
_END_HEADER = re.compile(rb"^[ \t\r\v\f]*end_header[ \t\r\v\f]*$", re.MULTILINE)


@dataclass(frozen=True)
class _PlyProperty:
    dtype: str  # numpy type code of the value (of each item, for a list)
    count_dtype: str | None = None  # numpy type code of a list's length; None: a scalar


@dataclass(frozen=True)
class _PlyElement:
    name: str
    count: int
    properties: tuple[_PlyProperty, ...]


def _ply_header(data: bytes) -> tuple[str, list[_PlyElement], int]:
    """(format, elements, offset of the body) from a PLY header."""
    end = _END_HEADER.search(data, 0, MAX_PLY_HEADER_BYTES)
    if end is None:
        if len(data) > MAX_PLY_HEADER_BYTES:
            raise StructureTooLarge(f"its header is not over within the first {MAX_PLY_HEADER_BYTES // 2**20} MB")
        raise MalformedMesh("its header has no 'end_header' line")
    body = min(end.end() + 1, len(data))  # after the newline
    fmt = ""
    elements: list[tuple[str, int, list[_PlyProperty]]] = []
    for raw in data[:end.start()].decode("ascii", "replace").split("\n")[1:]:  # lines as PyTorch3D reads them
        words = raw.split()
        if words[:1] == ["format"] and len(words) > 1:
            fmt = words[1]
        elif words[:1] == ["element"]:
            if len(words) != 3 or not words[2].isdigit():
                raise MalformedMesh(f"its header line {raw.strip()[:40]!r} is not 'element <name> <count>'")
            elements.append((words[1], int(words[2]), []))
        elif words[:1] == ["property"] and elements:
            if len(words) == 5 and words[1] == "list" and words[2] in _PLY_TYPES and words[3] in _PLY_TYPES:
                elements[-1][2].append(_PlyProperty(_PLY_TYPES[words[3]], _PLY_TYPES[words[2]]))
            elif len(words) == 3 and words[1] in _PLY_TYPES:
                elements[-1][2].append(_PlyProperty(_PLY_TYPES[words[1]]))
            else:
                raise MalformedMesh(f"its header line {raw.strip()[:40]!r} is not a valid property")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise MalformedMesh("its header has no valid 'format' line")
    return fmt, [_PlyElement(name, n, tuple(props)) for name, n, props in elements], body


def declared_ply(data: bytes) -> Declared:
    """PLY: the counts of the "vertex" and "face" elements and the corners of every face."""
    fmt, elements, body = _ply_header(data)
    vertices = next((e.count for e in elements if e.name == "vertex"), 0)
    if fmt == "ascii":
        # One line per element item; a face line is "n i1 .. in", so its corners are its tokens - 1.
        sections = lines_of(data, body, [(_plural(e.name), e.count) for e in elements])
        faces = next((tokens - 1 for e, (tokens, _) in zip(elements, sections) if e.name == "face"), np.zeros(0, np.int64))
        return polygons(faces, vertices)
    order = ">" if fmt == "binary_big_endian" else "<"
    _check_minimum_size(data, body, elements)
    corners = (0, 0, 0)  # (triangles, fewest corners, most corners) of the face element
    pos = body
    for e in elements:
        pos, stats = _walk_binary(data, pos, e, order)
        if e.name == "face":
            corners = stats
    return Declared(vertices=vertices, faces=corners[0], min_corners=corners[1], max_corners=corners[2])


def _plural(name: str) -> str:
    return {"vertex": "vertices", "face": "faces"}.get(name, f"'{name}' items")


def _check_minimum_size(data: bytes, body: int, elements: list[_PlyElement]) -> None:
    """Refuse a binary body shorter than its header's counts need even with the smallest lists (faces
    of three corners), before walking it: a 1 kB file claiming 50,000,000 faces stops here."""
    left = len(data) - body
    for e in elements:
        least_items = 3 if e.name == "face" else 0
        row = sum(np.dtype(p.dtype).itemsize if p.count_dtype is None
                  else np.dtype(p.count_dtype).itemsize + least_items * np.dtype(p.dtype).itemsize for p in e.properties)
        if e.count * row > left:
            raise MalformedMesh(f"its header declares {e.count:,} {_plural(e.name)}, which need at least "
                                f"{e.count * row:,} bytes, but only {left:,} are left for them")
        left -= e.count * row


def _walk_binary(data: bytes, pos: int, e: _PlyElement, order: str) -> tuple[int, tuple[int, int, int]]:
    """Step over the binary element `e` starting at byte `pos`, without reading its values.

    Returns the offset after it and, for its first list property, (triangles after fan triangulation,
    fewest items, most items). Rows holding lists are variable-sized, so they are walked one by one,
    except in the usual case where every row has the list lengths of the first one: that is checked at
    once on strided numpy views of the length fields.
    """
    # Per property: (bytes of a scalar, or of each list item; the list length's struct, None for a scalar).
    plan = [(np.dtype(p.dtype).itemsize, None if p.count_dtype is None else struct.Struct(order + _STRUCT[p.count_dtype]))
            for p in e.properties]
    if all(fmt is None for _, fmt in plan):
        end = pos + e.count * sum(size for size, _ in plan)
        if end > len(data):
            raise MalformedMesh(f"it ends inside its {_plural(e.name)}")
        return end, (0, 0, 0)
    if not e.count:
        return pos, (0, 0, 0)

    def row(at: int) -> tuple[int, int, list[int]]:
        """(end of the row starting at `at`, its first list's length, offsets of its length fields)."""
        first, fields = -1, []
        for size, fmt in plan:
            if fmt is None:
                at += size
                continue
            if at + fmt.size > len(data):
                raise MalformedMesh(f"it ends inside its {_plural(e.name)}")
            (n,) = fmt.unpack_from(data, at)
            if n < 0:
                raise MalformedMesh(f"one of its {_plural(e.name)} has a negative length")
            first = n if first < 0 else first
            fields.append(at)
            at += fmt.size + n * size
        if at > len(data):
            raise MalformedMesh(f"it ends inside its {_plural(e.name)}")
        return at, first, fields

    end, n, fields = row(pos)
    size = end - pos
    if pos + e.count * size <= len(data):
        lists = [(p, fmt) for p, (_, fmt) in zip(e.properties, plan) if fmt is not None]
        same = all((np.ndarray((e.count,), order + p.count_dtype, data, offset=at, strides=(size,))  # (R,) a view
                    == fmt.unpack_from(data, at)[0]).all() for at, (p, fmt) in zip(fields, lists))
        if same:
            return pos + e.count * size, (e.count * max(n - 2, 0), n, n)
    if e.count > MAX_WALKED_ROWS:
        raise StructureTooLarge(f"its {e.count:,} {_plural(e.name)} differ in size; "
                                f"at most {MAX_WALKED_ROWS:,} such rows are read")
    lengths = array.array("q")  # the first list's length in each row
    at = pos
    if len(plan) == 1:  # the usual face element, a single list: a tight loop, ~0.4 us a row
        item, fmt = plan[0]
        unpack, step = fmt.unpack_from, fmt.size
        try:
            for _ in range(e.count):
                (n,) = unpack(data, at)
                lengths.append(n)
                at += step + n * item
        except struct.error:
            raise MalformedMesh(f"it ends inside its {_plural(e.name)}") from None
    else:
        for _ in range(e.count):
            at, n, _ = row(at)
            lengths.append(n)
    counts = np.frombuffer(lengths, dtype=np.int64)  # (R,)
    if counts.min() < 0:
        raise MalformedMesh(f"one of its {_plural(e.name)} has a negative length")
    if at > len(data):
        raise MalformedMesh(f"it ends inside its {_plural(e.name)}")
    return at, (int(np.clip(counts - 2, 0, None).sum()), int(counts.min()), int(counts.max()))


_STRUCT = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "f4": "f", "f8": "d"}
