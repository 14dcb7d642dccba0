"""A small neural radiance field: an MLP from position (and view direction) to density and colour.

Follows the PyTorch3D tutorial ``fit_simple_neural_radiance_field``: points along the rays are
embedded with harmonic functions (``HarmonicEmbedding``, omega_0 0.1) and fed to an MLP with
Softplus activations; a density head (its bias starts at -1.5, so space starts nearly empty) and a
colour head that also sees the embedded ray direction. Training draws a random subset of rays per
view (``MonteCarloRaysampler``), marches them through the field (``EmissionAbsorptionRaymarcher``:
what the tutorial's ``ImplicitRenderer`` does, in two calls so that the draw can be seeded) and
compares colours and silhouettes with the target pixels under the rays (Huber loss); display renders
every pixel (``NDCMultinomialRaysampler``) in chunks under ``no_grad`` (the tutorial's
``batched_forward``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pytorch3d.renderer import (
    HarmonicEmbedding,
    ImplicitRenderer,
    MonteCarloRaysampler,
    NDCMultinomialRaysampler,
    RayBundle,
    ray_bundle_to_ray_points,
)

from ..params import knob
from ..worker import derive_seed, seeded
from .base import ITERATIONS_HELP, Result
from .volumetric import MAX_DEPTH, MIN_DEPTH, VolumetricMethod, huber, sample_images_at_rays

#: Side of the cube that density_grid() samples: the target lies in [-1, 1]^3 (with a margin).
FIELD_EXTENT = 2.4
#: Samples per network call when rendering without gradients (smaller activations, cache-friendlier).
NET_CHUNK = 1 << 18
#: Side of the exported density grid (the fitted images' resolution, at least).
EXPORT_RESOLUTION = 128


class RadianceField(torch.nn.Module):
    """The tutorial's network: harmonic embedding -> 2-layer Softplus MLP -> density and colour heads."""

    def __init__(self, n_harmonic_functions: int = 60, n_hidden: int = 256) -> None:
        super().__init__()
        self.embed = HarmonicEmbedding(n_harmonic_functions, omega_0=0.1, append_input=False)
        dim = n_harmonic_functions * 2 * 3  # sin and cos of every frequency, for x, y, z
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, n_hidden), torch.nn.Softplus(beta=10.0),
                                       torch.nn.Linear(n_hidden, n_hidden), torch.nn.Softplus(beta=10.0))
        self.color_head = torch.nn.Sequential(torch.nn.Linear(n_hidden + dim, n_hidden), torch.nn.Softplus(beta=10.0),
                                              torch.nn.Linear(n_hidden, 3), torch.nn.Sigmoid())
        self.density_head = torch.nn.Sequential(torch.nn.Linear(n_hidden, 1), torch.nn.Softplus(beta=10.0))
        with torch.no_grad():
            self.density_head[0].bias.fill_(-1.5)  # start almost transparent

    def forward(self, ray_bundle, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Densities (..., P, 1) in [0, 1) and colours (..., P, 3) at the points of `ray_bundle`."""
        points = ray_bundle_to_ray_points(ray_bundle)  # (..., P, 3)
        features = self.mlp(self.embed(points))  # (..., P, hidden)
        # Per-sample opacity, as the emission-absorption raymarcher expects.
        densities = 1 - torch.exp(-self.density_head(features))  # (..., P, 1)
        dirs = self.embed(torch.nn.functional.normalize(ray_bundle.directions, dim=-1))  # (..., dim)
        # The colour head's first layer on cat(features, direction embedding), computed as two products:
        # the direction's is the same for every point of a ray, so it is done once per ray and
        # broadcast, instead of copying the embedding to every point (the same numbers, less work).
        first = self.color_head[0]
        hidden = features.shape[-1]
        pre = (torch.nn.functional.linear(features, first.weight[:, :hidden], first.bias)
               + torch.nn.functional.linear(dirs, first.weight[:, hidden:])[..., None, :])  # (..., P, hidden)
        colors = self.color_head[1:](pre)  # (..., P, 3)
        return densities, colors

    def batched_forward(self, ray_bundle, chunk: int = NET_CHUNK, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` on at most `chunk` samples at a time (rays are independent), same result."""
        n_pts = ray_bundle.lengths.shape[-1]
        spatial = ray_bundle.lengths.shape[:-1]
        origins, dirs = ray_bundle.origins.reshape(-1, 3), ray_bundle.directions.reshape(-1, 3)
        lengths = ray_bundle.lengths.reshape(-1, n_pts)
        rays = max(1, chunk // n_pts)
        outs = [self.forward(RayBundle(origins=origins[s:s + rays], directions=dirs[s:s + rays],
                                       lengths=lengths[s:s + rays], xys=None))
                for s in range(0, origins.shape[0], rays)]
        densities = torch.cat([o[0] for o in outs]).reshape(*spatial, n_pts, 1)
        colors = torch.cat([o[1] for o in outs]).reshape(*spatial, n_pts, 3)
        return densities, colors


@dataclass
class NerfConfig:
    color_weight: float = knob(1.0, 0.0, 10.0, step=0.01, label="Colour weight", group="Loss weights", live=True,
                               help="Huber loss between rendered colours and the target pixels under the rays. Too "
                                    "low: a grey cow; too high relative to the silhouette: haze around it survives.")
    silhouette_weight: float = knob(1.0, 0.0, 10.0, step=0.01, label="Silhouette weight", group="Loss weights",
                                    live=True,
                                    help="Huber loss between rendered opacity and the target silhouette. Too low: "
                                         "fog and floaters; too high: the outline wins over colour detail.")
    lr: float = knob(1e-3, 1e-5, 1e-1, step=1e-5, label="Learning rate", group="Optimiser", live=True, log=True,
                     help="Adam step size, divided by 10 for the last quarter of the run. Too low: the cow takes "
                          "ages to appear; too high: the network collapses to empty space or noise.")
    iterations: int = knob(3000, 1, 50000, label="Iterations", group="Run", help=ITERATIONS_HELP)
    harmonic_functions: int = knob(60, 1, 60, label="Harmonic functions", group="Network",
                                   help="Frequencies 0.1 x 2^k of the positional embedding. Fewer: a smooth, blurry "
                                        "cow but faster; more: sharper detail, slower (beyond ~12 the extra "
                                        "frequencies are so high they act as noise).")
    hidden: int = knob(256, 8, 512, step=8, label="Hidden width", group="Network",
                       help="Units per hidden layer. Narrower: much faster (time grows with its square) but less "
                            "detail; wider: more capacity, slower.")
    rays_per_image: int = knob(750, 16, 8192, label="Rays per image", group="Rendering",
                               help="Random pixels rendered per training view each step. Fewer: faster, noisier "
                                    "steps; more: smoother steps, slower.")
    points_per_ray: int = knob(128, 8, 512, label="Points per ray", group="Rendering",
                               help="Samples along each ray between depth 0.1 and 3.0. Too few: thin parts are "
                                    "missed and the render bands; more: finer, linearly slower.")
    views_per_step: int = knob(6, 1, 40, label="Views per step", group="Rendering",
                               help="Training views sampled each step. Fewer: faster, noisier steps; more: "
                                    "smoother steps, slower.")
    image_size: int = knob(128, 32, 256, step=16, label="Image size (pixels)", group="Rendering",
                           help="Side of the target images, and of the display and held-out renders. Smaller: "
                                "faster display and evaluation, blurrier targets; larger: sharper targets, slower renders.")
    num_views: int = knob(40, 4, 100, label="Training views", group="Targets",
                          help="Target views on the ring around the cow. Too few: wrong guesses between them (seen "
                               "in the held-out views); more: a longer one-off render at the start.")
    display_threshold: float = knob(0.1, 0.01, 0.99, step=0.01, label="3D view density threshold", group="Display",
                                    live=True,
                                    help="Grid points denser than this are drawn in the 3D view. Lower: fog and "
                                         "floaters appear; higher: only the solid core.")
    seed: int = knob(0, 0, 2**31 - 1, label="Seed", group="Run",
                     help="Random seed of the network initialisation, rays and view order.")


class Nerf(VolumetricMethod):
    name = "nerf"
    title = "Neural radiance field (NeRF)"
    Config = NerfConfig
    tutorial = "fit_simple_neural_radiance_field"
    grid_extent = FIELD_EXTENT
    display_resolution = 32  # each point costs a network evaluation; the snapshot stays well under a second
    explain = (
        "**What is optimised:** the weights of a small MLP that maps a 3D point (through a harmonic embedding) "
        "and a view direction to a density and a colour.\n\n"
        "**Rendering:** each step renders a random subset of rays per view; points along each ray are "
        "composited front to back (emission-absorption). The display renders every pixel, in chunks.\n\n"
        "**Loss terms:** *color* is the Huber distance between rendered colours and the target pixels under "
        "the rays; *silhouette* between the rendered opacity and the target silhouette.\n\n"
        "**Quality:** PSNR and silhouette IoU on held-out cameras between the training views (higher is better)."
    )
    presets = {
        "Tutorial": dict(color_weight=1.0, silhouette_weight=1.0, lr=1e-3, iterations=3000, harmonic_functions=60,
                         hidden=256, rays_per_image=750, points_per_ray=128, views_per_step=6, image_size=128,
                         num_views=40),
        # Chosen by measurement on a shared 2-core CPU (timings noisy): ~0.55 s per step; after 60 s of
        # steps (~100) held-out PSNR 21 dB, IoU 0.86: a blurry but recognisable cow; peak memory 1.8 GB.
        # The Tutorial recipe: ~19 s per step, 7 GB. A higher learning rate suits the narrow network.
        "Quick": dict(color_weight=1.0, silhouette_weight=1.0, lr=3e-3, iterations=600, harmonic_functions=8,
                      hidden=64, rays_per_image=256, points_per_ray=48, views_per_step=4, image_size=64,
                      num_views=40),
        # A failure mode, cheaper than Quick: 8 samples over the 2.9-unit depth range are ~0.36 apart, wider
        # than the cow's legs and ears, so the field is only seen at a few depths: thin parts vanish or
        # smear along the rays, and the renders band (aliasing).
        "Few points per ray (aliasing)": dict(color_weight=1.0, silhouette_weight=1.0, lr=3e-3, iterations=600,
                                              harmonic_functions=8, hidden=64, rays_per_image=256, points_per_ray=8,
                                              views_per_step=4, image_size=64, num_views=40),
    }

    def __init__(self, target: Any, cfg: NerfConfig, device: torch.device) -> None:
        super().__init__(target, cfg, device)
        with seeded(cfg.seed, device):  # torch's layer initialisers draw from the process-wide generator
            self.net = RadianceField(cfg.harmonic_functions, cfg.hidden).to(device)
        self.optimizer = self.make_optimizer(self.net.parameters(), cfg)
        self.raysampler = MonteCarloRaysampler(min_x=-1.0, max_x=1.0, min_y=-1.0, max_y=1.0,
                                               n_rays_per_image=cfg.rays_per_image, n_pts_per_ray=cfg.points_per_ray,
                                               min_depth=MIN_DEPTH, max_depth=MAX_DEPTH)
        self._grid_renderers: dict[int, ImplicitRenderer] = {}

    def step(self) -> dict[str, torch.Tensor]:
        self.update_lr()
        self.optimizer.zero_grad(set_to_none=True)
        idx = self.next_batch()
        # MonteCarloRaysampler draws from torch's process-wide generator: seeded per step, so that
        # runs on other threads cannot change which rays this one samples.
        with seeded(derive_seed(self.cfg.seed, self.iteration), self.device):
            rays = self.raysampler(cameras=self.views.cameras(self.device, idx=idx))
        rgba = self.render_rays(rays)  # (B, R, 4)
        terms = {
            "color": huber(rgba[..., :3], sample_images_at_rays(self.images[idx], rays.xys)).abs().mean(),
            "silhouette": huber(rgba[..., 3:], sample_images_at_rays(self.silhouettes[idx, ..., None],
                                                                      rays.xys)).abs().mean(),
        }
        return self.finish_step(terms)

    def grid_renderer(self, size: int) -> ImplicitRenderer:
        if size not in self._grid_renderers:
            sampler = NDCMultinomialRaysampler(image_width=size, image_height=size,
                                               n_pts_per_ray=self.cfg.points_per_ray,
                                               min_depth=MIN_DEPTH, max_depth=MAX_DEPTH)
            self._grid_renderers[size] = ImplicitRenderer(raysampler=sampler, raymarcher=self.raymarcher)
        return self._grid_renderers[size]

    @torch.no_grad()
    def render(self, cameras, size: int, chunk: int | None = NET_CHUNK) -> torch.Tensor:
        """Every pixel from `cameras`, the network evaluated on `chunk` samples at a time (None: all at once)."""
        fn = self.net if chunk is None else (lambda ray_bundle, **kw: self.net.batched_forward(ray_bundle, chunk=chunk))
        return self.render_in_chunks(cameras, size,
                                     lambda part: self.grid_renderer(size)(cameras=part, volumetric_function=fn)[0])

    def field(self, ray_bundle: RayBundle) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(ray_bundle)

    @torch.no_grad()
    def result(self) -> Result:
        """The field sampled on a grid at least as fine as the images it was fitted to (128^3 at the
        tutorials' 128 px), for the density grid and the surface."""
        return Result(grid=self.density_grid(max(EXPORT_RESOLUTION, self.cfg.image_size)))
