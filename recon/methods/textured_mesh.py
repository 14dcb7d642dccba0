"""Textured mesh fitting: an ico-sphere's shape and vertex colours fitted to multi-view images.

Follows the PyTorch3D tutorial ``fit_textured_mesh`` (its second stage; ``silhouette_only`` is its
first): the parameters are an offset and an RGB colour for every sphere vertex; each step renders a
few random training views with the soft rasteriser and Phong shading, and compares the rendered RGB
and silhouette (the alpha channel of the soft blend) with the target's, plus three regularisers that
keep the mesh well shaped (edge length, normal consistency, uniform Laplacian smoothing).

Where the time goes on a CPU (measured, see this module's presets): almost all
of a step is the rasteriser's backward pass, which costs in proportion to the number of
(pixel, face) fragments kept, i.e. image size squared times faces per pixel. The forward pass is
rasterised tile by tile (:class:`recon.render.TiledMeshRasterizer`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pytorch3d.loss import mesh_edge_loss, mesh_laplacian_smoothing, mesh_normal_consistency
from pytorch3d.renderer import (
    BlendParams,
    MeshRenderer,
    PointLights,
    RasterizationSettings,
    SoftPhongShader,
    SoftSilhouetteShader,
    TexturesVertex,
)
from pytorch3d.utils import ico_sphere

from ..images import to_uint8
from ..metrics import IMAGE_METRICS, psnr, silhouette_iou
from ..params import knob
from ..render import TARGET_LIGHT, TiledMeshRasterizer, blur_radius, mesh_turntable
from ..targets import ViewSettings, downsample, views_for
from .base import ITERATIONS_HELP, MeshData, Method, Result, Snapshot


@dataclass
class TexturedMeshConfig:
    rgb_weight: float = knob(1.0, 0.0, 10.0, step=0.01, label="RGB weight", group="Loss weights", live=True,
                             help="Pulls the rendered colours onto the target images (colours and, through shading, "
                                  "shape). Too low: the mesh stays grey; too high relative to the silhouette: the "
                                  "shape drifts to wherever the colours match best.")
    silhouette_weight: float = knob(1.0, 0.0, 10.0, step=0.01, label="Silhouette weight", group="Loss weights",
                                    live=True,
                                    help="Pulls the rendered outline onto the target's. Too low: the outline never "
                                         "fits (legs, ears missing); too high: a good outline with blotchy colours.")
    edge_weight: float = knob(1.0, 0.0, 10.0, step=0.01, label="Edge-length weight", group="Loss weights", live=True,
                              help="Penalises long edges so the triangles stay even. Too low: stretched, spiky faces; "
                                   "too high: the mesh shrinks and cannot reach thin parts.")
    normal_weight: float = knob(0.01, 0.0, 1.0, step=0.001, label="Normal-consistency weight", group="Loss weights",
                                live=True,
                                help="Makes neighbouring faces point the same way. Too low: creases and flipped faces; "
                                     "too high: everything is rounded off.")
    laplacian_weight: float = knob(1.0, 0.0, 10.0, step=0.01, label="Laplacian weight", group="Loss weights",
                                   live=True,
                                   help="Pulls each vertex towards the mean of its neighbours (smoothness). Too low: "
                                        "tangled, self-intersecting surface; too high: a blob without legs or ears.")
    lr: float = knob(1.0, 1e-4, 5.0, step=1e-4, label="Learning rate", group="Optimiser", live=True, log=True,
                     help="Step size. Too low: slow convergence; too high: the loss oscillates or explodes (NaN). "
                          "SGD likes ~1, Adam ~0.01.")
    momentum: float = knob(0.9, 0.0, 0.99, step=0.01, label="Momentum (SGD)", group="Optimiser",
                           help="SGD momentum, as in the tutorial (ignored by Adam). Too low: slow, jittery progress; "
                                "too high: overshoots and oscillates.")
    optimizer: str = knob("sgd", choices=("sgd", "adam"), label="Optimiser", group="Optimiser",
                          help="SGD with momentum is the tutorial's choice; Adam adapts the step per vertex and "
                               "colour (use a learning rate around 0.01).")
    iterations: int = knob(2000, 1, 20000, label="Iterations", group="Run", help=ITERATIONS_HELP)
    views_per_step: int = knob(2, 1, 20, label="Views per step", group="Rendering",
                               help="Random training views rendered each step. Fewer: cheaper but noisier steps; "
                                    "more: smoother, better-balanced steps; each view adds its full rendering cost.")
    num_views: int = knob(20, 2, 60, label="Training views", group="Rendering",
                          help="Cameras around the target whose images are fitted (rendered once per target and "
                               "cached). Few: the unseen sides are guessed; many: a longer first render.")
    image_size: int = knob(128, 32, 256, step=16, label="Image size (px)", group="Rendering",
                           help="Side of the rendered and target images. A step's cost grows with its square; "
                                "small images lose thin parts and texture detail.")
    coarse_fraction: float = knob(0.0, 0.0, 0.9, step=0.05, label="Coarse-to-fine: share at half size",
                                  group="Rendering",
                                  help="Share of the iterations rendered at half the image size (against "
                                       "downsampled targets) before switching to full size. Coarse steps cost ~4x "
                                       "less and settle the overall shape; 0 turns it off.")
    sigma: float = knob(1e-4, 1e-6, 1e-2, step=1e-6, label="Soft rasteriser sigma", group="Rendering", log=True,
                        help="Width of the soft silhouette edge (blur radius = log(1/1e-4 - 1) * sigma). Larger: "
                             "gradients reach from farther, blurrier outlines, slower steps; smaller: sharp but "
                             "the outline only moves where it already nearly overlaps.")
    faces_per_pixel: int = knob(50, 1, 100, label="Faces per pixel", group="Rendering",
                                help="Faces blended at each pixel by the soft rasteriser. More: smoother gradients "
                                     "through overlapping layers, proportionally slower backward pass; 1: hard "
                                     "edges, gradients only through the nearest face.")
    sphere_level: int = knob(4, 1, 6, label="Ico-sphere level", group="Source mesh",
                             help="Subdivision level of the starting sphere: level 4 has 2562 vertices, each level "
                                  "about 4x more. Higher captures finer detail and colour but steps are slower.")
    silhouette_only: bool = knob(False, label="Silhouette only (tutorial stage 1)", group="Source mesh",
                                 help="Fit only the outline (no colours, no RGB term): the tutorial's first stage.")
    seed: int = knob(0, 0, 2**31 - 1, label="Seed", group="Run",
                     help="Random seed of the views drawn each step; the same seed and settings repeat a run.")


#: Held-out views the live estimate renders (of the 5), at the full evaluation size.
LIVE_VIEWS = (0, 2)


class TexturedMesh(Method):
    name = "textured_mesh"
    title = "Textured mesh (differentiable rendering)"
    Config = TexturedMeshConfig
    tutorial = "fit_textured_mesh"
    metrics = IMAGE_METRICS
    live_note = f"{len(LIVE_VIEWS)} of the held-out views"
    shows_images = True
    sweep = "mesh"  # fit_textured_mesh's cameras (white background)
    device_presets = {"cpu": "Quick", "cuda": "Tutorial"}
    explain = (
        "**What is optimised:** an offset and an RGB colour for every vertex of an ico-sphere.\n\n"
        "**Loss terms:** *rgb* is the mean squared difference between the rendered and target images of a few "
        "random training views; *silhouette* the same for their soft outlines (the soft rasteriser blends "
        "the faces near each pixel, which is what lets the outline move); *edge* is the mean squared edge "
        "length; *normal* is one minus the cosine between neighbouring face normals; *laplacian* is the "
        "distance of each vertex from the mean of its neighbours.\n\n"
        "**Quality:** PSNR of the RGB images and IoU of the silhouettes on held-out cameras between the "
        "training views (higher is better).\n\n"
        "**Quick** (the CPU default) fits a level-3 sphere with Adam, 32 px then 64 px images and 8 faces per "
        "pixel; **Tutorial** is the exact recipe (level 4, 128 px, 50 faces per pixel, SGD; several seconds per "
        "step on a 2-core CPU)."
    )
    presets = {
        "Tutorial": dict(rgb_weight=1.0, silhouette_weight=1.0, edge_weight=1.0, normal_weight=0.01,
                         laplacian_weight=1.0, lr=1.0, momentum=0.9, optimizer="sgd", iterations=2000,
                         views_per_step=2, num_views=20, image_size=128, coarse_fraction=0.0, sigma=1e-4,
                         faces_per_pixel=50, sphere_level=4, silhouette_only=False),
        # Chosen by measurement on the 2-core CPU (shared, so timings are noisy): the CPU backward pass
        # costs in proportion to the fragments kept (pixels x faces per pixel), and with fewer faces
        # per pixel than faces within the blur radius the silhouette breaks up into speckle (64 px,
        # level 4, 4 faces per pixel: still a grey blob after 390 s). A level-3 sphere has faces ~2x
        # wider, so 8 faces per pixel suffice; Adam at 0.02 moves colours and shape ~50x faster per
        # step than SGD at this size; 60% of the steps at 32 px cost ~0.3 s each against ~0.8 s at
        # 64 px. Measured (cow, 20 views): held-out PSNR 9.7 -> 16.8 dB and IoU 0.52 -> 0.72 after
        # 31 s (85 steps), 18.3 dB / 0.81 after 76 s; the body shape and face colours show by ~30 s.
        "Quick": dict(rgb_weight=1.0, silhouette_weight=1.0, edge_weight=1.0, normal_weight=0.01,
                      laplacian_weight=1.0, lr=0.02, momentum=0.9, optimizer="adam", iterations=300,
                      views_per_step=1, num_views=20, image_size=64, coarse_fraction=0.6, sigma=1e-4,
                      faces_per_pixel=8, sphere_level=3, silhouette_only=False),
        "Silhouette only (tutorial stage 1)": dict(rgb_weight=0.0, silhouette_weight=1.0, edge_weight=1.0,
                                                   normal_weight=0.01, laplacian_weight=1.0, lr=1.0, momentum=0.9,
                                                   optimizer="sgd", iterations=2000, views_per_step=2, num_views=20,
                                                   image_size=128, coarse_fraction=0.0, sigma=1e-4,
                                                   faces_per_pixel=50, sphere_level=4, silhouette_only=True),
        # Quick without the regularisers: the soft rasteriser's gradients alone pull single vertices
        # out of the surface, which crumples into spikes and folds.
        "No regularisers (tangles)": dict(rgb_weight=1.0, silhouette_weight=1.0, edge_weight=0.0, normal_weight=0.0,
                                          laplacian_weight=0.0, lr=0.02, momentum=0.9, optimizer="adam",
                                          iterations=300, views_per_step=1, num_views=20, image_size=64,
                                          coarse_fraction=0.6, sigma=1e-4, faces_per_pixel=8, sphere_level=3,
                                          silhouette_only=False),
    }

    def __init__(self, target, cfg: TexturedMeshConfig, device: torch.device) -> None:
        super().__init__(target, cfg, device)
        # Target silhouettes always use the tutorial's sigma and faces per pixel: they are the ground
        # truth, whatever the fitting renderer's settings.
        self.views = views_for(target, ViewSettings(num_views=cfg.num_views, image_size=cfg.image_size,
                                                    sweep=self.sweep), device)
        self.src = ico_sphere(cfg.sphere_level, device)
        verts = self.src.verts_packed()
        self.offsets = torch.zeros_like(verts, requires_grad=True)  # (V, 3)
        self.colors = torch.full_like(verts, 0.5, requires_grad=not cfg.silhouette_only)  # (V, 3) RGB
        self.optimizer = self.make_optimizer([self.offsets] + ([] if cfg.silhouette_only else [self.colors]), cfg)
        self._shown = 0
        self._targets: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    # --- rendering --------------------------------------------------------------------------
    def current_mesh(self):
        mesh = self.src.offset_verts(self.offsets)
        mesh.textures = TexturesVertex(verts_features=self.colors[None])
        return mesh

    def _size(self) -> int:
        """Image size of this step: half size during the coarse share of the run."""
        cfg = self.cfg
        if self.iteration < cfg.coarse_fraction * cfg.iterations and cfg.image_size >= 64:
            return cfg.image_size // 2
        return cfg.image_size

    def _target(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Training images (N, S, S, 3) and silhouettes (N, S, S) at `size`, on the device."""
        if size not in self._targets:
            self._targets[size] = downsample(self.views.images.to(self.device), self.views.silhouettes.to(self.device),
                                             size)
        return self._targets[size]

    def _render(self, mesh, idx: torch.Tensor, size: int, soft: bool = True, heldout: bool = False) -> torch.Tensor:
        """RGBA renders (B, S, S, 4) of `mesh` from training views `idx` (or held-out ones)."""
        cfg = self.cfg
        cams = self.views.cameras(self.device, idx, heldout=heldout)
        if soft:
            raster = RasterizationSettings(image_size=size, blur_radius=blur_radius(cfg.sigma),
                                           faces_per_pixel=cfg.faces_per_pixel, perspective_correct=False)
        else:  # evaluation: hard edges, one face per pixel, like the target RGB images
            raster = RasterizationSettings(image_size=size, blur_radius=0.0, faces_per_pixel=1)
        lights = PointLights(device=self.device, location=TARGET_LIGHT)
        blend = BlendParams(sigma=cfg.sigma, gamma=1e-4, background_color=self.views.background)
        if cfg.silhouette_only and soft:
            shader = SoftSilhouetteShader(blend_params=blend)
        else:
            shader = SoftPhongShader(device=self.device, cameras=cams, lights=lights, blend_params=blend)
        renderer = MeshRenderer(TiledMeshRasterizer(cameras=cams, raster_settings=raster), shader)
        return renderer(mesh.extend(len(cams)), cameras=cams, lights=lights)

    # --- the loop -------------------------------------------------------------------------
    def step(self) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        size = self._size()
        target_rgb, target_sil = self._target(size)
        idx = torch.randperm(self.views.num_views, generator=self.generator)[:cfg.views_per_step]
        mesh = self.current_mesh()
        rendered = self._render(mesh, idx, size)  # (B, S, S, 4)
        terms = {}
        if not cfg.silhouette_only:
            terms["rgb"] = F.mse_loss(rendered[..., :3], target_rgb[idx.to(self.device)])
        terms["silhouette"] = F.mse_loss(rendered[..., 3], target_sil[idx.to(self.device)])
        terms["edge"] = mesh_edge_loss(mesh)
        terms["normal"] = mesh_normal_consistency(mesh)
        terms["laplacian"] = mesh_laplacian_smoothing(mesh, method="uniform")
        return self.finish_step(terms)

    @torch.no_grad()
    def evaluate(self, live: bool = False) -> dict[str, float]:
        """Held-out PSNR and silhouette IoU from one hard-rasterised pass (no blur, one face per pixel);
        the live estimate renders a subset of the held-out views."""
        v = self.views
        idx = list(LIVE_VIEWS) if live else None
        out = self._render(self.current_mesh(), idx, v.heldout_images.shape[1], soft=False, heldout=True).cpu()
        images, sils = (v.heldout_images[idx], v.heldout_silhouettes[idx]) if live else (v.heldout_images,
                                                                                          v.heldout_silhouettes)
        metrics = {"iou": silhouette_iou(out[..., 3], sils)}
        if not self.cfg.silhouette_only:
            metrics = {"psnr": psnr(out[..., :3], images), **metrics}
        return metrics

    @torch.no_grad()
    def result(self) -> Result:
        """The fitted mesh with its vertex colours."""
        return Result(mesh=self.snapshot_mesh())

    def snapshot_mesh(self) -> MeshData:
        mesh = self.current_mesh()
        return MeshData(verts=mesh.verts_packed().float().cpu().numpy(),
                        faces=mesh.faces_packed().cpu().numpy().astype(np.int64),
                        colors=None if self.cfg.silhouette_only
                        else self.colors.detach().clamp(0, 1).float().cpu().numpy())

    @torch.no_grad()
    def snapshot(self) -> Snapshot:
        # The shown training view walks round the cameras, one step per snapshot.
        view = self._shown % self.views.num_views
        self._shown += 1
        mesh = self.current_mesh()
        size = self.cfg.image_size
        out = self._render(mesh, torch.tensor([view]), size)[0].cpu()  # (S, S, 4)
        rgb = out[..., :3] if not self.cfg.silhouette_only else out[..., 3:].expand(-1, -1, 3)
        v = self.views
        images = {
            "target": to_uint8(v.images[view].numpy()),
            "render": to_uint8(rgb.numpy()),
            "target_silhouette": to_uint8(v.silhouettes[view].numpy()),
            "silhouette": to_uint8(out[..., 3].numpy()),
        }
        return Snapshot(iteration=self.iteration, view=view, images=images, mesh=self.snapshot_mesh())

    @torch.no_grad()
    def turntable(self, frames: int = 36, size: int = 128) -> list[np.ndarray]:
        mesh = self.current_mesh()
        colors = None if self.cfg.silhouette_only else self.colors.detach()
        return mesh_turntable(mesh.verts_packed(), mesh.faces_packed(), colors, frames=frames, size=size)
