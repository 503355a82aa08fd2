"""The learnable prompt set: K soft prompts of M token vectors, the only trained parameters."""

from __future__ import annotations

import torch
from torch import nn

from dreamdist.core.encoder import EncodedPrompts, SoftPromptEncoder
from dreamdist.core.gaussian import FeatureGaussian
from dreamdist.core.templates import Template


class PromptSet(nn.Module):
    """``ctx`` (K, M, d_tok), initialised N(0, 0.02) as in the paper and its reference code."""

    def __init__(self, num_prompts: int, num_tokens: int, token_dim: int, seed: int | None = None) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        init = torch.randn(num_prompts, num_tokens, token_dim, generator=generator) * 0.02
        self.ctx = nn.Parameter(init)

    @property
    def num_prompts(self) -> int:
        return self.ctx.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.ctx.shape[1]

    def encode(self, encoder: SoftPromptEncoder, template: Template) -> EncodedPrompts:
        return encoder.encode_soft(self.ctx, template)

    def gaussians(
        self, encoder: SoftPromptEncoder, template: Template, components: int
    ) -> tuple[list[FeatureGaussian], EncodedPrompts]:
        """The feature-space Gaussians for ``template``, one per mixture component, each fitted on
        its own consecutive block of the prompts (component c: prompts c*K .. c*K+K-1), in float32
        even when the encoder runs in half precision and differentiable in ctx; and the encodings
        they were fitted on (their pooled features feed the orthogonality loss)."""
        encoded = self.encode(encoder, template)
        features = encoded.features.float()
        k = self.num_prompts // components
        return [FeatureGaussian.fit(part) for part in features.split(k)], encoded
