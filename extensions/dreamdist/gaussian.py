"""A Gaussian in CLIP text-feature space: per position and channel mean and std over K prompts."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from dreamdist.errors import MixError

MixRule = Literal["paper", "reference"]
MIX_RULES: tuple[str, ...] = ("paper", "reference")


def standard_normal(shape: Sequence[int], seed: int) -> torch.Tensor:
    """float32 N(0, I) from a dedicated CPU generator: the same seed gives the same tensor on any
    machine or device, whatever the global RNG state."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)


@dataclass(frozen=True)
class FeatureGaussian:
    """mu and sigma of shape (L, d). Samples are mu + gamma * w * sigma (reparameterised)."""

    mu: torch.Tensor
    sigma: torch.Tensor

    def __post_init__(self) -> None:
        if self.mu.shape != self.sigma.shape:
            raise ValueError(f"mu {tuple(self.mu.shape)} and sigma {tuple(self.sigma.shape)} differ")

    @classmethod
    def fit(cls, features: torch.Tensor) -> "FeatureGaussian":
        """Fit to K prompts' features (K, L, d). Unbiased std as the reference code; K = 1 gives
        sigma = 0 (a single prompt is a point, not a distribution)."""
        k = features.shape[0]
        sigma = features.std(dim=0, correction=1) if k > 1 else torch.zeros_like(features[0])
        return cls(features.mean(dim=0), sigma)

    @property
    def shape(self) -> torch.Size:
        return self.mu.shape

    def to(self, *args, **kwargs) -> "FeatureGaussian":
        return FeatureGaussian(self.mu.to(*args, **kwargs), self.sigma.to(*args, **kwargs))

    def detach(self) -> "FeatureGaussian":
        return FeatureGaussian(self.mu.detach(), self.sigma.detach())

    def scaled(self, gamma: float) -> "FeatureGaussian":
        """Diversity scaling: gamma = 0 is the mean prompt, gamma > 1 more diverse."""
        return FeatureGaussian(self.mu, self.sigma * gamma)

    def apply(self, w: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
        """mu + gamma * w * sigma for standard-normal draws ``w`` (..., L, d); differentiable."""
        w = w.to(device=self.mu.device, dtype=self.mu.dtype)
        return self.mu + (gamma * w) * self.sigma

    def sample(self, n: int = 1, seed: int = 0, gamma: float = 1.0) -> torch.Tensor:
        """``n`` samples (n, L, d) from one seeded CPU generator."""
        return self.apply(standard_normal((n, *self.shape), seed), gamma)

    def sample_seeds(self, seeds: Sequence[int], gamma: float = 1.0) -> torch.Tensor:
        """One sample per seed (len(seeds), L, d): sample ``i`` depends on ``seeds[i]`` only, so any
        single image of a batch can be regenerated alone."""
        w = torch.stack([standard_normal(self.shape, s) for s in seeds])
        return self.apply(w, gamma)


def mix(
    components: Sequence[tuple[FeatureGaussian, float]], rule: MixRule = "paper"
) -> FeatureGaussian:
    """Mix Gaussians with weights alpha (paper eq. 7).

    ``rule="paper"``: mu* = sum a_i mu_i, sigma* = sum sqrt(a_i) sigma_i.
    ``rule="reference"`` (the authors' generate.py): sigma* = sqrt(sum (a_i sigma_i)^2), with any
    per-distribution gamma applied beforehand via ``scaled``.
    Weights must be >= 0; weights that do not sum to 1 are normalised with a warning.
    """
    if rule not in MIX_RULES:
        raise MixError(f"unknown mix rule {rule!r}; choose from {', '.join(MIX_RULES)}")
    if not components:
        raise MixError("nothing to mix: give at least one distribution")
    shapes = {tuple(g.shape) for g, _ in components}
    if len(shapes) > 1:
        raise MixError(f"cannot mix Gaussians of different shapes: {sorted(shapes)}")
    weights = [float(a) for _, a in components]
    if any(a < 0 or not math.isfinite(a) for a in weights):
        raise MixError(f"mixing weights must be finite and non-negative, got {weights}")
    total = sum(weights)
    if total <= 0:
        raise MixError(f"mixing weights sum to {total}; at least one must be positive")
    if not math.isclose(total, 1.0, rel_tol=1e-6):
        warnings.warn(f"mixing weights {weights} sum to {total:g}, normalising them to 1", stacklevel=2)
        weights = [a / total for a in weights]
    gaussians = [g for g, _ in components]
    mu = sum(a * g.mu for g, a in zip(gaussians, weights))
    if rule == "paper":
        sigma = sum(math.sqrt(a) * g.sigma for g, a in zip(gaussians, weights))
    else:
        sigma = torch.sqrt(sum((a * g.sigma) ** 2 for g, a in zip(gaussians, weights)))
    return FeatureGaussian(mu, sigma)
