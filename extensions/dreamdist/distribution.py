"""Distribution files bound to a text encoder: the one sampling code path for 2D and 3D.

file(s) + template -> Gaussian(s) fitted on the re-encoded K prompts -> mixed -> samples.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from dreamdist.distfile import DistributionFile, file_sha256, load_distribution
from dreamdist.encoder import SoftPromptEncoder
from dreamdist.errors import MixError
from dreamdist.gaussian import FeatureGaussian, MixRule, check_mix_rule, check_weights, mix, standard_normal
from dreamdist.templates import Template


class PromptDistribution:
    """One or more learned prompt sets, mixed with ``weights`` under ``mix_rule``."""

    def __init__(
        self,
        files: Sequence[DistributionFile],
        encoder: SoftPromptEncoder,
        weights: Sequence[float] | None = None,
        mix_rule: MixRule = "paper",
        encoder_name: str = "the given text encoder",
    ) -> None:
        if not files:
            raise MixError("no distribution file given")
        labels = [str(f.path) if f.path else f"file {i + 1}" for i, f in enumerate(files)]
        self.weights = check_weights(weights, labels, "weights")  # as given: SampleSpec records them so
        self.mix_rule = check_mix_rule(mix_rule)
        for f in files:
            f.check_encoder(encoder.text_encoder, encoder_name)
        self.files = list(files)
        self.encoder = encoder
        self._cache: dict[str, FeatureGaussian] = {}

    @classmethod
    def from_files(
        cls,
        paths: Sequence[str | os.PathLike],
        encoder: SoftPromptEncoder,
        weights: Sequence[float] | None = None,
        mix_rule: MixRule = "paper",
        encoder_name: str = "the given text encoder",
    ) -> "PromptDistribution":
        return cls([load_distribution(p) for p in paths], encoder, weights, mix_rule, encoder_name)

    @property
    def training_template(self) -> str:
        return self.files[0].template

    @property
    def file_hashes(self) -> list[str]:
        return [file_sha256(f.path) if f.path else "" for f in self.files]

    @property
    def paths(self) -> list[Path | None]:
        return [f.path for f in self.files]

    @torch.no_grad()
    def gaussian(self, template: str | Template | None = None) -> FeatureGaussian:
        """The mixed Gaussian for ``template`` (default: the training template), fitted once."""
        text = str(template) if template is not None else self.training_template
        if text not in self._cache:
            parsed = Template.parse(text)
            parts = []
            for f in self.files:
                ctx = f.ctx.to(self.encoder.device, torch.float32)
                parts.append(FeatureGaussian.fit(self.encoder.encode_soft(ctx, parsed).features.float()))
            self._cache[text] = mix(list(zip(parts, self.weights)), self.mix_rule)
        return self._cache[text]

    def sample(self, seeds: Sequence[int], gamma: float = 1.0, template: str | None = None) -> torch.Tensor:
        """One prompt embedding per seed (n, L, d), float32 on the encoder's device."""
        return self.gaussian(template).sample_seeds(seeds, gamma)

    def sample_views(self, templates: Sequence[str], seed: int, gamma: float = 1.0) -> torch.Tensor:
        """One instance seen from several views: a single draw w shared by every template, so
        direction d gets mu_d + gamma * w * sigma_d (len(templates), L, d)."""
        gaussians = [self.gaussian(t) for t in templates]
        w = standard_normal(gaussians[0].shape, seed)
        return torch.stack([g.apply(w, gamma) for g in gaussians])
