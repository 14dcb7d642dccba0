"""Where a dataset's cameras are: the OpenGL (Blender) and PyTorch3D conventions, and the scene's placement.

- :func:`opengl_to_pytorch3d` / :func:`pytorch3d_to_opengl` convert camera-to-world matrices as the
  Blender layout writes them to PyTorch3D's (R, T), and back.
- :func:`camera_centres` is where PyTorch3D cameras sit in the world.
- :func:`normalise_scene` moves and scales a dataset's world so that the object sits where recon's
  methods expect it: at the origin, with the cameras :data:`CAMERA_DISTANCE` units from it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .limits import DatasetError

#: Distance of recon's cameras from the origin, where the volume and NeRF expect the object.
CAMERA_DISTANCE = 2.7

_FLIP = torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64))  # OpenGL <-> PyTorch3D camera axes


def opengl_to_pytorch3d(c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch3D's (R, T) of cameras given as OpenGL/Blender camera-to-world matrices.

    Derivation. PyTorch3D maps world points to view space with row vectors,
    ``X_view = X_world @ R + T``; as columns, ``x_view = Rᵀ x_world + T``, so
    ``x_world = R (x_view - T)``: the columns of R are the view axes written in world coordinates,
    and the camera centre (``x_view = 0``) is ``C = -R T``, or in rows ``C = -T @ Rᵀ``. The view
    axes are +X left, +Y up, +Z forward (into the scene).

    An OpenGL camera-to-world matrix ``[[A, C], [0, 1]]`` maps ``x_world = A x_cam + C``: the
    columns of A are the camera's axes in world coordinates, +x right, +y up, +z backward (the
    camera looks down -z), and C is its centre.

    The same camera therefore has PyTorch3D axes (left, up, forward) = (-x, y, -z) of OpenGL's:
    ``R = A @ F`` with ``F = diag(-1, 1, -1)``, and ``T = -C @ R`` (from ``C = -T @ Rᵀ``, R being
    orthonormal). Example: the OpenGL camera at (0, 0, d) with A = I looks at the origin down -z;
    it gets ``R = diag(-1, 1, -1)`` and ``T = (0, 0, d)``, exactly what
    ``look_at_view_transform(dist=d, elev=0, azim=0)`` returns. Left and right agree on the image
    too: PyTorch3D's NDC has +X on the left of the rendered image, OpenGL's +x is on the right.
    The tests check all of this against ``look_at_view_transform`` and a render.

    Args:
        c2w: (N, 4, 4) rigid camera-to-world matrices.
    Returns:
        R (N, 3, 3) and T (N, 3), in the dtype of `c2w`.
    """
    m = c2w.double()
    R = m[:, :3, :3] @ _FLIP  # (N, 3, 3)
    T = -(m[:, None, :3, 3] @ R)[:, 0]  # (N, 3)
    return R.to(c2w.dtype), T.to(c2w.dtype)


def pytorch3d_to_opengl(R: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`opengl_to_pytorch3d`: (N, 4, 4) OpenGL camera-to-world matrices of
    PyTorch3D cameras R (N, 3, 3), T (N, 3). ``A = R @ F`` (F is its own inverse), ``C = -T @ Rᵀ``."""
    R64, T64 = R.double(), T.double()
    c2w = torch.zeros(R.shape[0], 4, 4, dtype=torch.float64)
    c2w[:, :3, :3] = R64 @ _FLIP
    c2w[:, :3, 3] = -(T64[:, None] @ R64.transpose(1, 2))[:, 0]
    c2w[:, 3, 3] = 1.0
    return c2w.to(R.dtype)


def camera_centres(R: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """(N, 3) world positions of PyTorch3D cameras: ``C = -T @ Rᵀ``."""
    return -(T[:, None] @ R.transpose(1, 2))[:, 0]


def _fmt(v: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.3g}" if abs(x) >= 5e-4 else "0" for x in v) + ")"


def normalise_scene(R: torch.Tensor, T: torch.Tensor, center: Sequence[float] | None = None,
                    scale: float | None = None, distance: float = CAMERA_DISTANCE,
                    ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Move and scale the world so that the object sits where recon's methods expect it.

    recon's own cameras sit `distance` (2.7) units from the origin, around an object inside
    [-1, 1]^3, and the volume and NeRF sample a 3-unit cube centred there. A dataset's cameras may
    sit anywhere at any scale, so the scene is centred on the point nearest (least squares) to all
    the cameras' optical axes, which is where a capture rig or a turntable points, and scaled by
    ``distance / median camera distance from it``. ``center`` (world units of the dataset) and
    ``scale`` override either. World points move as ``X' = scale (X - center)``; cameras keep their
    rotation and get ``T' = scale (T + center @ R)``, which scales view space uniformly and so
    leaves every image unchanged.

    Cameras already `distance` units around the origin (within 1e-5) are left exactly as they are.
    Camera sets with no such point are refused: optical axes (nearly) parallel, or looking away
    from the point nearest to them (then give ``center``).

    Args:
        R: (N, 3, 3), T: (N, 3) PyTorch3D cameras.
    Returns:
        R (N, 3, 3), T (N, 3) and a plain-language note of what was done.
    """
    R64, T64 = R.double(), T.double()
    C = camera_centres(R64, T64)  # (N, 3)
    n = C.shape[0]
    if center is None:
        axes = R64[:, :, 2]  # (N, 3) view +Z (forward) in world coordinates
        proj = torch.eye(3, dtype=torch.float64) - axes[:, :, None] * axes[:, None, :]  # (N, 3, 3) onto planes ⟂ axes
        A = proj.sum(0)  # (3, 3)
        b = (proj @ C[:, :, None]).sum(0)[:, 0]  # (3,)
        if torch.linalg.eigvalsh(A)[0] < 1e-2 * n:
            raise DatasetError(
                f"the {n} cameras' optical axes are (nearly) parallel, so there is no point they all look at "
                "to centre the scene on (recon needs views from around the object). Give the centre and scale "
                "yourself (command line: --center X Y Z --scale S).")
        c = torch.linalg.solve(A, b)  # (3,)
        if (((c - C) * axes).sum(1) > 0).double().mean() < 0.5:
            raise DatasetError(
                "most cameras look away from the point nearest to their optical axes, so the scene has no "
                "centre recon can find (recon needs views from around the object). Give the centre and scale "
                "yourself (command line: --center X Y Z --scale S).")
        where = f"the point nearest to all {n} optical axes"
    else:
        c = torch.as_tensor(center, dtype=torch.float64).flatten()
        if c.numel() != 3 or not torch.isfinite(c).all():
            raise DatasetError(f"the centre must be three finite numbers, not {list(center)}.")
        where = "as asked"
    dist = (C - c).norm(dim=1)  # (N,)
    median = float(torch.quantile(dist, 0.5))
    if scale is None:
        if not median > 1e-9:
            raise DatasetError("the cameras all sit at the centre of the scene; give the scale yourself (--scale S).")
        s = distance / median
        how = f"so that the cameras sit {distance:g} units from it (their median distance; it was {median:.3g})"
    else:
        s = float(scale)
        if not (math.isfinite(s) and s > 0):
            raise DatasetError(f"the scale must be a positive number, not {scale!r}.")
        how = f"as asked (the cameras now sit {s * median:.3g} units from it, median; recon's sit {distance:g})"
    if float(c.norm()) <= 1e-5 * distance and abs(s - 1.0) <= 1e-5:
        return R.clone(), T.clone(), (f"The cameras already sit {distance:g} units around the origin, where the "
                                      "methods expect the object: the scene was left as it is.")
    T_new = s * (T64 + (c[None, None] @ R64)[:, 0])  # (N, 3)
    note = f"The scene was centred on {_fmt(c.tolist())}, {where}, and scaled by {s:.3g} {how}."
    return R.clone(), T_new.to(T.dtype), note
