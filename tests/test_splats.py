"""Point splats (recon.splatting, recon.methods.splats): the fit on a small cow, density control on a
hand-made case, the 3DGS .ply round trip, and the renderer's conventions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from recon import splatting
from recon.assets import load_builtin
from recon.methods.splats import MAX_POINTS, Splats, SplatsConfig
from recon.params import knobs, validate

# 12 training views at 48 px and 600 splats: a one-off target render of a few seconds, then about a
# second for the whole fit on a 2-core CPU.
SMALL = dict(num_views=12, image_size=48, views_per_step=4, num_splats=600, max_splats=1500, iterations=60,
             refine_start=20, refine_every=20, refine_stop=40, seed=0)


@pytest.fixture(scope="module")
def cow():
    return load_builtin("cow")


def make(cow, **over) -> Splats:
    cfg, messages = validate(SplatsConfig, {**SMALL, **over})
    assert not messages
    return Splats(cow, cfg, torch.device("cpu"))


def test_fit_improves_heldout_quality(cow):
    m = make(cow)
    before = m.evaluate()
    losses = [float(m.step()["total"]) for _ in range(m.cfg.iterations)]
    after = m.evaluate()
    # Measured at this size (seeds 0-2, 2026-11-30): the carved start (the visual hull of 12 silhouettes,
    # coloured from the targets) scores 20.0-20.2 dB, IoU 0.83-0.84 on the 128-px held-out views; 60 steps
    # with two refinements (600 -> ~800 splats) reach 22.0-22.3 dB, IoU 0.88-0.90, and the loss falls from
    # ~0.077 to ~0.035. The bounds keep about half of each gain as margin for seeds and platforms, and still
    # fail for splats that do not fit (a frozen or diverging fit stays at the start's values or falls below).
    assert np.mean(losses[-5:]) < 0.65 * losses[0], losses
    assert after["psnr"] > before["psnr"] + 1.0 and after["psnr"] > 21.2, (before, after)
    assert after["iou"] > before["iou"] + 0.025 and after["iou"] > 0.86, (before, after)
    assert m.cfg.num_splats < len(m.splats) <= m.cfg.max_splats  # density control grew the cloud, within the cap


def test_snapshot_turntable_and_export(cow, tmp_path):
    m = make(cow, iterations=3)
    terms = m.step()
    assert set(terms) == {"color", "silhouette", "total"} and all(torch.isfinite(v) for v in terms.values())
    snap = m.snapshot()
    assert set(snap.images) == {"target", "render", "target_silhouette", "silhouette"}
    for im in snap.images.values():
        assert im.shape == (48, 48, 3) and im.dtype == np.uint8
    pts = snap.points
    assert pts.xyz.shape == (len(m.splats), 3) and pts.colors.shape == pts.xyz.shape
    assert pts.sizes.shape == (len(pts.xyz),) and (pts.sizes > 0).all()  # world radii for the 3D view
    assert len(pts.xyz) <= MAX_POINTS
    cams = m.views.cameras("cpu", idx=[0, 3, 5])
    assert torch.equal(m.render(cams, 24, chunk=1), m.render(cams, 24, chunk=3))  # chunks change nothing
    frames = m.turntable(frames=3, size=16)
    assert len(frames) == 3 and all(f.shape == (16, 16, 3) and f.dtype == np.uint8 for f in frames)
    with pytest.raises(NotImplementedError):
        m.density_grid(8)
    path = m.write_ply(tmp_path / "splats.ply")
    pos, rgb, op, rad = splatting.read_splat_ply(path)
    a = m.splat_arrays()
    np.testing.assert_allclose(pos, a["positions"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rad, a["radii"], rtol=1e-5)


def test_live_learning_rates_reach_their_groups(cow):
    m = make(cow, iterations=2)
    assert [g["name"] for g in m.optimizer.param_groups] == list(splatting.KINDS)
    m.apply_live({"lr_color": 0.123, "lr_opacity": 0.0456, "color_weight": 2.0})
    lrs = {g["name"]: g["lr"] for g in m.optimizer.param_groups}
    assert lrs["colors"] == pytest.approx(0.123) and lrs["opacities"] == pytest.approx(0.0456)
    assert m.cfg.color_weight == 2.0
    live = {k.name for k in knobs(SplatsConfig) if k.live}
    assert live == {"color_weight", "silhouette_weight", "lr_position", "lr_color", "lr_radius", "lr_opacity"}


def test_presets_name_real_fields_within_bounds():
    by_name = {k.name: k for k in knobs(SplatsConfig)}
    assert {"Quick", "Full"} <= set(Splats.presets) and len(Splats.presets) >= 3
    for preset in Splats.presets.values():
        for name, value in preset.items():
            assert by_name[name].clamp(value) == (value, None), (name, value)
    assert Splats.device_presets == {"cpu": "Quick", "cuda": "Full"}
    failure = [p for p in Splats.presets if p not in ("Quick", "Full")][0]
    cfg = dataclasses.replace(SplatsConfig(), **Splats.presets[failure])
    assert cfg.refine_every == 0 or cfg.refine_stop < cfg.refine_start  # no density control


# --- density control on a hand-made case ----------------------------------------------------------


def three_splats() -> splatting.SplatParams:
    """A: small, high gradient (clone). B: large, high gradient (split). C: nearly transparent (prune)."""
    return splatting.SplatParams.from_values(
        positions=torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]]),
        rgb=torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) * 0.98 + 0.01,
        radii=torch.tensor([0.01, 0.1, 0.05]), opacity=torch.tensor([0.9, 0.9, 0.001]))


def feed_gradients(ctl: splatting.DensityController, splats: splatting.SplatParams, opt, grad_norms) -> None:
    """Two optimiser steps with position gradients of the given norms (along x); others get small ones."""
    for _ in range(2):
        opt.zero_grad()
        for kind, t in splats.tensors().items():
            t.grad = torch.full_like(t, 1e-3)
        splats.positions.grad = torch.zeros_like(splats.positions)
        splats.positions.grad[:, 0] = torch.tensor(grad_norms)
        ctl.after_backward(splats)
        opt.step()


def control(**over) -> splatting.DensityControl:
    return splatting.DensityControl(**{**dict(grow_grad=1e-3, grow_radius=0.03, split_shrink=1.6, prune_opacity=0.01,
                                              prune_radius=0.5, refine_start=0, refine_stop=100, refine_every=10,
                                              max_splats=10), **over})


def check_optimizer(splats: splatting.SplatParams, opt: torch.optim.Optimizer) -> None:
    n = len(splats)
    for group in opt.param_groups:
        (p,) = group["params"]
        assert p is getattr(splats, group["name"]) and p.shape[0] == n and p.requires_grad
        state = opt.state[p]
        assert state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape
    assert len(opt.state) == len(splatting.KINDS)  # no state left behind for the replaced tensors


def test_density_control_clones_splits_and_prunes():
    s = three_splats()
    opt = splatting.make_optimizer(s, {k: 0.01 for k in splatting.KINDS})
    ctl = splatting.DensityController(control(), s)
    feed_gradients(ctl, s, opt, [1e-2, 1e-2, 0.0])
    assert torch.allclose(ctl.state.mean_grad(), torch.tensor([1e-2, 1e-2, 0.0]))
    assert ctl.state.count.tolist() == [2.0, 2.0, 0.0]  # C had no position gradient: never seen
    kept_avg = opt.state[s.positions]["exp_avg"][0].clone()
    before, radii_before = s.positions.detach().clone(), s.radii().detach()  # (Adam has moved them a little)
    assert ctl.after_step(5, s, opt) == {}  # not a refinement step
    out = ctl.after_step(10, s, opt, torch.Generator().manual_seed(0))
    assert out == {"cloned": 1, "split": 1, "pruned": 1}
    assert len(s) == 4  # A and its clone, B's two children; C gone
    radii, pos = s.radii(), s.positions.detach()
    # A (kept, first) and its clone (appended) sit at A's place with A's radius ...
    assert torch.allclose(pos[0], before[0]) and torch.allclose(pos[1], before[0])
    assert torch.allclose(radii[:2], radii_before[[0, 0]])
    # ... B's children have radius 0.1 / 1.6, near B; no splat is left at C (opacity 0.001)
    assert torch.allclose(radii[2:], radii_before[[1, 1]] / 1.6)
    assert ((pos[2:] - before[1]).norm(dim=-1) < 0.5).all()
    assert (s.opacity() > 0.5).all()
    check_optimizer(s, opt)
    # Adam's moments follow the kept splat and start at zero for the new ones.
    assert torch.equal(opt.state[s.positions]["exp_avg"][0], kept_avg)
    assert (opt.state[s.positions]["exp_avg"][1:] == 0).all()
    assert ctl.state.grad_sum.shape == (4,) and (ctl.state.grad_sum == 0).all()  # statistics restart
    # The optimiser keeps working on the new tensors.
    feed_gradients(ctl, s, opt, [1e-4] * 4)
    check_optimizer(s, opt)


def test_density_control_respects_the_cap():
    s = three_splats()
    opt = splatting.make_optimizer(s, {k: 0.01 for k in splatting.KINDS})
    ctl = splatting.DensityController(control(max_splats=4), s)  # room for one more splat only
    feed_gradients(ctl, s, opt, [1e-2, 2e-2, 0.0])  # B's gradient is the larger: it alone grows
    out = ctl.after_step(10, s, opt, torch.Generator().manual_seed(0))
    assert out == {"cloned": 0, "split": 1, "pruned": 1} and len(s) == 3
    check_optimizer(s, opt)
    # At the cap nothing grows, however large the gradients.
    s = three_splats()
    opt = splatting.make_optimizer(s, {k: 0.01 for k in splatting.KINDS})
    ctl = splatting.DensityController(control(max_splats=3, prune_opacity=0.0), s)
    feed_gradients(ctl, s, opt, [1.0, 1.0, 1.0])
    assert ctl.after_step(10, s, opt) == {"cloned": 0, "split": 0, "pruned": 0} and len(s) == 3


def test_density_control_prunes_oversized_and_escaped_splats():
    s = splatting.SplatParams.from_values(torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.0, 0.0], [0.0, 2.0, 0.0]]),
                                          torch.full((3, 3), 0.5), torch.tensor([0.05, 0.8, 0.05]), 0.9)
    opt = splatting.make_optimizer(s, {k: 0.01 for k in splatting.KINDS})
    ctl = splatting.DensityController(control(), s)
    feed_gradients(ctl, s, opt, [0.0, 0.0, 0.0])  # Adam has state to prune; nothing grows
    out = ctl.after_step(10, s, opt)
    assert out["pruned"] == 2 and len(s) == 1  # radius 0.8 > 0.5, and y = 2 is outside the 3-unit cube
    check_optimizer(s, opt)


# --- the .ply layout --------------------------------------------------------------------------------


def test_ply_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    n = 257
    pos = (torch.randn(n, 3, generator=g) * 0.7).numpy().astype(np.float32)
    rgb = torch.rand(n, 3, generator=g).numpy().astype(np.float32)
    op = torch.rand(n, generator=g).clamp(0.01, 0.99).numpy().astype(np.float32)
    rad = torch.exp(torch.randn(n, generator=g) - 3).numpy().astype(np.float32)
    path = splatting.write_splat_ply(tmp_path / "s.ply", pos, rgb, op, rad)
    raw = path.read_bytes()
    header = raw[:raw.index(b"end_header\n") + len(b"end_header\n")].decode()
    assert header.startswith("ply\nformat binary_little_endian 1.0\n") and f"element vertex {n}\n" in header
    props = [line.split()[-1] for line in header.splitlines() if line.startswith("property float ")]
    assert props == list(splatting.PLY_PROPERTIES)
    assert len(raw) == len(header) + n * 17 * 4
    table = np.frombuffer(raw[len(header):], dtype="<f4").reshape(n, 17)
    np.testing.assert_allclose(table[:, 6:9], (rgb - 0.5) / splatting.SH_C0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(table[:, 9], np.log(op / (1 - op)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(table[:, 10:13], np.log(rad)[:, None].repeat(3, 1), rtol=1e-6)
    assert (table[:, 13] == 1).all() and (table[:, 14:] == 0).all() and (table[:, 3:6] == 0).all()
    back = splatting.read_splat_ply(path)
    for a, b in zip(back, (pos, rgb, op, rad)):
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


# --- the renderer -------------------------------------------------------------------------------------


def test_render_conventions(cow):
    """Opaque splats on the cow's surface cover its silhouette, in the targets' image orientation, on the
    background; rendering is repeatable (pulsar's wrapper used to rescale the cameras' fov in place)."""
    from recon.metrics import silhouette_iou
    from recon.targets import target_points

    m = make(cow, iterations=1)
    pts = torch.as_tensor(target_points(cow, 4000))
    s = splatting.SplatParams.from_values(pts, torch.full((len(pts), 3), 0.8), torch.full((len(pts),), 0.03), 0.99)
    cams = m.views.cameras("cpu", idx=[0, 3, 5])
    fov = cams.fov.clone()
    first = splatting.render(s, cams, 48, background=(0.0, 0.0, 1.0))
    again = splatting.render(s, cams, 48, background=(0.0, 0.0, 1.0))
    assert torch.equal(first, again) and torch.equal(cams.fov, fov)
    assert first.shape == (3, 48, 48, 4)
    assert silhouette_iou(first[..., 3], m.views.silhouettes[[0, 3, 5]]) > 0.85
    empty = first[..., 3] < 1e-3
    assert empty.any() and torch.allclose(first[..., :3][empty], torch.tensor([0.0, 0.0, 1.0]))
    # With gradients, every kind of parameter receives some.
    s = splatting.SplatParams.from_values(pts[:500], torch.full((500, 3), 0.5), torch.full((500,), 0.05), 0.5)
    splatting.render(s, cams, 48, gamma=0.1)[..., :3].sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in s.tensors().values())


def test_the_viewer_copy_frames_the_splats_and_leaves_the_download_as_fitted(tmp_path):
    rng = np.random.default_rng(0)
    pos = (rng.normal(size=(500, 3)) * 0.6 + [0.2, 0.5, -0.1]).astype(np.float32)
    rgb, op, rad = rng.uniform(size=(500, 3)), rng.uniform(0.1, 0.9, 500), rng.uniform(0.01, 0.05, 500)
    fitted = splatting.write_splat_ply(tmp_path / "s.ply", pos, rgb, op, rad)
    before = fitted.read_bytes()
    view = splatting.write_viewer_copy(fitted, tmp_path / "viewer" / "s.ply")
    assert fitted.read_bytes() == before
    vpos, vrgb, vop, vrad = splatting.read_splat_ply(view)
    centre = (pos.min(0) + pos.max(0)) / 2
    scale = np.abs(vpos[:, 0]).max() / np.abs(pos[:, 0] - centre[0]).max()
    assert np.percentile(np.linalg.norm(vpos, axis=1), 99) == pytest.approx(splatting.ply.VIEWER_HALF_HEIGHT, rel=1e-3)
    np.testing.assert_allclose(vpos, (pos - centre) * scale * [1, -1, -1], atol=1e-5)  # y down, half a turn
    np.testing.assert_allclose(vrad, rad * scale, rtol=1e-4)
    np.testing.assert_allclose(vrgb, rgb, atol=1e-5)
    np.testing.assert_allclose(vop, op, atol=1e-5)
