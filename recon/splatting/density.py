"""Adaptive density control (after gsplat's default strategy): the thresholds and schedule
(:class:`DensityControl`), a run's gradient statistics and controller, clone/split/prune/cap, and the
surgery that keeps Adam's moments in step with the splats (:func:`make_optimizer` builds the
optimiser whose layout that surgery relies on: one group per kind of parameter)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .params import CUBE_EXTENT, KINDS, SplatParams

# --- optimiser -----------------------------------------------------------------------------------


def make_optimizer(splats: SplatParams, lrs: dict[str, float]) -> torch.optim.Adam:
    """Adam with one parameter group per kind of parameter (named as in :data:`KINDS`), each with its lr."""
    groups = [{"params": [getattr(splats, k)], "lr": lrs[k], "name": k} for k in KINDS]
    return torch.optim.Adam(groups, eps=1e-15)


def _edit(splats: SplatParams, optimizer: torch.optim.Optimizer | None, keep: torch.Tensor,
          new: dict[str, torch.Tensor] | None = None) -> None:
    """Keep the splats where `keep` (N,) and append `new` ones (values of every kind); Adam's moments
    follow the kept splats, and start at zero for the new ones."""
    for kind in KINDS:
        old = getattr(splats, kind)
        parts = [old.detach()[keep]] + ([new[kind].detach().to(old)] if new else [])
        param = torch.cat(parts).contiguous().requires_grad_(True)
        setattr(splats, kind, param)
        if optimizer is None:
            continue
        for group in optimizer.param_groups:
            if group["params"][0] is not old:
                continue
            group["params"][0] = param
            state = optimizer.state.pop(old, None)
            if state:
                n_new = param.shape[0] - int(keep.sum())
                for key, value in state.items():
                    if isinstance(value, torch.Tensor) and value.shape[:1] == old.shape[:1] and value.dim() > 0:
                        state[key] = torch.cat([value[keep], value.new_zeros((n_new, *value.shape[1:]))])
                optimizer.state[param] = state


# --- density control -----------------------------------------------------------------------------


@dataclass
class DensityControl:
    """Thresholds and schedule of adaptive density control (after gsplat's ``DefaultStrategy``).

    Every `refine_every` steps from `refine_start` to `refine_stop`: splats whose mean position-gradient
    norm (per step in which they were seen) exceeds `grow_grad` grow: those with radius up to
    `grow_radius` are cloned (a copy in place; the two then move apart), larger ones are split into
    two of radius / `split_shrink` placed at random within the original (normal, std = radius / 2). Then splats with opacity
    below `prune_opacity`, radius above `prune_radius`, or outside the cube, are removed. The count
    never exceeds `max_splats` (the largest gradients grow first). With `reset_every` > 0, every
    that many steps all opacities are capped at `reset_opacity` (3DGS's opacity reset).
    """

    grow_grad: float = 2e-4
    grow_radius: float = 0.03
    split_shrink: float = 1.6
    prune_opacity: float = 0.01
    prune_radius: float = 0.3
    refine_start: int = 50
    refine_stop: int = 10_000
    refine_every: int = 50
    reset_every: int = 0
    reset_opacity: float = 0.1
    max_splats: int = 20_000
    extent: float = CUBE_EXTENT


class DensityState:
    """Running statistics of one run: summed position-gradient norms and how often each splat was seen."""

    def __init__(self, n: int, device: torch.device | str = "cpu") -> None:
        self.grad_sum = torch.zeros(n, device=device)
        self.count = torch.zeros(n, device=device)

    def reset(self, n: int) -> None:
        self.grad_sum = self.grad_sum.new_zeros(n)
        self.count = self.count.new_zeros(n)

    def mean_grad(self) -> torch.Tensor:
        return self.grad_sum / self.count.clamp(min=1)


class DensityController:
    """Adaptive density control of one run: call :meth:`after_backward` after each backward pass and
    :meth:`after_step` after each optimiser step (with the number of steps taken so far)."""

    def __init__(self, control: DensityControl, splats: SplatParams) -> None:
        self.control = control
        self.state = DensityState(len(splats), splats.positions.device)

    @torch.no_grad()
    def after_backward(self, splats: SplatParams, grad_scale: float = 1.0) -> None:
        """Accumulate each splat's position-gradient norm (times `grad_scale`, e.g. the views per step,
        so that the threshold does not depend on how many views the loss averages over)."""
        grad = splats.positions.grad
        if grad is None:
            return
        norm = grad.norm(dim=-1) * grad_scale
        seen = norm > 0
        self.state.grad_sum += norm
        self.state.count += seen.float()

    def due(self, step: int) -> bool:
        c = self.control
        return c.refine_every > 0 and c.refine_start <= step <= c.refine_stop and step % c.refine_every == 0

    @torch.no_grad()
    def after_step(self, step: int, splats: SplatParams, optimizer: torch.optim.Optimizer | None,
                   generator: torch.Generator | None = None) -> dict[str, int]:
        """Grow, prune and cap when `step` is a refinement step; reset opacities when due.
        Returns how many splats were cloned, split and pruned (empty when nothing was due)."""
        c = self.control
        out: dict[str, int] = {}
        if self.due(step):
            out = refine(c, self.state, splats, optimizer, generator)
            self.state.reset(len(splats))
        if c.reset_every > 0 and step % c.reset_every == 0 and c.refine_start <= step <= c.refine_stop:
            reset_opacity(splats, optimizer, c.reset_opacity)
        return out


@torch.no_grad()
def refine(c: DensityControl, state: DensityState, splats: SplatParams, optimizer: torch.optim.Optimizer | None,
           generator: torch.Generator | None = None) -> dict[str, int]:
    """One refinement: clone/split high-gradient splats, prune transparent, huge or escaped ones, cap the count."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    n = len(splats)
    grads = state.mean_grad()
    radii = splats.radii()
    high = grads > c.grow_grad
    # Cap: each clone or split adds one splat; grow the largest gradients first.
    room = max(0, c.max_splats - n)
    if int(high.sum()) > room:
        order = torch.argsort(torch.where(high, grads, torch.full_like(grads, -1.0)), descending=True)
        high = torch.zeros_like(high)
        high[order[:room]] = True
    clone = high & (radii <= c.grow_radius)
    split = high & (radii > c.grow_radius)
    n_clone, n_split = int(clone.sum()), int(split.sum())
    if n_clone or n_split:
        t = splats.tensors()
        new = {k: torch.cat([v[clone], v[split], v[split]]) for k, v in t.items()}
        # Split children: radius / split_shrink, centres drawn from a normal of half the parent's radius (a
        # sphere's radius is its edge, where a Gaussian's scale is one standard deviation), so most lie inside.
        offsets = torch.randn(2 * n_split, 3, generator=gen).to(radii) * radii[split].repeat(2)[:, None] / 2
        new["positions"][n_clone:] += offsets
        new["log_radii"][n_clone:] -= math.log(c.split_shrink)
        _edit(splats, optimizer, ~split, new)  # the split parents are replaced by their children
    pos, radii, opacity = splats.positions, splats.radii(), splats.opacity()
    prune = (opacity < c.prune_opacity) | (radii > c.prune_radius) | (pos.abs() > c.extent / 2).any(-1)
    over = len(splats) - int(prune.sum()) - c.max_splats
    if over > 0:  # still too many (e.g. the cap was lowered): drop the most transparent of the rest
        score = torch.where(prune, torch.full_like(opacity, -1.0), opacity)
        prune[torch.argsort(score)[int(prune.sum()):int(prune.sum()) + over]] = True
    n_prune = int(prune.sum())
    if n_prune:
        if n_prune == len(splats):  # never prune the last splat: keep the most opaque one
            prune[torch.argmax(opacity)] = False
            n_prune -= 1
        _edit(splats, optimizer, ~prune)
    return {"cloned": n_clone, "split": n_split, "pruned": n_prune}


@torch.no_grad()
def reset_opacity(splats: SplatParams, optimizer: torch.optim.Optimizer | None, value: float) -> None:
    """Cap every opacity at `value` and zero Adam's moments of the opacities (3DGS's opacity reset)."""
    cap = math.log(value / (1 - value))
    splats.opacities.clamp_(max=cap)
    if optimizer is not None:
        for group in optimizer.param_groups:
            if group["params"][0] is splats.opacities:
                for v in optimizer.state.get(splats.opacities, {}).values():
                    if isinstance(v, torch.Tensor) and v.dim() > 0:
                        v.zero_()

