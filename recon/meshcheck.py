"""How big a mesh file says it is, read from its header and structure without parsing its geometry.

The loaders (PyTorch3D for .obj/.ply/.off, trimesh for .stl/.glb) allocate whatever a file declares,
and some of them pay Python objects per face: a 1.7 MB GLB that places one mesh in 100,000 nodes, or a
0.2 MB PLY with one 199,701-corner polygon, costs them gigabytes and tens of seconds. This module
answers "how much would the loader build?" first, so that a caller can refuse before anything is
parsed. It reads PLY/OFF headers and the per-face corner counts, OBJ line kinds, STL triangle counts and
the GLB scene description (nodes, meshes, accessors, image headers), and checks the declared counts
against the bytes actually present: a file whose header claims more than it holds is `MalformedMesh`.

Its own work is bounded by the file's length (at most the upload limit): text is scanned with numpy one
megabyte at a time; Python loops run only over the rows of a binary PLY element whose rows differ in
size (at most MAX_WALKED_ROWS) and over a GLB's JSON objects (at most MAX_JSON_VALUES).

The ground floor of the package: it imports only the standard library and numpy.
"""

from __future__ import annotations

import array
import base64
import json
import re
import struct
from dataclasses import dataclass
from typing import Iterator

import numpy as np

#: A GLB's scene description (JSON) with more values than this is not parsed: 200,000 values already
#: describe thousands of nodes, while `json.loads` of a few MB of tiny objects costs ~100 MB and a second.
MAX_JSON_VALUES = 200_000
#: A PLY header longer than this is refused before PyTorch3D walks it line by line.
MAX_PLY_HEADER_BYTES = 1 << 20
#: A binary PLY element with more rows of varying size than this is not walked (~0.4 us a row in Python).
MAX_WALKED_ROWS = 2_000_000
#: Image headers are looked for in the first this-many bytes of an embedded image.
_IMAGE_HEAD_BYTES = 1 << 18
#: Text is scanned in chunks of about this many bytes, which bounds the scan's memory (~20 bytes per byte).
_CHUNK_BYTES = 1 << 20


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


def declared_size(data: bytes, ext: str) -> Declared:
    """What the mesh file `data` (with extension `ext`, e.g. ".ply") declares, without parsing its
    geometry. Raises :class:`MalformedMesh` or :class:`StructureTooLarge`."""
    readers = {".obj": _obj, ".ply": _ply, ".off": _off, ".stl": _stl, ".glb": _glb}
    return readers[ext](data)


# --- text: one pass of numpy over the bytes ---------------------------------------------------------

_NEXT_SPACE = re.compile(rb"[ \t\r\n\v\f]")


def _is_space(b: np.ndarray) -> np.ndarray:
    """Where the bytes `b` are whitespace, as bytes.split() sees it."""
    return (b == 32) | ((b >= 9) & (b <= 13))


def _text_lines(data: bytes, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(tokens, key, pos)`` for the lines of ``data[start:]`` that hold at least one token, in
    order, a chunk of about a megabyte at a time.

    tokens: (L,) int64 whitespace-separated tokens on the line.
    key: (L,) int64 the line's first token as a number: its first byte, plus 256 times its second byte
        when it is longer than one byte ("v" -> 118, "vt" -> 118 + 256 * 116).
    pos: (L,) int64 byte offset of the line's first token in `data`.

    Chunks are cut at whitespace, never inside a token, and a line that spans chunks is carried over,
    so one 20 MB line costs no more memory than many short ones. `start` must follow whitespace.
    """
    buf = np.frombuffer(data, dtype=np.uint8)  # (N,) a view: no copy
    n = len(buf)
    carry_tokens, carry_key, carry_pos = 0, -1, -1  # the open line so far, from earlier chunks
    a = start
    while a < n:
        cut = _NEXT_SPACE.search(data, min(a + _CHUNK_BYTES, n))
        b = cut.start() if cut and a + _CHUNK_BYTES < n else n
        seg = buf[a:b]  # (C,)
        space = _is_space(seg)
        begins = ~space
        begins[1:] &= space[:-1]  # token starts; seg[0] follows whitespace (see above)
        ts = np.flatnonzero(begins)  # (T,) token starts, relative to a
        starts = np.concatenate(([0], np.flatnonzero(seg == 10) + 1))  # (K + 1,) line starts; line K is open
        first = np.searchsorted(ts, starts)  # (K + 1,) index in ts of each line's first token, if it has one
        tokens = np.diff(first, append=len(ts))  # (K + 1,)
        has = tokens > 0
        at = ts[first[has]] + a  # (L,) absolute offsets of first tokens
        after = buf[np.minimum(at + 1, n - 1)].astype(np.int64)
        after[(at + 1 >= n) | _is_space(after)] = 0
        key = np.full(len(starts), -1, dtype=np.int64)
        pos = np.full(len(starts), -1, dtype=np.int64)
        key[has] = buf[at].astype(np.int64) + 256 * after
        pos[has] = at
        tokens[0] += carry_tokens
        if carry_key >= 0:
            key[0], pos[0] = carry_key, carry_pos
        carry_tokens, carry_key, carry_pos = int(tokens[-1]), int(key[-1]), int(pos[-1])
        done = tokens[:-1] > 0  # (K,) complete lines that hold a token
        if done.any():
            yield tokens[:-1][done], key[:-1][done], pos[:-1][done]
        a = b
    if carry_tokens:
        yield np.array([carry_tokens]), np.array([carry_key]), np.array([carry_pos])


def _obj(data: bytes) -> Declared:
    """Count "v" lines and the corners of each "f" line: PyTorch3D fan-triangulates polygons."""
    vertices = 0
    corners: list[np.ndarray] = []  # per chunk: (F,) corners of its face lines
    for tokens, key, _ in _text_lines(data):
        vertices += int(np.count_nonzero(key == ord("v")))
        corners.append(tokens[key == ord("f")] - 1)
    return _polygons(np.concatenate(corners) if corners else np.zeros(0, np.int64), vertices)


def _lines_of(data: bytes, start: int, sections: list[tuple[str, int]],
              skip_comments: bool = False) -> list[tuple[np.ndarray, int]]:
    """Consecutive sections of lines (e.g. [("vertices", V), ("faces", F)]) starting at byte `start`:
    for each, the (n,) token counts of its lines and the byte offset of its first line (-1 if empty).

    Raises :class:`MalformedMesh` when the file holds fewer lines than declared. Lines without tokens
    (and '#' comments if asked) are not counted: numpy's loadtxt, which PyTorch3D uses, skips them.
    """
    bounds = np.cumsum([0] + [n for _, n in sections])  # (S + 1,) first line of each section
    tokens_of: list[list[np.ndarray]] = [[] for _ in sections]
    first_at = [-1] * len(sections)
    seen = 0
    for tokens, key, pos in _text_lines(data, start):
        if skip_comments:
            keep = key % 256 != ord("#")
            tokens, pos = tokens[keep], pos[keep]
        index = np.arange(seen, seen + len(tokens))  # (L,) line numbers within the body
        for s in range(len(sections)):
            inside = np.flatnonzero((index >= bounds[s]) & (index < bounds[s + 1]))
            if len(inside):
                tokens_of[s].append(tokens[inside])
                first_at[s] = int(pos[inside[0]]) if first_at[s] < 0 else first_at[s]
        seen += len(tokens)
        if seen >= bounds[-1]:
            break
    for (name, n), lo in zip(sections, bounds):
        if seen < lo + n:
            raise MalformedMesh(f"its header declares {n:,} {name} but the file holds data for only {max(seen - lo, 0):,}")
    return [(np.concatenate(t) if t else np.zeros(0, np.int64), at) for t, at in zip(tokens_of, first_at)]


def _polygons(corners: np.ndarray, vertices: int) -> Declared:
    """A Declared for `vertices` vertices and faces with `corners` (F,) corners each."""
    if not len(corners):
        return Declared(vertices=vertices, faces=0, min_corners=0, max_corners=0)
    return Declared(vertices=vertices, faces=int(np.clip(corners - 2, 0, None).sum()),
                    min_corners=int(corners.min()), max_corners=int(corners.max()))


def _off(data: bytes) -> Declared:
    """OFF: "OFF", then "V F E", then V vertex lines and F face lines "n i1 .. in [colour]"."""
    words, body = _off_counts(data)
    try:
        n_verts, n_faces = int(words[0]), int(words[1])
    except (IndexError, ValueError):
        raise MalformedMesh("it has no 'vertices faces edges' counts line after 'OFF'") from None
    if n_verts < 0 or n_faces < 0:
        raise MalformedMesh("its counts line has negative counts")
    _, (face_tokens, first_face) = _lines_of(data, body, [("vertices", n_verts), ("faces", n_faces)], skip_comments=True)
    if not n_faces:
        return _polygons(face_tokens, n_verts)
    # A face line may end in an RGB(A) colour, equally wide on every line (PyTorch3D insists), so the
    # corners are its tokens less the count and the colour width that the first face line shows.
    colour = int(face_tokens[0]) - 1 - int(_first_token(data, first_face))
    return _polygons(face_tokens - 1 - max(colour, 0), n_verts)


def _off_counts(data: bytes, limit: int = 1 << 16) -> tuple[list[bytes], int]:
    """The words of an OFF file's counts line, as PyTorch3D finds it (after an optional "OFF" on the
    first line that holds anything), and the offset where the next line starts. Looks only at the first
    `limit` bytes: a header hidden after pages of blank lines is not one."""
    pos, seen_first = 0, False
    while pos < min(len(data), limit):
        newline = data.find(b"\n", pos)
        end = newline + 1 if newline >= 0 else len(data)
        line, pos = data[pos:end], end
        words = line.split(b"#")[0].split()
        if not words:
            continue
        if not seen_first and line[:3].lower() == b"off":
            seen_first, words = True, line[3:].split(b"#")[0].split()
            if not words:
                continue
        return words, pos
    return [], pos


def _first_token(data: bytes, pos: int) -> bytes:
    """The token starting at byte `pos` (at most 32 bytes of it)."""
    return data[pos:pos + 32].split()[0]


# --- PLY --------------------------------------------------------------------------------------------

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


def _ply(data: bytes) -> Declared:
    """PLY: the counts of the "vertex" and "face" elements and the corners of every face."""
    fmt, elements, body = _ply_header(data)
    vertices = next((e.count for e in elements if e.name == "vertex"), 0)
    if fmt == "ascii":
        # One line per element item; a face line is "n i1 .. in", so its corners are its tokens - 1.
        sections = _lines_of(data, body, [(_plural(e.name), e.count) for e in elements])
        faces = next((tokens - 1 for e, (tokens, _) in zip(elements, sections) if e.name == "face"), np.zeros(0, np.int64))
        return _polygons(faces, vertices)
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


# --- STL --------------------------------------------------------------------------------------------


def _stl(data: bytes) -> Declared:
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


# --- GLB --------------------------------------------------------------------------------------------

_COMPONENT_BYTES = {5120: 1, 5121: 1, 5122: 2, 5123: 2, 5125: 4, 5126: 4}
_TYPE_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}


def _glb(data: bytes) -> Declared:
    """GLB: the JSON chunk's nodes, meshes, accessors and images, and the image headers in the BIN chunk."""
    if len(data) < 20:
        raise MalformedMesh("it is shorter than a glTF binary header")
    _, version, length = struct.unpack_from("<4sII", data)
    if version != 2:
        raise MalformedMesh(f"it is glTF version {version}; only version 2 is supported")
    if length > len(data):
        raise MalformedMesh(f"its header declares {length:,} bytes but the file has {len(data):,}")
    json_length, kind = struct.unpack_from("<I4s", data, 12)
    if kind != b"JSON" or 20 + json_length > length:
        raise MalformedMesh("its first chunk is not a complete JSON chunk")
    text = data[20:20 + json_length]
    values = text.count(b"{") + text.count(b"[") + text.count(b",") + 1  # an upper bound on the JSON values
    if values > MAX_JSON_VALUES:
        raise StructureTooLarge(f"its scene description holds up to {values:,} JSON values (nodes, meshes, accessors); "
                                f"at most {MAX_JSON_VALUES:,} are read")
    binary = memoryview(b"")
    at = 20 + json_length + (-json_length % 4)
    if at + 8 <= length:
        bin_length, kind = struct.unpack_from("<I4s", data, at)
        if kind == b"BIN\x00":
            if at + 8 + bin_length > length:
                raise MalformedMesh("its binary chunk runs past the end of the file")
            binary = memoryview(data)[at + 8:at + 8 + bin_length]
    try:
        gltf = json.loads(text)
    except (ValueError, RecursionError):
        raise MalformedMesh("its JSON chunk is not valid JSON") from None
    if not isinstance(gltf, dict):
        raise MalformedMesh("its JSON chunk is not a glTF object")
    nodes = _items(gltf, "nodes")
    meshes = _items(gltf, "meshes")
    accessors = _items(gltf, "accessors")
    views = _items(gltf, "bufferViews")

    placed = _placements(gltf, nodes, len(meshes))
    parts = vertices = faces = 0
    for m, mesh in enumerate(meshes):
        for prim in _items(mesh, "primitives"):
            attributes = prim.get("attributes")
            if not isinstance(attributes, dict):
                raise MalformedMesh("a mesh primitive has no attributes")
            n_verts = _count(accessors[_index(attributes, "POSITION", len(accessors))]) if "POSITION" in attributes else 0
            n_index = _count(accessors[_index(prim, "indices", len(accessors))]) if "indices" in prim else n_verts
            mode = prim.get("mode", 4)
            triangles = n_index // 3 if mode == 4 else max(n_index - 2, 0) if mode in (5, 6) else 0
            parts += placed[m]
            vertices += placed[m] * n_verts
            faces += placed[m] * triangles

    # trimesh copies every buffer view out of its buffer and builds an array per accessor, used or not.
    data_bytes = sum(_nonnegative(v, "byteLength") for v in views)
    for a in accessors:
        width, component = _TYPE_WIDTH.get(a.get("type")), _COMPONENT_BYTES.get(a.get("componentType"))
        if width is None or component is None:
            raise MalformedMesh("an accessor has an unknown type or component type")
        data_bytes += _count(a) * width * component
    images = tuple(size for image in _items(gltf, "images") if (size := _image_size(_image_head(image, views, binary))))
    return Declared(vertices=vertices, faces=faces, nodes=len(nodes), parts=parts, data_bytes=data_bytes, images=images)


def _items(obj: dict, key: str) -> list[dict]:
    """obj[key] as a list of JSON objects (empty when absent)."""
    items = obj.get(key, [])
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise MalformedMesh(f"its '{key}' is not a list of objects")
    return items


def _index(obj: dict, key: str, n: int) -> int:
    """obj[key] as an index into a list of `n` items."""
    i = obj.get(key)
    if type(i) is not int or not 0 <= i < n:
        raise MalformedMesh(f"it refers to a missing item ('{key}': {str(i)[:20]})")
    return i


def _nonnegative(obj: dict, key: str) -> int:
    n = obj.get(key, 0)
    if type(n) is not int or n < 0:
        raise MalformedMesh(f"it has an invalid '{key}' ({str(n)[:20]})")
    return n


def _count(accessor: dict) -> int:
    return _nonnegative(accessor, "count")


def _placements(gltf: dict, nodes: list[dict], n_meshes: int) -> list[int]:
    """How many copies of each mesh trimesh concatenates: the nodes that reference it in the scene it
    loads (the "scene" entry, else the first), at least one. glTF requires nodes to form trees; a node
    reached twice (two parents, or its own ancestor) would multiply copies, so it is malformed."""
    placed = [0] * n_meshes
    scenes = _items(gltf, "scenes")
    if scenes:
        scene = scenes[_index(gltf, "scene", len(scenes)) if "scene" in gltf else 0]
        stack = _indices(scene, "nodes", len(nodes))
        seen = set()
        while stack:  # each node is expanded once, so this runs over at most every 'children' entry
            i = stack.pop()
            if i in seen:
                raise MalformedMesh("its node hierarchy is not a tree (a node has two parents or contains itself)")
            seen.add(i)
            if "mesh" in nodes[i]:
                placed[_index(nodes[i], "mesh", n_meshes)] += 1
            stack.extend(_indices(nodes[i], "children", len(nodes)))
    return [max(p, 1) for p in placed]


def _indices(obj: dict, key: str, n: int) -> list[int]:
    items = obj.get(key, [])
    if not isinstance(items, list) or not all(type(i) is int and 0 <= i < n for i in items):
        raise MalformedMesh(f"its '{key}' refers to missing nodes")
    return list(items)


def _image_head(image: dict, views: list[dict], binary: memoryview) -> bytes:
    """The first bytes of an embedded image (from a buffer view or a data: URI); b"" for an external one,
    which trimesh, loading from memory without a resolver, cannot open."""
    if "bufferView" in image:
        view = views[_index(image, "bufferView", len(views))]
        start = _nonnegative(view, "byteOffset")
        end = start + _nonnegative(view, "byteLength")
        if view.get("buffer", 0) != 0 or end > len(binary):
            return b""  # not in this file's binary chunk: trimesh fails on it before decoding anything
        return bytes(binary[start:min(end, start + _IMAGE_HEAD_BYTES)])
    uri = image.get("uri")
    if isinstance(uri, str) and uri.startswith("data:") and "," in uri:
        start = uri.index(",") + 1
        encoded = uri[start:start + _IMAGE_HEAD_BYTES // 3 * 4]  # whole base64 quads
        try:
            return base64.b64decode(encoded)
        except ValueError:
            return b""
    return b""


def _image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a PNG or JPEG header; None for other or unreadable data."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
        return struct.unpack_from(">II", head, 16)
    if not head.startswith(b"\xff\xd8"):
        return None
    at = 2
    while at + 9 <= len(head):  # JPEG: walk the segments to the frame header (SOFn)
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack_from(">HH", head, at + 5)
            return width, height
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            at += 2
            continue
        at += 2 + struct.unpack_from(">H", head, at + 2)[0]
    return None
