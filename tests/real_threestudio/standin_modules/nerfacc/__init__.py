"""STAND-IN for nerfacc 0.5.x, pure torch (CPU). Only what threestudio's nerf-volume-renderer with
the occgrid estimator calls: OccGridEstimator.sampling (uniform marching inside the aabb, no grid
skipping), render_weight_from_density / render_weight_from_alpha, accumulate_along_rays.
Samples are ray-contiguous and sorted, as nerfacc returns them."""

import math

import torch

from .estimators.base import AbstractEstimator
from .volrend import (  # noqa: F401
    accumulate_along_rays,
    render_transmittance_from_density,
    render_weight_from_alpha,
    render_weight_from_density,
)


class OccGridEstimator(AbstractEstimator):
    def __init__(self, roi_aabb, resolution=128, levels=1, **kwargs):
        super().__init__()
        roi_aabb = torch.as_tensor(roi_aabb, dtype=torch.float32).view(-1)
        self.register_buffer("aabbs", roi_aabb[None].repeat(levels, 1))
        res = [resolution] * 3 if isinstance(resolution, int) else list(resolution)
        n = levels * res[0] * res[1] * res[2]
        self.register_buffer("occs", torch.ones(n))
        self.register_buffer("binaries", torch.ones(levels, *res, dtype=torch.bool))

    @torch.no_grad()
    def sampling(
        self,
        rays_o,
        rays_d,
        sigma_fn=None,
        alpha_fn=None,
        near_plane=0.0,
        far_plane=1e10,
        t_min=None,
        t_max=None,
        render_step_size=1e-3,
        early_stop_eps=1e-4,
        alpha_thre=0.0,
        stratified=False,
        cone_angle=0.0,
    ):
        aabb = self.aabbs[0].to(rays_o)
        inv_d = 1.0 / torch.where(rays_d.abs() < 1e-10, torch.full_like(rays_d, 1e-10), rays_d)
        t0 = (aabb[:3] - rays_o) * inv_d
        t1 = (aabb[3:] - rays_o) * inv_d
        tnear = torch.minimum(t0, t1).amax(-1).clamp(min=near_plane)
        tfar = torch.maximum(t0, t1).amin(-1).clamp(max=far_plane)
        if t_min is not None:
            tnear = torch.maximum(tnear, t_min)
        if t_max is not None:
            tfar = torch.minimum(tfar, t_max)
        hit = tfar > tnear
        span = (tfar - tnear).clamp(min=0)
        n_max = int(math.ceil(float(span.max()) / render_step_size)) if hit.any() else 0
        n_rays = rays_o.shape[0]
        if n_max == 0:
            e = torch.zeros(0, device=rays_o.device)
            return torch.zeros(0, dtype=torch.long, device=rays_o.device), e, e
        k = torch.arange(n_max, device=rays_o.device, dtype=rays_o.dtype)
        offset = torch.rand(n_rays, 1, device=rays_o.device, dtype=rays_o.dtype) if stratified else 0.0
        starts = tnear[:, None] + (k[None] + offset) * render_step_size
        ends = starts + render_step_size
        valid = hit[:, None] & (ends <= tfar[:, None])
        ray_indices = torch.arange(n_rays, device=rays_o.device)[:, None].expand(-1, n_max)[valid]
        return ray_indices, starts[valid], ends[valid]

    @torch.no_grad()
    def update_every_n_steps(self, step, occ_eval_fn, occ_thre=1e-2, ema_decay=0.95, warmup_steps=256, n=16):
        pass  # no grid pruning in the stand-in


class PropNetEstimator(AbstractEstimator):
    def __init__(self, *a, **k):
        raise RuntimeError("nerfacc stand-in: PropNetEstimator not provided")
