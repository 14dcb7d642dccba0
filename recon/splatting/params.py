"""The splats' parameters and their start: :class:`SplatParams` (leaf tensors), :func:`init_splats`
(random points in the cube, optionally carved by the training silhouettes and coloured from the
target pixels), and the projection helpers carving uses."""

from __future__ import annotations

import torch

#: Side of the cube (world units, centred on the origin) that splats are initialised in; the
#: volumetric methods' voxel grid covers the same cube.
CUBE_EXTENT = 3.0
#: The parameter kinds, in the order of the optimiser's groups.
KINDS = ("positions", "colors", "log_radii", "opacities")


class SplatParams:
    """N splats as leaf tensors: positions (N, 3), colour logits (N, 3), log radii (N,), opacity logits (N,).

    Colours and opacities go through a sigmoid, radii through exp, so every raw value is unconstrained.
    """

    def __init__(self, positions: torch.Tensor, colors: torch.Tensor, log_radii: torch.Tensor,
                 opacities: torch.Tensor) -> None:
        self.positions = positions
        self.colors = colors  # logits
        self.log_radii = log_radii
        self.opacities = opacities  # logits

    @classmethod
    def from_values(cls, positions: torch.Tensor, rgb: torch.Tensor, radii: torch.Tensor,
                    opacity: torch.Tensor | float, requires_grad: bool = True) -> SplatParams:
        """Splats from plain values (colours and opacities in (0, 1), radii > 0)."""
        n = positions.shape[0]
        eps = 1e-6
        op = torch.as_tensor(opacity, dtype=torch.float32, device=positions.device).expand(n)
        tensors = (positions.float(), torch.logit(rgb.float().clamp(eps, 1 - eps)), radii.float().log(),
                   torch.logit(op.clamp(eps, 1 - eps)))
        return cls(*(t.detach().clone().contiguous().requires_grad_(requires_grad) for t in tensors))

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in KINDS}

    def rgb(self) -> torch.Tensor:
        return torch.sigmoid(self.colors)

    def radii(self) -> torch.Tensor:
        return torch.exp(self.log_radii)

    def opacity(self) -> torch.Tensor:
        return torch.sigmoid(self.opacities)

    def detached(self) -> SplatParams:
        return SplatParams(*(t.detach() for t in self.tensors().values()))


def knn_radii(positions: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Mean distance of each point to its `k` nearest neighbours (3DGS's initial scale), (N,)."""
    from pytorch3d.ops import knn_points

    pts = positions.detach()[None]
    d2 = knn_points(pts, pts, K=min(k + 1, len(positions))).dists[0, :, 1:]  # drop the point itself
    return d2.clamp(min=1e-10).sqrt().mean(-1)


def project_to_pixels(points: torch.Tensor, cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """NDC xy (V, N, 2) of world `points` (N, 3) in each camera, and whether each lies in front of it (V, N)."""
    pts = points[None].expand(len(cameras), -1, -1)
    ndc = cameras.transform_points(pts, eps=1e-6)  # PyTorch3D NDC: +x left, +y up
    depth = cameras.get_world_to_view_transform().transform_points(pts)[..., 2]
    return ndc[..., :2], depth > 0


def sample_images(images: torch.Tensor, ndc_xy: torch.Tensor) -> torch.Tensor:
    """Values of `images` (V, H, W, C) at NDC points (V, N, 2) -> (V, N, C) (bilinear, zero outside)."""
    grid = -ndc_xy[:, :, None, :]  # grid_sample: -1 is left/top; PyTorch3D NDC: +1 is left/top
    out = torch.nn.functional.grid_sample(images.permute(0, 3, 1, 2), grid, align_corners=False,
                                          padding_mode="zeros")  # (V, C, N, 1)
    return out[..., 0].permute(0, 2, 1)


def init_splats(n: int, *, cameras=None, silhouettes: torch.Tensor | None = None,
                images: torch.Tensor | None = None, carve: bool = True, keep_fraction: float = 0.9,
                opacity: float = 0.5, radius_scale: float = 1.0, extent: float = CUBE_EXTENT,
                generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> SplatParams:
    """`n` splats at random points of the cube of side `extent` centred at the origin.

    With ``carve`` (and training `cameras` (V) with their `silhouettes` (V, H, W)), only points that
    project inside the silhouette in at least `keep_fraction` of the views are kept (a visual hull),
    drawn in rounds until there are `n`. With `images` (V, H, W, 3) the colours start as the mean of
    the target pixels the point projects to (else grey). Radii start at the mean distance to the 3
    nearest splats times `radius_scale`; opacities at `opacity`.
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    carve = carve and cameras is not None and silhouettes is not None
    kept: list[torch.Tensor] = []
    have = 0
    for _ in range(200 if carve else 1):
        cand = (torch.rand(max(4 * n, 4096) if carve else n, 3, generator=gen) - 0.5) * extent
        if carve:
            cand = cand.to(silhouettes.device)
            xy, front = project_to_pixels(cand, cameras)
            inside = (sample_images(silhouettes[..., None].float(), xy)[..., 0] > 0.5) & front  # (V, M)
            cand = cand[inside.float().mean(0) >= keep_fraction]
        kept.append(cand)
        have += len(cand)
        if have >= n:
            break
    pts = torch.cat(kept)[:n]
    if len(pts) < n:  # the silhouettes are (nearly) empty: fill up with random points
        pts = torch.cat([pts, (torch.rand(n - len(pts), 3, generator=gen) - 0.5).to(pts.device) * extent])
    pts = pts.to(device)
    if images is not None and cameras is not None:
        xy, front = project_to_pixels(pts.to(images.device), cameras)
        cols = sample_images(images, xy)  # (V, n, 3)
        w = front.float()[..., None]
        rgb = ((cols * w).sum(0) / w.sum(0).clamp(min=1)).clamp(0.02, 0.98).to(device)
    else:
        rgb = torch.full((n, 3), 0.5, device=device)
    radii = knn_radii(pts) * radius_scale if n > 1 else torch.full((n,), 0.05, device=device)
    return SplatParams.from_values(pts, rgb, radii.clamp(1e-3, extent / 4), opacity)

