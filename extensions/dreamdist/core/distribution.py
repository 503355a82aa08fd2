"""Distribution files bound to a text encoder: the one sampling code path for 2D and 3D.

file(s) + template -> one Gaussian per file and component, fitted on the component's K prompts
re-encoded in that template (or, when none is asked, in the file's own training template) -> each
sigma scaled by the file's std scale -> mixed across files (eq. 7 or the reference rule; with
mixtures, one component of each file: ``dreamdist.mixture``) -> a seed picks a component by weight
(always the one of one-component files) -> samples mu* + gamma * w * sigma*.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from dreamdist.core.distfile import DistributionFile, file_sha256, load_distribution
from dreamdist.core.encoder import SoftPromptEncoder
from dreamdist.core.gaussian import (
    FeatureGaussian,
    MixRule,
    check_mix_rule,
    check_std_scales,
    check_weights,
    standard_normal,
)
from dreamdist.core.mixture import GaussianMixture, mix_mixtures
from dreamdist.core.templates import Template
from dreamdist.utils.errors import MixError


class PromptDistribution:
    """One or more learned prompt sets, mixed with ``weights`` under ``mix_rule``.

    ``std_scale``: per-file scales of sigma applied before the mix (the authors' generate.py
    ``--std_scale``): one number for every file, or one per file; default 1.
    """

    def __init__(
        self,
        files: Sequence[DistributionFile],
        encoder: SoftPromptEncoder,
        weights: Sequence[float] | None = None,
        mix_rule: MixRule = "paper",
        encoder_name: str = "the given text encoder",
        std_scale: float | Sequence[float] | None = None,
    ) -> None:
        if not files:
            raise MixError("no distribution file given")
        labels = [str(f.path) if f.path else f"file {i + 1}" for i, f in enumerate(files)]
        self.weights = check_weights(weights, labels, "weights")  # as given: SampleSpec records them so
        self.mix_rule = check_mix_rule(mix_rule)
        self.std_scales = check_std_scales(std_scale, labels, "std_scale")  # one per file
        for f in files:
            f.check_encoder(encoder.text_encoder, encoder_name)
        self.files = list(files)
        self.encoder = encoder
        self._fits: dict[tuple[int, str], list[FeatureGaussian]] = {}  # (file, template) -> unscaled fits
        self._cache: dict[str | None, GaussianMixture] = {}

    @classmethod
    def from_files(
        cls,
        paths: Sequence[str | os.PathLike],
        encoder: SoftPromptEncoder,
        weights: Sequence[float] | None = None,
        mix_rule: MixRule = "paper",
        encoder_name: str = "the given text encoder",
        std_scale: float | Sequence[float] | None = None,
    ) -> "PromptDistribution":
        return cls([load_distribution(p) for p in paths], encoder, weights, mix_rule, encoder_name, std_scale)

    @property
    def training_template(self) -> str:
        """The first file's training template (see ``templates`` for every file's)."""
        return self.files[0].template

    def templates(self, template: str | Template | None = None) -> list[str]:
        """The template each file is encoded in: ``template`` for all, or each file's own training
        template when ``template`` is None."""
        return [str(template) if template is not None else f.template for f in self.files]

    def shared_template(self, template: str | Template | None = None) -> str | None:
        """The one template every file is encoded in, or None when the files' own templates differ."""
        texts = set(self.templates(template))
        return texts.pop() if len(texts) == 1 else None

    @property
    def file_hashes(self) -> list[str]:
        return [file_sha256(f.path) if f.path else "" for f in self.files]

    @property
    def paths(self) -> list[Path | None]:
        return [f.path for f in self.files]

    @torch.no_grad()
    def file_mixtures(self, template: str | Template | None = None) -> list[GaussianMixture]:
        """Per file, its components' Gaussians with sigma scaled by the file's std scale: each
        component's K prompts re-encoded in ``template`` (default: the file's own training template),
        fitted once."""
        mixtures = []
        for i, (f, text, scale) in enumerate(zip(self.files, self.templates(template), self.std_scales)):
            if (i, text) not in self._fits:
                ctx = f.ctx.to(self.encoder.device, torch.float32)
                features = self.encoder.encode_soft(ctx, Template.parse(text)).features.float()
                self._fits[(i, text)] = [FeatureGaussian.fit(part) for part in features.split(f.num_prompts)]
            parts = [g.scaled(scale) if scale != 1.0 else g for g in self._fits[(i, text)]]
            mixtures.append(GaussianMixture(tuple(parts), tuple(c.weight for c in f.components)))
        return mixtures

    def mixture(self, template: str | Template | None = None) -> GaussianMixture:
        """The distribution for ``template`` (default: each file in its own training template), as
        a mixture (one component unless a file was trained with several)."""
        key = str(template) if template is not None else None
        if key not in self._cache:
            self._cache[key] = mix_mixtures(self.file_mixtures(template), self.weights, self.mix_rule)
        return self._cache[key]

    def gaussian(self, template: str | Template | None = None) -> FeatureGaussian:
        """The single mixed Gaussian, for what needs one (its mu and sigma); a mixture of several
        components is refused: use ``mixture``."""
        mixture = self.mixture(template)
        if len(mixture) > 1:
            raise MixError(
                f"the distribution has {len(mixture)} components (trained with --components); "
                "it samples as a mixture, not as one Gaussian"
            )
        return mixture.parts[0]

    def sample(self, seeds: Sequence[int], gamma: float = 1.0, template: str | None = None) -> torch.Tensor:
        """One prompt embedding per seed (n, L, d), float32 on the encoder's device."""
        return self.mixture(template).sample_seeds(seeds, gamma)

    def sample_views(self, templates: Sequence[str], seed: int, gamma: float = 1.0) -> torch.Tensor:
        """One instance seen from several views: one component (picked by the seed, the same for
        every template) and a single draw w shared by every template, so direction d gets
        mu_d + gamma * w * sigma_d of that component (len(templates), L, d)."""
        gaussians = [self.mixture(t).for_seed(seed) for t in templates]
        w = standard_normal(gaussians[0].shape, seed)
        return torch.stack([g.apply(w, gamma) for g in gaussians])
