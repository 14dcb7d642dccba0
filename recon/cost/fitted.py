"""What calibration measured: the cost model's coefficients (:mod:`recon.cost.model`), fitted by
``python -m recon.cost --calibrate`` (:mod:`recon.cost.calibrate`)."""

from __future__ import annotations

#: Per method, how the seconds fitted on the shared machine map to the quiet one (:func:`quiet_factors`):
#: step = const + scale x (fitted step - loaded_const); setup x setup. Fitted with COEFFICIENTS.
QUIET_FACTORS: dict[str, dict[str, float]] = {
    'deform': {
        'scale': 0.2108,
        'const': 0,
        'loaded_const': 0.001766,
        'setup': 6.598},
    'textured_mesh': {
        'scale': 0.6032,
        'const': 0.0414,
        'loaded_const': 1.612,
        'setup': 0.6863},
    'volume': {
        'scale': 0.6729,
        'const': 0,
        'loaded_const': 0.01007,
        'setup': 0.6863},
    'nerf': {
        'scale': 0.2734,
        'const': 0,
        'loaded_const': 0.1161,
        'setup': 0.6863},
    # No quiet benchmark of splats (bench_results/bench.json has none): their seconds are kept as measured
    # (the fastest of 3 tries, mostly at load 1.1-1.5; steps on one intra-op thread, which a busy
    # second core slows less than the others' two-thread steps), so this maps them onto themselves.
    'splats': {
        'scale': 1,
        'const': 0.002527,
        'loaded_const': 0.002527,
        'setup': 1}}

# --- the fitted coefficients ---------------------------------------------------------------------------
# Fitted on 2026-11-30 by `python -m recon.cost --calibrate --jobs 2` (which reproduces them; see the
# module docstring) on the project's CPU machine: 2 vCPUs (Intel Xeon, 2 torch threads), 24 GB, torch
# 2.11.0 (CPU), PyTorch3D 0.7.9, Python 3.11, target the built-in cow. 38 configs, each in a fresh
# process; memory: the peak growth of the resident set over the process's after imports and loading
# the cow, per phase; seconds: the fastest of 2-3 tries at load average 2.6-7.8, mapped to the quiet
# machine by QUIET_FACTORS (the benchmark of 2026-11-21). Units: bytes, seconds, per unit of each
# driver ("const": per run). Every config's peak memory is estimated within 0.89-1.19x of measured.
# splats: fitted on 2026-11-30 by `python -m recon.cost --calibrate --only splats` (the columns in
# recon.cost.specs.FIT_DRIVERS), same machine, 15 configs; memory runs at load 1.2-4.4, seconds the fastest
# of 3-4 tries (mostly at load 0.6-1.5); every peak within 0.88-1.19x of measured. Seconds not mapped to a
# quiet benchmark (there is none of splats; see QUIET_FACTORS).
COEFFICIENTS: dict[str, dict[str, dict[str, dict[str, float]]]] = {
    'volume': {
        'memory': {
            'setup': {
                'const': 3.698e+08,
                'grid voxels': 4.559,
                'pixels rendered at once (targets)': 2022,
                'target pixels': 45.03},
            'step': {
                'const': 2.548e+08,
                'target pixels': 27.07,
                'grid voxels': 79.63,
                'grid voxels x views per step': 14.17,
                'ray samples per step': 72.69},
            'evaluate': {
                'const': 2.859e+08,
                'target pixels': 27.17,
                'grid voxels': 75.84,
                'samples rendered at once (no grad)': 39.69}},
        'seconds': {
            'setup': {
                'const': 1.856,
                'training views': 0.1118,
                'target pixels': 5.009e-06},
            'step': {
                'const': 0,
                'ray samples per step': 1.643e-07,
                'ray samples x grid side': 0,
                'grid voxels': 1.193e-08,
                'grid voxels x views per step': 2.055e-08},
            'evaluate': {
                'const': 0,
                'evaluation samples': 4.776e-08,
                'evaluation samples x grid side': 5.393e-10,
                'grid voxels': 1.524e-08}}},
    'nerf': {
        'memory': {
            'setup': {
                'const': 3.698e+08,
                'pixels rendered at once (targets)': 2022,
                'target pixels': 45.03},
            'step': {
                'const': 2.386e+08,
                'target pixels': 0,
                'ray samples per step': 153.2,
                'hidden activations per step': 26.41,
                'embedding values per step': 5.571},
            'evaluate': {
                'const': 3.577e+08,
                'target pixels': 0,
                'samples rendered at once (no grad)': 20.16,
                'network values per call (no grad)': 3.775}},
        'seconds': {
            'setup': {
                'const': 1.856,
                'training views': 0.1118,
                'target pixels': 5.009e-06},
            'step': {
                'const': 0,
                'ray samples per step': 9.552e-07,
                'embedding values per step': 7.935e-09,
                'network multiply-adds per step': 4.502e-11},
            'evaluate': {
                'const': 0,
                'evaluation samples': 6.557e-07,
                'evaluation multiply-adds': 2.525e-11}}},
    'textured_mesh': {
        'memory': {
            'setup': {
                'const': 3.698e+08,
                'pixels rendered at once (targets)': 2022,
                'target pixels': 45.03},
            'step': {
                'const': 1.78e+08,
                'target pixels': 236.3,
                'sphere faces': 539.1,
                'fragments per step': 78.95,
                'shaded fragments per step': 610.4,
                'faces x views per step': 866.6},
            'evaluate': {
                'const': 2.013e+08,
                'target pixels': 257.2,
                'sphere faces': 3829,
                'fragments rendered at once (no grad)': 207.5}},
        'seconds': {
            'setup': {
                'const': 1.856,
                'training views': 0.1118,
                'target pixels': 5.009e-06},
            'step': {
                'const': 0.0414,
                'fragments per step': 5.935e-06,
                'shaded fragments per step': 0,
                'faces x views per step': 2.781e-05,
                'tiles per step': 0},
            'evaluate': {
                'const': 0.5559,
                'sphere faces': 9.139e-05}}},
    'deform': {
        'memory': {
            'setup': {
                'const': 1.274e+08,
                'sphere vertices': 420.7},
            'step': {
                'const': 1.335e+08,
                'sphere vertices': 3083,
                'points per surface': 136},
            'evaluate': {
                'const': 1.357e+08,
                'sphere vertices': 2921}},
        'seconds': {
            'setup': {
                'const': 0.2133,
                'sphere vertices': 0.0002646},
            'step': {
                'const': 0,
                'sphere vertices': 6.849e-06,
                'points per surface': 2.126e-05,
                'point pairs per step': 6.99e-10},
            'evaluate': {
                'const': 0.1948,
                'sphere vertices': 1.161e-06}}},
    'splats': {
        'memory': {
            'setup': {
                'const': 3.608e+08,
                'target pixels': 122.7,
                'pixels rendered at once (targets)': 1759,
                'carving points x training views beyond the reused': 75.29},
            'step': {
                'const': 1.956e+08,
                'target pixels': 103.5,
                'splats': 379.5,
                'splats x views per step': 7.353,
                'pixels per step': 251.5},
            'evaluate': {
                'const': 2.083e+08,
                'target pixels': 50.15,
                'splats': 223.4,
                'splats x views per step': 10.9,
                'pixels per step': 210.9}},
        'seconds': {
            'setup': {
                'const': 0.9617,
                'training views': 0.1052,
                'target pixels': 4.425e-06,
                'carving points x training views': 3.873e-07,
                'splat pairs (init)': 2.569e-09},
            'step': {
                'const': 0.002527,
                'splats': 3.451e-07,
                'splats x views per step': 8.764e-07,
                'pixels per step': 1.562e-07,
                'splats x pixels per step': 3.339e-10},
            'evaluate': {
                'const': 0.01266,
                'evaluation splat-views': 5.633e-06}}}}
