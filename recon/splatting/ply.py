"""The binary little-endian ``.ply`` layout 3D Gaussian splatting viewers read (isotropic splats,
degree-0 colours): :func:`write_splat_ply` and :func:`read_splat_ply`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: DC coefficient of the degree-0 real spherical harmonic: rgb = 0.5 + SH_C0 * f_dc.
SH_C0 = 0.28209479177387814
#: Vertex properties of a degree-0 3DGS .ply, in the order the reference implementation writes them.
PLY_PROPERTIES = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                  "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")


def write_splat_ply(path: str | Path, positions: np.ndarray, colors_rgb: np.ndarray, opacities: np.ndarray,
                    radii: np.ndarray) -> Path:
    """Write isotropic splats as a binary little-endian .ply in the layout 3DGS viewers read.

    Colours in [0, 1] become DC spherical-harmonic coefficients ``(rgb - 0.5) / SH_C0``, opacities in
    (0, 1) logits, radii log scales (the same on the three axes); normals are zero and every
    rotation the unit quaternion (w, x, y, z) = (1, 0, 0, 0).
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    n = len(pos)
    rgb = np.asarray(colors_rgb, dtype=np.float64).reshape(n, 3)
    op = np.clip(np.asarray(opacities, dtype=np.float64).reshape(n), 1e-7, 1 - 1e-7)
    rad = np.asarray(radii, dtype=np.float64).reshape(n)
    if not (np.isfinite(pos).all() and np.isfinite(rgb).all() and np.isfinite(rad).all() and (rad > 0).all()):
        raise ValueError("splat positions, colours and radii must be finite, radii positive")
    data = np.zeros((n, len(PLY_PROPERTIES)), dtype="<f4")
    data[:, 0:3] = pos
    data[:, 6:9] = (rgb - 0.5) / SH_C0
    data[:, 9] = np.log(op) - np.log1p(-op)
    data[:, 10:13] = np.log(rad)[:, None]
    data[:, 13] = 1.0
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n"
    header += "".join(f"property float {p}\n" for p in PLY_PROPERTIES) + "end_header\n"
    path = Path(path)
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(data.tobytes())
    return path


def read_splat_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(positions (N, 3), colours (N, 3), opacities (N,), radii (N,)) as float32 from a 3DGS .ply.

    Reads binary little-endian files whose vertex properties are all ``float``/``float32`` (any
    order, extra properties such as ``f_rest_*`` ignored); colours come from the DC coefficients,
    opacities through a sigmoid, radii as exp of the mean log scale.
    """
    raw = Path(path).read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a .ply file")
    lines = raw[:end].decode("ascii", errors="replace").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise ValueError(f"{path}: only binary little-endian .ply files are read")
    n, props, in_vertex = 0, [], False
    for line in lines:
        parts = line.split()
        if parts[:1] == ["element"]:
            in_vertex = parts[1] == "vertex"
            if in_vertex:
                n = int(parts[2])
            elif n:
                raise ValueError(f"{path}: elements after the vertices are not supported")
        elif parts[:1] == ["property"] and in_vertex:
            if parts[1] not in ("float", "float32"):
                raise ValueError(f"{path}: vertex property {parts[-1]} is {parts[1]}, not float")
            props.append(parts[2])
    data = np.frombuffer(raw, dtype="<f4", count=n * len(props), offset=end + len("end_header\n"))
    data = data.reshape(n, len(props)).astype(np.float64)
    col = {p: i for i, p in enumerate(props)}
    missing = [p for p in ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0") if p not in col]
    if missing:
        raise ValueError(f"{path}: missing vertex properties {missing}")
    pos = data[:, [col["x"], col["y"], col["z"]]]
    rgb = data[:, [col["f_dc_0"], col["f_dc_1"], col["f_dc_2"]]] * SH_C0 + 0.5
    opacity = 1.0 / (1.0 + np.exp(-data[:, col["opacity"]]))
    scales = [col[f"scale_{i}"] for i in range(3) if f"scale_{i}" in col]
    radii = np.exp(data[:, scales].mean(axis=1))
    return (pos.astype(np.float32), rgb.astype(np.float32), opacity.astype(np.float32), radii.astype(np.float32))



#: gsplat.js, the splat viewer in the page, looks from 5 units away with a fixed focal length of 1132
#: pixels, y pointing down: in a 260-pixel-high view it sees about 0.57 units either side of the centre.
VIEWER_HALF_HEIGHT = 0.45


def write_viewer_copy(path: str | Path, out: str | Path) -> Path:
    """A copy of the splat .ply at `path`, framed for the page's splat viewer: centred, scaled so that
    it fits the viewer's narrow field of view, and turned y-down (half a turn about x). For display
    only: the exported file keeps the fitted splats as they are."""
    pos, rgb, opacity, radii = read_splat_ply(path)
    centre = (pos.min(0) + pos.max(0)) / 2 if len(pos) else np.zeros(3, np.float32)
    extent = float(np.percentile(np.linalg.norm(pos - centre, axis=1), 99)) if len(pos) else 1.0
    scale = VIEWER_HALF_HEIGHT / max(extent, 1e-6)
    framed = (pos - centre) * scale * np.array([1.0, -1.0, -1.0])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return write_splat_ply(out, framed, rgb, opacity, radii * scale)
