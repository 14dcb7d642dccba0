"""Uploads are bounded before they are parsed (recon.meshcheck): hostile files are refused fast and small.

Every hostile file is generated here: the issue's table (a GLB placing one mesh in 100,000 and in
300,000 nodes, binary PLYs with one ragged face of 0.2 MB and of 19 MB), a PLY declaring 50 million
faces, an OBJ with one huge face line, an STL declaring more triangles than it holds, and a few more
that each reach one limit. Each must be refused by `load_upload` in under 3 s with the process growing
by under 300 MB, with a message that says what is wrong and what to do. A valid mesh above MAX_FACES
is simplified instead.
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.assets import MAX_FACES, AssetError
from recon.uploads import (
    HARD_MAX_FACES,
    MAX_FACE_CORNERS,
    MAX_GLB_NODES,
    MAX_MIXED_FACES,
    MAX_UPLOAD_BYTES,
    load_upload,
)

TIME_LIMIT_S = 3.0
MEMORY_LIMIT_MB = 300


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return int(re.search(r"VmRSS:\s+(\d+) kB", fh.read()).group(1)) / 1024


def _measured_refusal(path: Path) -> tuple[str, float, float]:
    """Upload `path`; return (its refusal message, seconds taken, peak growth of resident memory in MB)."""
    base = _rss_mb()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_mb())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        with pytest.raises(AssetError) as info:
            load_upload(path, path.name)
    finally:
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    return str(info.value), seconds, max(peak, _rss_mb()) - base


# --- hostile files ----------------------------------------------------------------------------------

_TRIANGLE = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype="<f4").tobytes()  # (3, 3) float32: 36 bytes


def _glb(gltf: dict, binary: bytes) -> bytes:
    """A GLB container: header, JSON chunk and BIN chunk, each padded to 4 bytes."""
    text = json.dumps(gltf, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    binary += b"\0" * (-len(binary) % 4)
    length = 12 + 8 + len(text) + 8 + len(binary)
    return (b"glTF" + struct.pack("<II", 2, length) + struct.pack("<I", len(text)) + b"JSON" + text
            + struct.pack("<I", len(binary)) + b"BIN\0" + binary)


def _triangle_glb(n_nodes: int, spread: bool = True, images: list[dict] | None = None, image_bytes: bytes = b"",
                  accessor_count: int = 3) -> bytes:
    """One triangle (indexed) placed by `n_nodes` nodes, shifted along x if `spread` (else as small as
    JSON gets: the issue's files); images whose bytes follow the geometry in the BIN chunk; optionally
    an extra accessor of `accessor_count` items without a buffer view (trimesh would allocate zeros)."""
    indices = np.array([0, 1, 2], dtype="<u4").tobytes()  # 12 bytes
    views = [{"buffer": 0, "byteOffset": 0, "byteLength": 36}, {"buffer": 0, "byteOffset": 36, "byteLength": 12}]
    gltf = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": list(range(n_nodes))}],
        "nodes": [{"mesh": 0, "translation": [2 * i, 0, 0]} for i in range(n_nodes)] if spread else [{"mesh": 0}] * n_nodes,
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3"},
                      {"bufferView": 1, "componentType": 5125, "count": 3, "type": "SCALAR"}],
        "bufferViews": views,
        "buffers": [{"byteLength": 48 + len(image_bytes)}],
    }
    if accessor_count != 3:
        gltf["accessors"].append({"componentType": 5126, "count": accessor_count, "type": "VEC3"})
    if images:
        views.append({"buffer": 0, "byteOffset": 48, "byteLength": len(image_bytes)})
        gltf["images"] = images
    return _glb(gltf, _TRIANGLE + indices + image_bytes)


def _ply_header(fmt: str, n_verts: int, n_faces: int, face_list: str = "uchar int") -> bytes:
    return (f"ply\nformat {fmt} 1.0\nelement vertex {n_verts}\nproperty float x\nproperty float y\nproperty float z\n"
            f"element face {n_faces}\nproperty list {face_list} vertex_indices\nend_header\n").encode()


def _ragged_ply(corners: int) -> bytes:
    """Three vertices and one face of `corners` corners (uchar indices 0, 1, 2, 0, 1, 2, ...)."""
    indices = np.resize(np.arange(3, dtype=np.uint8), corners).tobytes()
    return (_ply_header("binary_little_endian", 3, 1, "int uchar") + _TRIANGLE
            + struct.pack("<i", corners) + indices)


def _mixed_ply(n_pairs: int) -> bytes:
    """`n_pairs` triangles alternating with as many quads, over four vertices."""
    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype="<f4").tobytes()
    pair = bytes([3]) + np.array([0, 1, 2], "<i4").tobytes() + bytes([4]) + np.array([0, 1, 2, 3], "<i4").tobytes()
    return _ply_header("binary_little_endian", 4, 2 * n_pairs) + verts + pair * n_pairs


def _write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    assert path.stat().st_size <= MAX_UPLOAD_BYTES  # refused for what it declares, not for its bytes
    return path


def _png_header(width: int, height: int) -> bytes:
    """The first bytes of a PNG of the given size: enough to declare it, nothing to decode."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0\0\0\0"


def _jpeg_data_uri(width: int, height: int) -> str:
    """A data: URI holding the start of a JPEG (an APP0 segment, then the frame header declaring its size)."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + bytes(9)
    return "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8" + app0 + sof0).decode()


#: name -> (file contents, regex the message must match: what is wrong, then what to do)
HOSTILE = {
    "nodes_100k.glb": (lambda: _triangle_glb(100_000, spread=False),
                       r"too complex to load: its scene description holds up to 300,0\d\d JSON values .*"
                       "Join its parts into one mesh"),
    "nodes_300k.glb": (lambda: _triangle_glb(300_000, spread=False),
                       r"too complex to load: its scene description holds up to 900,0\d\d JSON values .*"
                       "Join its parts into one mesh"),
    "ragged_small.ply": (lambda: _ragged_ply(199_701),
                         rf"has a face with 199,701 corners \(at most {MAX_FACE_CORNERS} are accepted\).*Export it with "
                         "triangulated faces"),
    "ragged_19mb.ply": (lambda: _ragged_ply(19_000_000),
                        r"has a face with 19,000,000 corners .*Export it with triangulated faces"),
    "fifty_million_binary.ply": (lambda: _ply_header("binary_little_endian", 3, 50_000_000) + _TRIANGLE
                                 + bytes([3]) + np.arange(3, dtype="<i4").tobytes(),
                                 r"could not be read as a \.ply mesh \(its header declares 50,000,000 faces, which need at "
                                 r"least 650,000,000 bytes, but only 13 are left for them\)\. The file is damaged or "
                                 "truncated: export it again"),
    "fifty_million_ascii.ply": (lambda: _ply_header("ascii", 3, 50_000_000) + b"0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n",
                                r"its header declares 50,000,000 faces but the file holds data for only 1\)\. The file is "
                                "damaged or truncated"),
    "hidden_header.ply": (lambda: _ragged_ply(199_701).replace(b"format binary_little_endian 1.0\n",
                                                               b"format binary_little_endian 1.0\ncomment end_header\n"),
                          r"has a face with 199,701 corners"),
    "ragged.off": (lambda: "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n70000 " + " ".join(str(i % 3) for i in range(70_000)) + "\n",
                   r"has a face with 70,000 corners .*Export it with triangulated faces"),
    "huge_face.obj": (lambda: "v 0 0 0\nv 1 0 0\nv 0 1 0\nf " + " ".join(["1 2 3"] * 70_000) + "\n",
                      r"has a face with 210,000 corners .*Export it with triangulated faces"),
    "many_polygons.obj": (lambda: "".join(f"v {i} {i % 7} {i % 3}\n" for i in range(60))
                          + ("f " + " ".join(str(i) for i in range(1, 61)) + "\n") * (HARD_MAX_FACES // 58 + 1),
                          rf"declares {(HARD_MAX_FACES // 58 + 1) * 58:,} triangles once its polygons are split; the limit "
                          rf"is {HARD_MAX_FACES:,} "
                          rf"\(meshes above {MAX_FACES:,} faces are simplified automatically\)\. Simplify it first"),
    "short.stl": (lambda: b"\0" * 80 + struct.pack("<I", 10_000_000) + b"\0" * 50,
                  r"could not be read as a \.stl mesh \(its header declares 10,000,000 triangles, which need 500,000,084 "
                  r"bytes, but the file has 134\)\. The file is damaged or truncated: export it again"),
    "mixed.ply": (lambda: _mixed_ply(MAX_MIXED_FACES // 2),
                  rf"mixes faces of 3 to 4 corners \({MAX_MIXED_FACES // 2 * 3:,} triangles once split\); \.ply files like "
                  rf"that are read one face at a time, so at most {MAX_MIXED_FACES:,} are accepted\. Export it with "
                  r"triangulated faces, or as \.obj"),
    "nodes_over_cap.glb": (lambda: _triangle_glb(MAX_GLB_NODES + 1),
                           rf"has {MAX_GLB_NODES + 1:,} nodes; the limit is {MAX_GLB_NODES:,}\. Join its parts into one mesh"),
    "huge_accessor.glb": (lambda: _triangle_glb(1, accessor_count=1_000_000_000),
                          r"declares 11,444 MB of vertex, index and image data; the limit is 128 MB\. Simplify it first"),
    "png_bomb.glb": (lambda: _triangle_glb(1, images=[{"bufferView": 2, "mimeType": "image/png"}],
                                           image_bytes=_png_header(30_000, 30_000)),
                     r"embeds a 30,000×30,000-pixel image; the limit is 4096×4096 pixels\. Textures are not used here: "
                     "export it without textures"),
    "jpeg_bomb.glb": (lambda: _triangle_glb(1, images=[{"uri": _jpeg_data_uri(5_000, 4_000)}]),
                      r"embeds a 5,000×4,000-pixel image; the limit is 4096×4096 pixels"),
}


#: the issue's table: file -> its size in MB
ISSUE_TABLE_MB = {"nodes_100k.glb": 1.7, "nodes_300k.glb": 5.3, "ragged_small.ply": 0.2, "ragged_19mb.ply": 19.0}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_upload_is_refused_fast_and_small(tmp_path, name):
    make, expected = HOSTILE[name]
    path = _write(tmp_path, name, make())
    if name in ISSUE_TABLE_MB:  # the issue's files, at the issue's sizes
        assert path.stat().st_size / 1e6 == pytest.approx(ISSUE_TABLE_MB[name], abs=0.1)
    message, seconds, grown_mb = _measured_refusal(path)
    assert re.search(expected, message), message
    assert message.startswith(f"'{name}'") and "\n" not in message and len(message) < 400
    assert seconds < TIME_LIMIT_S, f"{name}: refused after {seconds:.2f} s"
    assert grown_mb < MEMORY_LIMIT_MB, f"{name}: memory grew by {grown_mb:.0f} MB"


def test_uploads_still_work_after_the_refusals(tmp_path):
    """Every refusal leaves the process serving: right after them, a GLB placing a triangle three times,
    with a small PNG texture (below the cap, and never decoded), loads."""
    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (8, 8), "orange").save(png, format="PNG")
    data = _triangle_glb(3, images=[{"bufferView": 2, "mimeType": "image/png"}], image_bytes=png.getvalue())
    asset = load_upload(_write(tmp_path, "three.glb", data), "three.glb")
    assert asset.num_faces == 3 and asset.texture is None and not asset.notes


def _torus_ply(n_major: int, n_minor: int) -> bytes:
    """A binary PLY of a torus (major radius 1, minor 0.4): 2 * n_major * n_minor triangles."""
    u = np.arange(n_major) * (2 * np.pi / n_major)
    v = np.arange(n_minor) * (2 * np.pi / n_minor)
    uu, vv = np.meshgrid(u, v, indexing="ij")  # (n_major, n_minor)
    ring = 1 + 0.4 * np.cos(vv)
    verts = np.stack([ring * np.cos(uu), 0.4 * np.sin(vv), ring * np.sin(uu)], -1).reshape(-1, 3)  # (V, 3)
    i, j = np.meshgrid(np.arange(n_major), np.arange(n_minor), indexing="ij")
    a, b = i * n_minor + j, (i + 1) % n_major * n_minor + j
    c, d = (i + 1) % n_major * n_minor + (j + 1) % n_minor, i * n_minor + (j + 1) % n_minor
    faces = np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, d], -1)]).reshape(-1, 3)  # (F, 3)
    rows = np.zeros(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    rows["n"], rows["i"] = 3, faces
    return _ply_header("binary_little_endian", len(verts), len(faces)) + verts.astype("<f4").tobytes() + rows.tobytes()


def test_large_mesh_is_simplified(tmp_path):
    """A valid mesh between MAX_FACES and HARD_MAX_FACES is decimated to at most MAX_FACES, and says so."""
    asset = load_upload(_write(tmp_path, "torus.ply", _torus_ply(512, 320)), "torus.ply")  # 327,680 faces
    assert MAX_FACES * 0.9 <= asset.num_faces <= MAX_FACES
    assert any(re.fullmatch(rf"Simplified from 327,680 to {asset.num_faces:,} faces \(quadric decimation\) to fit the "
                            rf"{MAX_FACES:,}-face limit\.", n) for n in asset.notes), asset.notes
    # Still the torus: every vertex on its tube, once the normalisation (centred on the mean of the
    # unevenly decimated vertices) is undone with the bounding box.
    verts = asset.verts.double()
    verts = verts - (verts.max(0).values + verts.min(0).values) / 2
    x, y, z = (verts * 1.4 / verts[:, [0, 2]].abs().max()).unbind(1)
    tube = (((x.square() + z.square()).sqrt() - 1).square() + y.square()).sqrt()
    assert torch.allclose(tube, torch.full_like(tube, 0.4), atol=0.01)
    assert asset.faces.min() >= 0 and asset.faces.max() < asset.verts.shape[0]
