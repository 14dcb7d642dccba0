"""GLB (binary glTF 2.0): the scene description's nodes, meshes, accessors and buffer views, and the
headers of the embedded images, counted as trimesh will build them."""

from __future__ import annotations

import base64
import json
import struct

from .declared import Declared, MalformedMesh, StructureTooLarge

#: A GLB's scene description (JSON) with more values than this is not parsed: 200,000 values already
#: describe thousands of nodes, while `json.loads` of a few MB of tiny objects costs ~100 MB and a second.
MAX_JSON_VALUES = 200_000
#: Image headers are looked for in the first this-many bytes of an embedded image.
_IMAGE_HEAD_BYTES = 1 << 18

_COMPONENT_BYTES = {5120: 1, 5121: 1, 5122: 2, 5123: 2, 5125: 4, 5126: 4}
_TYPE_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}


def declared_glb(data: bytes) -> Declared:
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
