"""Which reference images each mixture component explains (``dreamdist train --components C``).

A Gaussian drawn independently of the image cannot tie a sample to one mode of a reference set
(red squares *and* blue circles: it learns prompts for neither). A mixture of C Gaussians, each
trained only on the images assigned to it, can. Assignments are hard and found by EM on the
training loss itself:

- start: k-means (k-means++ seeding, a few restarts) on the images' latents, average-pooled to 4 x 4
  so that what is drawn counts and where it is drawn does not;
- M step: training steps; each image's loss conditions the UNet on samples of its own component;
- E step (every ``assign_every`` steps): each image goes to the component under which it denoises
  best, its Min-SNR-weighted denoising loss averaged over ``ASSIGN_DRAWS`` draws of timestep, noise,
  latent and prompt sample, every component scored on the *same* draws (so the comparison is not
  drowned in the noise of the draws).

A component left without images takes the image it explains best relative to its current one
(from a component that keeps at least one): no component is ever empty, so none is wasted.
The weights pi_c are the shares of the images: a sample picks component c with probability pi_c.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from dreamdist.core.distfile import Component
from dreamdist.core.seeds import derived_seed

ASSIGN_DRAWS = 8  # draws per image per E step: N x C x 8 UNet forward passes, no backward
KMEANS_RESTARTS = 8
KMEANS_ITERATIONS = 50


def pooled_latents(latent_mean: torch.Tensor) -> torch.Tensor:
    """(N, c * 16): each image's latent mean, average-pooled to 4 x 4, as k-means features."""
    return F.adaptive_avg_pool2d(latent_mean.float(), 4).flatten(1).cpu()


def kmeans(features: torch.Tensor, c: int, generator: torch.Generator) -> torch.Tensor:
    """Hard k-means of ``features`` (N, D) into ``c`` clusters, the best of a few k-means++ starts
    (lowest within-cluster sum of squares); every cluster non-empty. Returns (N,) cluster indices."""
    best, best_cost = None, float("inf")
    for _ in range(KMEANS_RESTARTS):
        centres = _plus_plus(features, c, generator)
        for _ in range(KMEANS_ITERATIONS):
            d2 = torch.cdist(features, centres).square()
            assignment = keep_every_component(d2, d2.argmin(dim=1))
            moved = torch.stack([features[assignment == k].mean(dim=0) for k in range(c)])
            if torch.equal(moved, centres):
                break
            centres = moved
        cost = float(torch.cdist(features, centres).square().gather(1, assignment[:, None]).sum())
        if cost < best_cost:
            best, best_cost = assignment, cost
    return best


def _plus_plus(features: torch.Tensor, c: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each next centre drawn with probability proportional to its squared
    distance from the nearest centre so far."""
    n = features.shape[0]
    chosen = [int(torch.randint(0, n, (), generator=generator))]
    for _ in range(1, c):
        d2 = torch.cdist(features, features[chosen]).square().min(dim=1).values.double()
        if float(d2.sum()) <= 0:  # all points coincide with a centre: any other point will do
            d2 = torch.ones(n, dtype=torch.float64).index_fill(0, torch.tensor(chosen), 0.0)
        chosen.append(int(torch.multinomial(d2, 1, generator=generator)))
    return features[chosen].clone()


def keep_every_component(cost: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
    """``assignment`` (N,) with every one of the C = ``cost.shape[1]`` components holding at least
    one image: an empty component takes the image whose cost under it is lowest relative to its
    cost under its own component, among components that keep one. ``cost`` (N, C): lower is better."""
    assignment = assignment.clone()
    c = cost.shape[1]
    for k in range(c):
        counts = torch.bincount(assignment, minlength=c)
        if counts[k]:
            continue
        movable = counts[assignment] > 1
        regret = cost[:, k] - cost.gather(1, assignment[:, None]).squeeze(1)
        regret[~movable] = float("inf")
        assignment[int(regret.argmin())] = k
    return assignment


@dataclass(frozen=True)
class Assignment:
    """Which of ``count`` components each reference image belongs to: ``owners`` (N,), on the CPU."""

    owners: torch.Tensor
    count: int

    @classmethod
    def by_kmeans(cls, latent_mean: torch.Tensor, count: int, seed: int) -> "Assignment":
        """The start: k-means on each image's latent mean (N, c, h, w), from the run's seed."""
        generator = torch.Generator(device="cpu").manual_seed(derived_seed(seed, "components"))
        return cls(kmeans(pooled_latents(latent_mean), count, generator), count)

    def reassigned(self, costs: torch.Tensor) -> "Assignment":
        """The E step: each image to its lowest-cost component (``costs`` (N, C)), none left empty."""
        return Assignment(keep_every_component(costs, costs.argmin(dim=1)), self.count)

    def moved(self, before: "Assignment") -> int:
        return int((self.owners != before.owners).sum())

    def sizes(self) -> str:
        """Images per component, "6 / 6"."""
        return " / ".join(str(int(n)) for n in torch.bincount(self.owners, minlength=self.count))

    @property
    def weights(self) -> list[float]:
        """pi_c: the share of the reference images component c explains."""
        counts = torch.bincount(self.owners, minlength=self.count).double()
        return (counts / counts.sum()).tolist()

    def components(self, names: Sequence[str]) -> tuple[Component, ...]:
        """What the distribution file records: each component's weight and the images (``names``, in
        the owners' order) it explains."""
        owners = self.owners.tolist()
        return tuple(
            Component(w, tuple(n for n, a in zip(names, owners) if a == c)) for c, w in enumerate(self.weights)
        )
