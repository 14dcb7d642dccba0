"""Point splats: parameters, a differentiable renderer, density control and the 3DGS ``.ply`` layout.

Independent of recon's Method classes (torch, numpy and PyTorch3D only), so that any method can use it.
One module per concept; every name is re-exported here:

- :mod:`.params`: :class:`SplatParams`, N splats as leaf tensors (positions, colour logits, log radii,
  opacity logits); :func:`init_splats` starts them at random in the 3-unit cube, optionally carved by
  the training silhouettes (a visual hull) and coloured from the target pixels.
- :mod:`.rendering`: :func:`render`, (B, S, S, 4) RGBA with PyTorch3D's pulsar sphere renderer
  (``PulsarPointsRenderer``), or for comparison the points rasteriser with alpha compositing
  (``backend="raster"``); :class:`PulsarRenderers`, a run's own pulsar buffers; :func:`intra_op_threads`.
- :mod:`.density`: :func:`make_optimizer` (Adam, one parameter group per kind of parameter);
  :class:`DensityControl` / :class:`DensityController`: clone, split, prune and cap on a schedule, after
  gsplat's default strategy, keeping Adam's moments in step with the splats.
- :mod:`.ply`: :func:`write_splat_ply` / :func:`read_splat_ply`, the binary layout 3D Gaussian splatting
  viewers read.

Measurements (2026-11-30, the cow's 40 "ring" views with a black background, held-out PSNR/IoU on the 5
held-out ring views at 128 px; a shared 2-core CPU, so each figure carries the 1-minute load average of
the machine, 2 meaning one other busy process; script ``/tmp/splatbench/compare_renderers.py``):

Renderer speed, forward + backward of one step at the Quick settings (5000 carved splats, 4 views of
128 px, one intra-op thread), median of 12: pulsar 143 ms (133 + 10; the same at gamma 0.2 and 0.02),
points rasteriser + ``AlphaCompositor`` (8 points per pixel) 456 ms (430 + 27): 3.2x slower (load 2.6;
at load 4.8: 297 vs 1205 ms). Both run on one core: pulsar's CPU code is serial and neither releases the
GIL, so views cannot be rendered in parallel threads.

Quality after 60 s of optimisation (wall clock, evaluation not counted):

- pulsar, the Quick preset: 28.1 dB, IoU 0.964 (162 of 220 steps, load 6.5); 28.8 dB, IoU 0.964 (all
  220 steps in 36 s, load 2.5). At 30 s: 26.2 dB (load 6.5), 28.4 dB (load 2.5). Peak RSS 1.3-1.4 GB,
  most of it the one-off target render.
- points rasteriser, Quick with 3000 splats (at most 4000) and 150 steps (its step costs 3x as much):
  26.4 dB, IoU 0.983 (122 steps, load 5.5). Per step it learns faster (after 100 steps at 128 px: 26.1 vs
  25.5 dB) and its alpha compositing gives crisper outlines (the higher IoU), but per second pulsar wins
  by about 2 dB. Chosen: pulsar.
- The voxel volume's Quick preset, for reference: about 27 dB at 60 s.

What the Quick settings rest on (quality per step counted in steps at 1 thread, 2026-11-30, load 2-6):

- Carving pays: before any step, carved splats already score 19.0 dB / IoU 0.83 against training views
  at 64 px (random: 14.4 / 0.23); carving 5000 splats takes ~0.2 s. After the Quick run: carved 28.8 dB /
  IoU 0.964, random start 23.3 dB / 0.906 (it spends its steps fading and pruning splats in empty space).
- Colour loss: Huber (recon's pseudo-Huber, scale 0.1) beat L1 by 1.1 dB (28.6 vs 27.4 at 280 steps).
- Gamma (pulsar's blending temperature) annealed from 0.2 to 0.02 over the run: soft blending early
  (usable silhouette gradients: at a constant 0.01 the held-out IoU fell from 0.74 to 0.66 in 600 steps,
  coverage being all-or-nothing), sharp late (the front surface hides the back: a constant 0.1 leaves the
  far side showing through, 26.5 vs 26.7 dB). Annealing to 0.005 was worse (25.8).
- Depth normalisation: pulsar's depth softmax runs over [d - 1.5, d + 1.5] around each camera's distance
  d to the origin instead of [znear, zfar] = [1, 100]: +0.4 dB at the same gamma.
- Learning rates: radius 0.002 (0.001-0.003 alike; 0.01: -0.4 dB; 0.03: -1.4 dB, splats balloon),
  position 0.003 decayed to a tenth (0.01: -0.9 dB); colour and opacity 0.05 (0.02 and 0.1: within
  0.15 dB).
- More splats are better per step but cost linearly: 3000 -> 6000 splats +0.9 dB at equal steps;
  10000 was too slow for 60 s. Two views per step: worse per second than four.
- Density control at these thresholds: Quick with it 28.8 dB / IoU 0.964 (5000 -> 7000 splats, the cap)
  against 28.4 dB / 0.972 without (and 10% faster steps): a small gain in a 220-step run. From a random
  start it matters more: without it (the failure preset) 21.7 dB / 0.895 with a haze of floaters; with
  it the floaters are pruned. Opacity resets (3DGS) were not used: too few steps for them to pay back.
- Intra-op threads: steps run with one torch thread (:func:`intra_op_threads`): with two, each small
  torch op around pulsar's serial kernel waits for the second thread to be scheduled: 0.59 s vs
  0.15 s per Quick step at load 2.5, 0.83 vs 0.23 s at load 8.5.
- Coarse-to-fine images (64 px for the first 40%) did not pay: 27.7 dB after 300 steps, against 28.4
  after 260 full-size steps that took less time.

Pulsar notes: ``PulsarPointsRenderer`` converts the camera's fov from degrees to radians in place on
every call (PyTorch3D 0.7.9), so :func:`render` passes ``fov`` explicitly; radii are world-space
(``radius_world=True``); the alpha channel is a fourth colour channel that is 1 on every splat and 0
on the background, which pulsar's normalised blending turns into coverage.
"""

from __future__ import annotations

from .density import DensityControl, DensityController, DensityState, make_optimizer, refine, reset_opacity
from .params import CUBE_EXTENT, KINDS, SplatParams, init_splats, knn_radii, project_to_pixels, sample_images
from .ply import PLY_PROPERTIES, SH_C0, read_splat_ply, write_splat_ply, write_viewer_copy
from .rendering import DEPTH_HALF_RANGE, PulsarRenderers, intra_op_threads, render

__all__ = [
    "CUBE_EXTENT", "DEPTH_HALF_RANGE", "KINDS", "PLY_PROPERTIES", "SH_C0", "DensityControl", "DensityController",
    "DensityState", "PulsarRenderers", "SplatParams", "init_splats", "intra_op_threads", "knn_radii", "make_optimizer",
    "project_to_pixels", "read_splat_ply", "refine", "render", "reset_opacity", "sample_images", "write_splat_ply",
    "write_viewer_copy",
]
