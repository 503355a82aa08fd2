"""A Gaussian in CLIP text-feature space: per position and channel mean and std over K prompts."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from dreamdist.utils.errors import MixError

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

    @classmethod
    def stacked(cls, parts: Sequence["FeatureGaussian"]) -> "FeatureGaussian":
        """Several Gaussians of one shape (L, d) as one of shape (C, L, d), for ``select``."""
        return cls(torch.stack([g.mu for g in parts]), torch.stack([g.sigma for g in parts]))

    def select(self, index: torch.Tensor) -> "FeatureGaussian":
        """Of a stack (C, L, d): entry ``index[b]`` for each b, shaped (B, 1, L, d) so that ``apply``
        on draws (B, S, L, d) gives each b its S samples of its own Gaussian (a mixture component)."""
        return FeatureGaussian(self.mu[index, None], self.sigma[index, None])

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


def check_mix_rule(rule: str, option: str = "mix rule") -> str:
    """Refuse an unknown eq. 7 sigma rule, naming ``option`` as the caller spells it (e.g. --mix-rule)."""
    if rule not in MIX_RULES:
        raise MixError(f"unknown {option} {rule!r}; choose from {', '.join(MIX_RULES)}")
    return rule


def check_weights(
    weights: Sequence[float] | None, labels: Sequence[str] | None = None, option: str = "mixing weights"
) -> list[float]:
    """The weights alpha of eq. 7, checked once for every caller (command line, files, Gaussians).

    One per label when ``labels`` (the mixed files) are given; ``None`` means equal weights. Each must
    be finite and >= 0 and at least one positive. Returned as floats, not normalised: callers that
    record weights (manifests, saved conditionings) record them as given.
    """
    if weights is None:
        if not labels:
            raise MixError(f"no {option} and nothing to weigh")
        return [1.0 / len(labels)] * len(labels)
    if labels is not None and len(weights) != len(labels):
        raise MixError(f"{len(labels)} distribution file(s) but {len(weights)} {option}; give one weight per file")
    for i, w in enumerate(weights):
        if not math.isfinite(w) or w < 0:
            where = f" for {labels[i]}" if labels is not None else ""
            raise MixError(
                f"{option}: weight {w:g}{where} is negative or not finite; weights must be finite and non-negative"
            )
    if sum(weights) <= 0:
        raise MixError(f"{option} {[float(w) for w in weights]} sum to 0; at least one must be positive")
    return [float(w) for w in weights]


def check_std_scales(
    scales: float | Sequence[float] | None, labels: Sequence[str], option: str = "std_scale"
) -> list[float]:
    """Per-distribution std scales (the authors' generate.py ``--std_scale``), one per mixed file:
    file i's sigma_i becomes s_i * sigma_i before the mix (eq. 7 or the reference rule).

    ``None`` means 1 for every file; one value (a number or a one-element list) is used for every file;
    otherwise one per label. A count that is neither 1 nor ``len(labels)`` is refused, naming
    ``option``; so is a value that is negative or not finite.
    """
    if scales is None:
        return [1.0] * len(labels)
    values = [scales] if isinstance(scales, (int, float)) else list(scales)
    if len(values) == 1:
        values = values * len(labels)
    elif len(values) != len(labels):
        raise MixError(
            f"{len(labels)} distribution file(s) but {len(values)} {option} values; give one per file "
            "(in the files' order) or one for all"
        )
    for i, s in enumerate(values):
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
            raise MixError(f"{option}: {s!r} for {labels[i]} must be a finite number >= 0 (0 keeps only its mean)")
    return [float(s) for s in values]


def normalised_weights(weights: Sequence[float]) -> list[float]:
    """``weights`` scaled to sum 1 (left as they are when they already do, so 1/3 stays 1/3)."""
    total = float(sum(weights))
    if math.isclose(total, 1.0, rel_tol=1e-6):
        return [float(w) for w in weights]
    return [float(w) / total for w in weights]


def mix(components: Sequence[tuple[FeatureGaussian, float]], rule: MixRule = "paper") -> FeatureGaussian:
    """Mix Gaussians with weights alpha (paper eq. 7).

    ``rule="paper"``: mu* = sum a_i mu_i, sigma* = sum sqrt(a_i) sigma_i.
    ``rule="reference"`` (the authors' generate.py): sigma* = sqrt(sum (a_i sigma_i)^2).
    Weights must be >= 0; weights that do not sum to 1 are normalised with a warning.

    Per-distribution std scales s_i are applied to the components beforehand (``g.scaled(s_i)``,
    ``PromptDistribution`` does it from ``std_scale``). That is how the authors' generate.py mixes:
    it takes ``--weights_path``, ``--distribution_weight`` and ``--std_scale`` with exactly one
    value per file each (asserted), fits each file's mu_i, sigma_i with the same prefix/suffix,
    asserts the weights sum to 1, then mu* = sum a_i mu_i and
    sigma* = sqrt(sum (sigma_i * s_i * a_i)^2), and samples mu* + w * sigma* with no further scale.
    Here a sample is mu* + gamma * w * sigma*: gamma after the mix, s_i before it.
    """
    check_mix_rule(rule)
    if not components:
        raise MixError("nothing to mix: give at least one distribution")
    shapes = {tuple(g.shape) for g, _ in components}
    if len(shapes) > 1:
        raise MixError(f"cannot mix Gaussians of different shapes: {sorted(shapes)}")
    given = check_weights([a for _, a in components])
    weights = normalised_weights(given)
    if weights != given:
        warnings.warn(f"mixing weights {given} sum to {sum(given):g}, normalising them to 1", stacklevel=2)
    gaussians = [g for g, _ in components]
    mu = sum(a * g.mu for g, a in zip(gaussians, weights))
    if rule == "paper":
        sigma = sum(math.sqrt(a) * g.sigma for g, a in zip(gaussians, weights))
    else:
        sigma = torch.sqrt(sum((a * g.sigma) ** 2 for g, a in zip(gaussians, weights)))
    return FeatureGaussian(mu, sigma)
