"""A mixture of feature-space Gaussians: how a distribution trained with several components samples.

A reference set with several modes (red squares and blue circles) is learned as C Gaussians, each
fitted on its own K prompts, with weights pi_c (the share of the reference images each explains).
A sample first picks a component by weight, from its own stream of the seed (``derived_seed(seed,
"component")``), then draws from that component exactly as from a single Gaussian: mu_c + gamma * w *
sigma_c with the same w(seed). So a one-component mixture samples exactly as its Gaussian does, and
the component a seed picks does not depend on the template: every view of a 3D asset comes from the
same component.

Mixing several files (eq. 7) mixes one component of each: a seed picks a component in every file,
and the chosen Gaussians are mixed with the files' weights. The result is again a mixture, over the
combinations, with weight the product of the picked components' weights.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence, Union

import torch

from dreamdist.core.gaussian import FeatureGaussian, MixRule, check_weights, mix, normalised_weights, standard_normal
from dreamdist.core.seeds import derived_seed
from dreamdist.utils.errors import MixError


def pick_component(weights: Sequence[float], seed: int) -> int:
    """The component seed ``seed`` draws, with probability its (normalised) weight; one CPU
    generator of the seed's "component" stream, so it is the same on every machine."""
    if len(weights) == 1:
        return 0
    generator = torch.Generator(device="cpu").manual_seed(derived_seed(seed, "component"))
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    total, cumulative = float(sum(weights)), 0.0
    for i, w in enumerate(weights):
        cumulative += float(w) / total
        if u < cumulative and w > 0:
            return i
    return max(i for i, w in enumerate(weights) if w > 0)  # u within rounding of 1


@dataclass(frozen=True)
class GaussianMixture:
    """C Gaussians of one shape and their weights (normalised to sum 1)."""

    parts: tuple[FeatureGaussian, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.parts or len(self.parts) != len(self.weights):
            raise MixError(
                f"a mixture needs one weight per component: {len(self.parts)} components, {len(self.weights)} weights"
            )
        shapes = {tuple(g.shape) for g in self.parts}
        if len(shapes) > 1:
            raise MixError(f"mixture components differ in shape: {sorted(shapes)}")
        object.__setattr__(self, "weights", tuple(normalised_weights(check_weights(list(self.weights)))))

    def __len__(self) -> int:
        return len(self.parts)

    @property
    def shape(self) -> torch.Size:
        return self.parts[0].shape

    def detach(self) -> "GaussianMixture":
        return GaussianMixture(tuple(g.detach() for g in self.parts), self.weights)

    def pick(self, seed: int) -> int:
        """The component seed ``seed`` samples from."""
        return pick_component(self.weights, seed)

    def for_seed(self, seed: int) -> FeatureGaussian:
        return self.parts[self.pick(seed)]

    def sample_seeds(self, seeds: Sequence[int], gamma: float = 1.0) -> torch.Tensor:
        """One sample per seed (len(seeds), L, d): seed s draws component ``pick(s)``, then
        mu + gamma * w(s) * sigma from it (w as ``FeatureGaussian.sample_seeds`` draws it)."""
        return torch.stack([self.for_seed(s).apply(standard_normal(self.shape, s), gamma) for s in seeds])


def mix_mixtures(
    mixtures: Sequence[GaussianMixture], weights: Sequence[float], rule: MixRule = "paper"
) -> GaussianMixture:
    """Eq. 7 across files whose distributions are mixtures: every combination of one component per
    file, mixed with the files' ``weights``, weighted by the product of its components' weights.
    Files of one component each give a one-component mixture: today's eq. 7."""
    if len(mixtures) != len(weights):
        raise MixError(f"{len(mixtures)} distributions but {len(weights)} weights")
    parts, part_weights = [], []
    for combo in itertools.product(*(range(len(m)) for m in mixtures)):
        chosen = [m.parts[c] for m, c in zip(mixtures, combo)]
        weight = 1.0
        for m, c in zip(mixtures, combo):
            weight *= m.weights[c]
        parts.append(chosen[0] if len(chosen) == 1 else mix(list(zip(chosen, weights)), rule))
        part_weights.append(weight)
    return GaussianMixture(tuple(parts), tuple(part_weights))


Sampleable = Union[FeatureGaussian, GaussianMixture]  # both sample per seed with ``sample_seeds``
