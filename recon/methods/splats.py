"""Point splats: coloured, semi-transparent spheres fitted to multi-view images.

recon's own method in the spirit of 3D Gaussian splatting, on PyTorch3D's CPU-capable point renderer
(pulsar; the measurements behind that choice are in :mod:`recon.splatting`, which holds the
renderer, the density control and the ``.ply`` export, independent of this class). Each step renders
a few of the target views and compares colours and silhouettes (Huber); every few steps the
density control clones or splits splats with large position gradients and prunes transparent or
oversized ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import splatting
from ..params import knob
from .base import ITERATIONS_HELP, PointData, Result
from .volumetric import VolumetricMethod, huber

#: Most splats the 3D view shows (the most opaque ones), and cameras per display render.
MAX_POINTS = 4_000  # each point costs the browser time at every scene update (per-point colour and size)
RENDER_CHUNK = 8
#: Image side at which the growth threshold is stated (position gradients scale with 1 / side^2).
GRAD_REFERENCE_SIZE = 128

_DC = "Density control"


@dataclass
class SplatsConfig:
    color_weight: float = knob(1.0, 0.0, 10.0, step=0.01, label="Colour weight", group="Loss weights", live=True,
                               help="Huber loss between rendered and target colours. Too low: the shape forms but "
                                    "the colours stay muddy; too high relative to the silhouette: dark splats "
                                    "that match the black background are left floating around the cow.")
    silhouette_weight: float = knob(1.0, 0.0, 10.0, step=0.01, label="Silhouette weight", group="Loss weights",
                                    live=True,
                                    help="Huber loss between rendered coverage and the target silhouette. Too low: "
                                         "holes and haze at the outline; too high: a crisp outline with blotchy "
                                         "colour.")
    lr_position: float = knob(0.003, 1e-5, 0.1, step=1e-5, label="Position learning rate", group="Optimiser",
                              live=True, log=True,
                              help="Adam step size of the splat centres (world units), decayed exponentially to "
                                   "the final fraction below over the run. Too low: splats barely move and gaps "
                                   "stay; too high: splats jitter and fly off (then get pruned).")
    lr_color: float = knob(0.05, 1e-4, 1.0, step=1e-4, label="Colour learning rate", group="Optimiser", live=True,
                           log=True,
                           help="Adam step size of the colour logits. Too low: colours lag behind the shape; too "
                                "high: flickering, noisy colours.")
    lr_radius: float = knob(0.002, 1e-4, 0.5, step=1e-4, label="Radius learning rate", group="Optimiser", live=True,
                            log=True,
                            help="Adam step size of the log radii. Too low: splats keep their initial size, holes "
                                 "stay open; too high: splats balloon into blobs or shrink to dust.")
    lr_opacity: float = knob(0.05, 1e-4, 1.0, step=1e-4, label="Opacity learning rate", group="Optimiser", live=True,
                             log=True,
                             help="Adam step size of the opacity logits. Too low: stray splats stay visible (haze); "
                                  "too high: splats blink on and off and good ones get pruned.")
    position_lr_final: float = knob(0.1, 0.001, 1.0, step=0.001, label="Final position learning rate (fraction)",
                                    group="Optimiser", log=True,
                                    help="The position learning rate decays exponentially to this fraction of its "
                                         "value by the last iteration (3DGS decays it 100x). 1: no decay, splats keep "
                                         "jittering; small: positions freeze early.")
    iterations: int = knob(220, 1, 30000, label="Iterations", group="Run", help=ITERATIONS_HELP)
    num_splats: int = knob(5000, 10, 100_000, label="Initial splats", group="Splats",
                           help="Splats at the start. Fewer: faster steps, coarse until density control adds more; "
                                "more: finer from the start, slower steps.")
    max_splats: int = knob(7000, 10, 500_000, label="Most splats", group=_DC,
                           help="Density control never grows beyond this count. Lower: faster, coarser; higher: "
                                "finer detail, each step slower (time grows about linearly).")
    init: str = knob("carved", choices=("carved", "random"), label="Initialisation", group="Splats",
                     help="'random': uniform in the 3-unit cube the volumetric methods use; most splats start in "
                          "empty space and must be pruned. 'carved': random points kept only where they project "
                          "inside the training silhouettes (a visual hull), coloured by the target pixels they "
                          "project to: a rough cow from the first step.")
    gamma: float = knob(0.2, 1e-3, 1.0, step=1e-3, label="Blending sharpness (gamma)", group="Rendering", log=True,
                        help="Pulsar's blending temperature: how strongly the nearest splat on a ray wins over those "
                             "behind it and over the background. Low: crisp, opaque splats but weak gradients at "
                             "the edges; high: a soft, translucent blur that fits smoothly but looks hazy.")
    gamma_final: float = knob(0.02, 1e-3, 1.0, step=1e-3, label="Final blending sharpness", group="Rendering",
                              log=True,
                              help="Gamma moves (geometrically) from the value above to this one over the run: soft "
                                   "early, while splats find their places, sharp late, so that the front splats "
                                   "hide the ones behind. Equal to the start: constant.")
    image_size: int = knob(128, 32, 256, step=16, label="Image size (pixels)", group="Rendering",
                           help="Side of the target and rendered images. Smaller: faster steps, blurrier fit; "
                                "larger: finer detail, slower (about linear in the pixel count).")
    views_per_step: int = knob(4, 1, 40, label="Views per step", group="Rendering",
                               help="Training views rendered each step. Fewer: faster, noisier steps; more: smoother "
                                    "steps, slower.")
    num_views: int = knob(40, 4, 100, label="Training views", group="Targets",
                          help="Target views on the ring around the cow. Too few: holes and wrong colours between "
                               "them (seen in the held-out views); more: a longer one-off render at the start.")
    grow_grad: float = knob(1.5e-4, 1e-6, 1e-2, step=1e-6, label="Grow above gradient", group=_DC, log=True,
                            help="Splats whose mean position-gradient norm (over the steps they were seen in; "
                                 "stated for one 128-px view, other sizes and view counts are rescaled) exceeds "
                                 "this are cloned or split: they sit where the render is wrong and moving them is "
                                 "not enough. Lower: more splats, sooner (up to the cap); higher: fewer, coarse "
                                 "areas stay coarse.")
    grow_radius: float = knob(0.03, 0.001, 0.5, step=0.001, label="Clone below radius", group=_DC, log=True,
                              help="High-gradient splats up to this radius (world units; the cow is ~2 long) are "
                                   "cloned (a copy in place); larger ones are split into two smaller ones within "
                                   "the parent. Lower: more splits; higher: more clones.")
    prune_opacity: float = knob(0.02, 0.0, 0.5, step=0.001, label="Prune below opacity", group=_DC,
                                help="Splats less opaque than this are removed at each refinement. Higher: cleaner "
                                     "but good splats that were fading in are lost; 0: transparent ones stay and "
                                     "cost time.")
    prune_radius: float = knob(0.25, 0.01, 3.0, step=0.01, label="Prune above radius", group=_DC, log=True,
                               help="Splats larger than this radius (world units) are removed: big blobs that "
                                    "cover many pixels with one colour. Lower: small splats only; higher: blobs "
                                    "survive.")
    refine_start: int = knob(50, 0, 30000, label="Refine from step", group=_DC,
                             help="First step of density control. Earlier: growth from noisy early gradients; "
                                  "later: holes stay open longer.")
    refine_stop: int = knob(180, 0, 30000, label="Refine until step", group=_DC,
                            help="Last step of density control; after it the count is fixed and the splats settle. "
                                 "Set below the start to switch density control off.")
    refine_every: int = knob(50, 0, 5000, label="Refine every (steps)", group=_DC,
                             help="Steps between refinements; gradients are averaged over them. Shorter: faster "
                                  "growth from noisier statistics; 0: no density control.")
    seed: int = knob(0, 0, 2**31 - 1, label="Seed", group="Run",
                     help="Random seed of the initial splats, the view order and splitting; the same seed and "
                          "settings repeat a run.")


class Splats(VolumetricMethod):
    name = "splats"
    title = "Point splats (pulsar)"
    Config = SplatsConfig
    tutorial = ""
    device_presets = {"cpu": "Quick", "cuda": "Full"}
    points_label = "splats (sized by radius)"
    live_note = "all the held-out views (splats render fast)"
    explain = (
        "**What is optimised:** a cloud of splats, each a sphere with a position, a colour, a radius and "
        "an opacity. Unlike the voxel grid (a value at every cell of a fixed cube, empty space included) "
        "or the NeRF (a network queried at points along every ray), splats live only where the object is: "
        "their number, and where they are, change during the fit.\n\n"
        "**Start:** random points in the cube, by default *carved*: only those that project inside the "
        "training silhouettes are kept (a visual hull), coloured by the target pixels they fall on, so a "
        "rough cow is there before the first step.\n\n"
        "**Rendering:** PyTorch3D's pulsar renderer draws each splat as a sphere; on every pixel's ray the "
        "spheres it hits are blended by a softmax over depth (the *blending sharpness* gamma: low = the "
        "nearest wins) weighted by opacity and by how centrally the ray hits, and the background joins with "
        "a fixed weight. No ray marching: the cost grows with the splats and pixels, not with samples per "
        "ray.\n\n"
        "**Loss terms:** *color* is the Huber distance between rendered and target pixel colours (it beat L1 "
        "by about 1 dB here); *silhouette* the Huber distance between the rendered coverage and the target "
        "silhouette.\n\n"
        "**Optimiser:** Adam with its own learning rate for positions, colours, radii and opacities (the "
        "position rate decays over the run).\n\n"
        "**Density control:** gradients on the positions show where moving splats cannot fix the render. "
        "Every few steps, splats whose mean position gradient is above the threshold grow: small ones are "
        "cloned, large ones split in two; nearly transparent, oversized or escaped splats are pruned; the "
        "count is capped. Without it the initial splats must do everything by themselves: from a random start, "
        "the ones in empty space fade but linger as a haze of floaters, and the coarse ones on the cow stay "
        "blobs.\n\n"
        "**Quality:** PSNR and silhouette IoU on held-out cameras between the training views (higher is "
        "better). The result exports as a 3D Gaussian splatting `.ply` (isotropic, degree-0 colours)."
    )
    presets: dict[str, dict[str, Any]] = {}  # filled in below, after measurement

    def __init__(self, asset: Any, cfg: SplatsConfig, device: torch.device) -> None:
        super().__init__(asset, cfg, device)
        self.background = tuple(self.views.settings.background)
        cams = self.views.cameras(device)
        gen = torch.Generator().manual_seed(int(cfg.seed))
        self.split_gen = torch.Generator().manual_seed(int(cfg.seed) + 1)
        self.splats = splatting.init_splats(
            cfg.num_splats, cameras=cams, silhouettes=self.silhouettes, images=self.images if cfg.init == "carved"
            else None, carve=cfg.init == "carved", generator=gen, device=device)
        self.renderers = splatting.PulsarRenderers()  # this run's own pulsar buffers
        self.optimizer = splatting.make_optimizer(self.splats, self.learning_rates())
        self.density = splatting.DensityController(self.density_control(), self.splats)
        self.last_refinement: dict[str, int] = {}  # what the last refinement did (cloned, split, pruned)
        self._views_in_step = cfg.views_per_step

    # --- configuration ------------------------------------------------------------------------
    def density_control(self) -> splatting.DensityControl:
        c = self.cfg
        return splatting.DensityControl(grow_grad=c.grow_grad, grow_radius=c.grow_radius,
                                        prune_opacity=c.prune_opacity, prune_radius=c.prune_radius,
                                        refine_start=c.refine_start, refine_stop=c.refine_stop,
                                        refine_every=c.refine_every, max_splats=c.max_splats)

    def learning_rates(self) -> dict[str, float]:
        """This step's learning rate per parameter group: the live values, the position rate decayed."""
        c = self.cfg
        frac = min(1.0, self.iteration / max(1, c.iterations - 1))
        return {"positions": c.lr_position * c.position_lr_final ** frac, "colors": c.lr_color,
                "log_radii": c.lr_radius, "opacities": c.lr_opacity}

    def gamma(self) -> float:
        """Pulsar's blending temperature at this step (geometric from ``gamma`` to ``gamma_final``)."""
        c = self.cfg
        frac = min(1.0, self.iteration / max(1, c.iterations - 1))
        return float(c.gamma * (c.gamma_final / c.gamma) ** frac)

    def update_lr(self) -> None:
        lrs = self.learning_rates()
        for group in self.optimizer.param_groups:
            group["lr"] = lrs[group["name"]]

    def apply_live(self, changes: dict[str, Any]) -> None:
        self.cfg = dataclasses.replace(self.cfg, **changes)
        self.update_lr()

    # --- the loop -----------------------------------------------------------------------------
    def step(self) -> dict[str, torch.Tensor]:
        with splatting.intra_op_threads(self.threads()):
            return self._step()

    def threads(self) -> int:
        """Intra-op torch threads of a step or render: 1 on the CPU (pulsar is serial there, and small torch
        ops only wait for a second thread; measured in :mod:`recon.splatting`), the default elsewhere."""
        return 1 if self.device.type == "cpu" else torch.get_num_threads()

    def _step(self) -> dict[str, torch.Tensor]:
        # Density control between steps: it reads the gradient statistics of the steps before.
        self.last_refinement = self.density.after_step(self.iteration, self.splats, self.optimizer,
                                                       self.split_gen) or self.last_refinement
        self.update_lr()
        self.optimizer.zero_grad(set_to_none=True)
        idx = self.next_batch()
        self._views_in_step = len(idx)
        rgba = splatting.render(self.splats, self.views.cameras(self.device, idx=idx), self.cfg.image_size,
                                self.background, gamma=self.gamma(), renderers=self.renderers)
        terms = {
            "color": huber(rgba[..., :3], self.images[idx]).abs().mean(),
            "silhouette": huber(rgba[..., 3], self.silhouettes[idx]).abs().mean(),
        }
        return self.finish_step(terms)

    def after_backward(self) -> None:
        """Density control's statistics: position-gradient norms, scaled so that the threshold means the same
        whatever the views per step (the loss averages over them) and image size (measured: the norms fall
        with the square of the side); the threshold is in units of one view at 128 px."""
        scale = self._views_in_step * (self.cfg.image_size / GRAD_REFERENCE_SIZE) ** 2
        self.density.after_backward(self.splats, grad_scale=float(scale))

    # --- views and results ----------------------------------------------------------------------
    @torch.no_grad()
    def render(self, cameras, size: int, chunk: int = RENDER_CHUNK) -> torch.Tensor:
        splats, gamma = self.splats.detached(), self.gamma()
        with splatting.intra_op_threads(self.threads()):
            return self.render_in_chunks(cameras, size, lambda part: splatting.render(
                splats, part, size, self.background, gamma=gamma, renderers=self.renderers), per=chunk)

    def evaluate(self, live: bool = False) -> dict[str, float]:
        """Held-out PSNR and IoU; rendering five 128-px views of splats is cheap, so live = full."""
        return super().evaluate()

    def density_grid(self, resolution: int = 64):
        raise NotImplementedError("splats have no density grid; export them as a .ply")

    def field(self, ray_bundle):
        raise NotImplementedError("splats are not a field")

    def splat_arrays(self) -> dict[str, np.ndarray]:
        """positions (N, 3), colors (N, 3) in [0, 1], opacities (N,), radii (N,) as float32 arrays."""
        s = self.splats.detached()
        return {"positions": s.positions.cpu().numpy().astype(np.float32),
                "colors": s.rgb().cpu().numpy().astype(np.float32),
                "opacities": s.opacity().cpu().numpy().astype(np.float32),
                "radii": s.radii().cpu().numpy().astype(np.float32)}

    def write_ply(self, path: str | Path) -> Path:
        a = self.splat_arrays()
        return splatting.write_splat_ply(path, a["positions"], a["colors"], a["opacities"], a["radii"])

    def result(self) -> Result:
        return Result(splats=self.splat_arrays())

    def points(self) -> PointData:
        """The splats as coloured points (the most opaque MAX_POINTS), with their radii as ``sizes``."""
        a = self.splat_arrays()
        order = np.argsort(-a["opacities"], kind="stable")[:MAX_POINTS]
        return PointData(xyz=a["positions"][order], colors=np.clip(a["colors"][order], 0, 1),
                         sizes=a["radii"][order])  # world-space radii


#: The CPU defaults (see the measurements in :mod:`recon.splatting`).
QUICK = {f.name: f.default for f in dataclasses.fields(SplatsConfig) if f.name != "seed"}
Splats.presets = {
    "Quick": dict(QUICK),
    # For a GPU (pulsar runs there too, far faster): more splats, views and steps. Not measured here (no
    # GPU on the machine these presets were tuned on); the schedule is Quick's, stretched.
    "Full": {**QUICK, "iterations": 3000, "num_splats": 20000, "max_splats": 100000, "views_per_step": 8,
             "refine_start": 100, "refine_every": 100, "refine_stop": 2500, "gamma_final": 0.01},
    # A failure mode: splats start anywhere in the cube and density control is off. Most start in empty
    # space; nothing prunes them, so they linger as a faint haze of floaters around the cow, and the few
    # on the cow stay large blobs (no splitting). Quick avoids both: carving starts splats on the cow,
    # density control prunes what fades and splits what is too coarse.
    "Random start, no density control (floaters)": {**QUICK, "init": "random", "num_splats": 2000,
                                                    "refine_every": 0},
}
