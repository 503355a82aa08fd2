import torch


def _exclusive_sum_by_ray(x, ray_indices, n_rays):
    # samples are ray-contiguous: global cumsum minus the cumsum before each ray's first sample
    if ray_indices is None:  # batched (n_rays, n_samples)
        return torch.cumsum(x, -1) - x
    incl = torch.cumsum(x, 0)
    excl = incl - x
    counts = torch.bincount(ray_indices, minlength=n_rays)
    first = torch.cumsum(counts, 0) - counts  # index of each ray's first sample
    base = excl[first.clamp(max=max(x.shape[0] - 1, 0))] if x.shape[0] else excl.new_zeros(n_rays)
    return excl - base[ray_indices]


def render_transmittance_from_density(
    t_starts, t_ends, sigmas, packed_info=None, ray_indices=None, n_rays=None, prefix_trans=None
):
    sigmas_dt = sigmas * (t_ends - t_starts)
    alphas = 1.0 - torch.exp(-sigmas_dt)
    trans = torch.exp(-_exclusive_sum_by_ray(sigmas_dt, ray_indices, n_rays))
    if prefix_trans is not None:
        trans = trans * prefix_trans
    return trans, alphas


def render_weight_from_density(
    t_starts, t_ends, sigmas, packed_info=None, ray_indices=None, n_rays=None, prefix_trans=None
):
    if ray_indices is not None and n_rays is None:
        n_rays = int(ray_indices.max()) + 1 if ray_indices.numel() else 0
    trans, alphas = render_transmittance_from_density(
        t_starts, t_ends, sigmas, packed_info, ray_indices, n_rays, prefix_trans
    )
    return trans * alphas, trans, alphas


def render_weight_from_alpha(alphas, packed_info=None, ray_indices=None, n_rays=None, prefix_trans=None):
    if ray_indices is not None and n_rays is None:
        n_rays = int(ray_indices.max()) + 1 if ray_indices.numel() else 0
    log_1m = torch.log((1.0 - alphas).clamp(min=1e-10))
    trans = torch.exp(_exclusive_sum_by_ray(log_1m, ray_indices, n_rays))
    if prefix_trans is not None:
        trans = trans * prefix_trans
    return trans * alphas, trans


def accumulate_along_rays(weights, values=None, ray_indices=None, n_rays=None):
    src = weights[..., None] if values is None else weights[..., None] * values
    if ray_indices is None:
        return src.sum(dim=-2)
    if n_rays is None:
        n_rays = int(ray_indices.max()) + 1
    out = torch.zeros(n_rays, src.shape[-1], device=src.device, dtype=src.dtype)
    return out.index_add(0, ray_indices, src)
