"""The configs calibration measures: every method, from tiny to near the sliders' maxima, chosen so that
each driver of the model varies on its own somewhere (``quick``: a smaller set)."""

from __future__ import annotations

from typing import Any


def _spec(method: str, label: str, quick: bool = False, steps: int = 3, full: bool = True, **values: Any) -> dict[str, Any]:
    return dict(method=method, label=label, quick=quick, steps=steps, full=full, values=dict(iterations=steps, **values))


_V = dict(num_views=4)  # a cheap target render unless the config is about the setup
#: The configs measured to fit the coefficients: each driver varied over a wide range, at sizes that
#: run in about a minute each on a 2-core CPU ("quick": the subset for --quick).
CALIBRATION: list[dict[str, Any]] = [
    # volume: grid, voxels x views, ray samples, evaluation chunks; the setup's target renders
    _spec("volume", "volume D64 S32 B1 P64", True, grid_size=64, image_size=32, views_per_step=1, points_per_ray=64, **_V),
    _spec("volume", "volume D192 S32 B1 P32", True, grid_size=192, image_size=32, views_per_step=1, points_per_ray=32, **_V),
    _spec("volume", "volume D128 S32 B8 P32", True, grid_size=128, image_size=32, views_per_step=8, points_per_ray=32,
          num_views=8),
    _spec("volume", "volume D64 S64 B4 P256", True, grid_size=64, image_size=64, views_per_step=4, points_per_ray=256, **_V),
    _spec("volume", "volume D32 S128 B4 P128", False, grid_size=32, image_size=128, views_per_step=4, points_per_ray=128,
          **_V),
    _spec("volume", "volume D96 S96 B2 P192", False, grid_size=96, image_size=96, views_per_step=2, points_per_ray=192, **_V),
    _spec("volume", "volume D256 S32 B2 P16", False, grid_size=256, image_size=32, views_per_step=2, points_per_ray=16, **_V),
    _spec("volume", "volume D192 S48 B2 P256", False, grid_size=192, image_size=48, views_per_step=2,
          points_per_ray=256, **_V),
    _spec("volume", "volume D64 S32 B4 P512", False, grid_size=64, image_size=32, views_per_step=4, points_per_ray=512, **_V),
    _spec("volume", "volume N40 S128 (setup)", True, grid_size=32, image_size=128, views_per_step=1, points_per_ray=16,
          num_views=40),
    _spec("volume", "volume N16 S256 (setup)", False, grid_size=32, image_size=256, views_per_step=1, points_per_ray=16,
          num_views=16),
    _spec("volume", "volume N100 S256 (setup)", False, grid_size=32, image_size=256, views_per_step=1,
          points_per_ray=16, num_views=100),
    # nerf: hidden width, harmonic functions, rays x points; the live estimate's one big call
    _spec("nerf", "nerf N100 S64 (setup)", False, harmonic_functions=4, hidden=16, rays_per_image=64,
          points_per_ray=16, views_per_step=1, image_size=64, num_views=100),
    _spec("nerf", "nerf K8 H64 R256 P48 B4", True, harmonic_functions=8, hidden=64, rays_per_image=256, points_per_ray=48,
          views_per_step=4, image_size=32, **_V),
    _spec("nerf", "nerf K60 H256 R128 P32 B2", True, harmonic_functions=60, hidden=256, rays_per_image=128,
          points_per_ray=32, views_per_step=2, image_size=32, **_V),
    _spec("nerf", "nerf K60 H512 R256 P64 B2", False, full=False, harmonic_functions=60, hidden=512, rays_per_image=256,
          points_per_ray=64, views_per_step=2, image_size=32, **_V),
    _spec("nerf", "nerf K4 H32 R2048 P128 B4", True, harmonic_functions=4, hidden=32, rays_per_image=2048,
          points_per_ray=128, views_per_step=4, image_size=32, **_V),
    _spec("nerf", "nerf K30 H128 R512 P128 B4", False, harmonic_functions=30, hidden=128, rays_per_image=512,
          points_per_ray=128, views_per_step=4, image_size=64, **_V),
    _spec("nerf", "nerf K60 H64 R512 P256 B2", False, harmonic_functions=60, hidden=64, rays_per_image=512,
          points_per_ray=256, views_per_step=2, image_size=32, **_V),
    _spec("nerf", "nerf K60 H16 R2048 P64 B4", False, full=False, harmonic_functions=60, hidden=16,
          rays_per_image=2048, points_per_ray=64, views_per_step=4, image_size=32, **_V),
    _spec("nerf", "nerf K1 H16 R4096 P64 B4", False, full=False, harmonic_functions=1, hidden=16, rays_per_image=4096,
          points_per_ray=64, views_per_step=4, image_size=32, **_V),
    _spec("nerf", "nerf K8 H64 R256 P48 B4 N8 S64", False, harmonic_functions=8, hidden=64, rays_per_image=256,
          points_per_ray=48, views_per_step=4, image_size=64, num_views=8),
    _spec("nerf", "nerf K12 H128 R64 P512 B1", False, full=False, harmonic_functions=12, hidden=128, rays_per_image=64,
          points_per_ray=512, views_per_step=1, image_size=32, **_V),
    # textured mesh: fragments (views x size^2 x faces per pixel), shading, sphere faces x views
    _spec("textured_mesh", "textured L3 S64 K8 B1", True, sphere_level=3, image_size=64, faces_per_pixel=8,
          views_per_step=1, optimizer="adam", lr=0.02, **_V),
    _spec("textured_mesh", "textured L4 S128 K50 B2", True, sphere_level=4, image_size=128, faces_per_pixel=50,
          views_per_step=2, **_V),
    _spec("textured_mesh", "textured L4 S64 K100 B4", False, sphere_level=4, image_size=64, faces_per_pixel=100,
          views_per_step=4, **_V),
    _spec("textured_mesh", "textured L6 S32 K10 B2", True, sphere_level=6, image_size=32, faces_per_pixel=10,
          views_per_step=2, **_V),
    _spec("textured_mesh", "textured L4 S128 K50 B2 silhouette", False, sphere_level=4, image_size=128,
          faces_per_pixel=50, views_per_step=2, silhouette_only=True, **_V),
    _spec("textured_mesh", "textured L2 S256 K20 B1", False, sphere_level=2, image_size=256, faces_per_pixel=20,
          views_per_step=1, **_V),
    _spec("textured_mesh", "textured L5 S96 K30 B3", False, sphere_level=5, image_size=96, faces_per_pixel=30,
          views_per_step=3, **_V),
    _spec("textured_mesh", "textured N24 S128 (setup)", False, sphere_level=1, image_size=128, faces_per_pixel=1,
          views_per_step=1, num_views=24),
    # deform: sphere level, points per surface
    _spec("deform", "deform L4 P5000", True, sphere_level=4, points=5000, coarse_points=5000),
    _spec("deform", "deform L6 P1000", True, sphere_level=6, points=1000, coarse_points=1000),
    _spec("deform", "deform L2 P20000", True, sphere_level=2, points=20000, coarse_points=20000),
    _spec("deform", "deform L5 P30000", False, sphere_level=5, points=30000, coarse_points=30000),
    _spec("deform", "deform L1 P100", False, sphere_level=1, points=100, coarse_points=100),
    # splats: splats x views per step, pixels per step, splats x pixels; the setup's carving and neighbours
    _spec("splats", "splats N5000 S128 B4", True, num_splats=5000, image_size=128, views_per_step=4, **_V),
    _spec("splats", "splats N50000 S32 B2", True, num_splats=50000, image_size=32, views_per_step=2, **_V),
    _spec("splats", "splats N2000 S256 B16", True, num_splats=2000, image_size=256, views_per_step=16, num_views=16),
    _spec("splats", "splats N100 S128 B1 N40 (setup)", True, num_splats=100, image_size=128, views_per_step=1,
          num_views=40),
    _spec("splats", "splats N100000 S32 B40 random", False, num_splats=100000, image_size=32, views_per_step=40,
          num_views=40, init="random"),
    _spec("splats", "splats N100000 S32 B2", False, num_splats=100000, image_size=32, views_per_step=2, **_V),
    _spec("splats", "splats N20000 S128 B8", False, num_splats=20000, image_size=128, views_per_step=8, num_views=8),
    _spec("splats", "splats N30000 S64 B16 random", False, num_splats=30000, image_size=64, views_per_step=16,
          num_views=16, init="random"),
    _spec("splats", "splats N10 S32 B1", False, num_splats=10, image_size=32, views_per_step=1, **_V),
    _spec("splats", "splats N2000 S256 B40", False, num_splats=2000, image_size=256, views_per_step=40, num_views=40),
    _spec("splats", "splats N20000 S64 N100 (setup)", False, num_splats=20000, image_size=64, views_per_step=1,
          num_views=100),
    _spec("splats", "splats N100000 S32 N16 (setup)", False, num_splats=100000, image_size=32, views_per_step=1,
          num_views=16),
    _spec("splats", "splats N500 S256 N16 (setup)", False, num_splats=500, image_size=256, views_per_step=1,
          num_views=16),
    _spec("splats", "splats N100000 S32 N40 (setup)", False, num_splats=100000, image_size=32, views_per_step=1,
          num_views=40),
    _spec("splats", "splats N100000 S32 N100 (setup)", False, num_splats=100000, image_size=32, views_per_step=1,
          num_views=100),
]

#: The drivers each phase's coefficients multiply (the fit's columns), by method and kind ("memory",
#: "seconds"): the splats' (the other methods' are in recon.cost.calibrate's MEMORY_DRIVERS and
#: SECONDS_DRIVERS, which take these in). Splats are fitted on their own setup rows: their setup adds
#: carving and the initial radii to the image methods' target render.
FIT_DRIVERS: dict[str, dict[str, dict[str, list[str]]]] = {
    "splats": {
        "memory": {"setup": ["target pixels", "pixels rendered at once (targets)",
                             "carving points x training views beyond the reused"],
                   "step": ["target pixels", "splats", "splats x views per step", "pixels per step"],
                   "evaluate": ["target pixels", "splats", "splats x views per step", "pixels per step"]},
        "seconds": {"setup": ["training views", "target pixels", "carving points x training views",
                              "splat pairs (init)"],
                    "step": ["splats", "splats x views per step", "pixels per step", "splats x pixels per step"],
                    "evaluate": ["evaluation splat-views"]},
    },
}
