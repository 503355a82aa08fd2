"""What a distribution has learned, in human terms: per-position spread and nearest words."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dreamdist.distfile import DistributionFile
from dreamdist.distribution import PromptDistribution
from dreamdist.encoder import SoftPromptEncoder
from dreamdist.templates import Template


@torch.no_grad()
def inspect_distribution(dist: DistributionFile, model: str, top: int = 3) -> dict[str, Any]:
    encoder = SoftPromptEncoder.from_pretrained(model)
    gaussian = PromptDistribution([dist], encoder, encoder_name=model).gaussian()
    layout = encoder.layout(Template.parse(dist.template), dist.num_tokens)
    tokens = encoder.tokenizer.convert_ids_to_tokens(layout.input_ids.tolist())
    slots = range(layout.start, layout.start + layout.num_tokens)
    sigma = gaussian.sigma.float().mean(dim=-1)
    positions = [
        {
            "position": i,
            "token": "<learned>" if i in slots else tokens[i],
            "sigma_mean": float(sigma[i]),
            "mu_norm": float(gaussian.mu[i].norm()),
        }
        for i in range(layout.eos_position + 1)
    ]
    table = F.normalize(encoder.token_embedding.weight.float(), dim=-1)
    means = F.normalize(dist.ctx.float().mean(dim=0), dim=-1)
    cos, idx = (means @ table.T).topk(min(top, table.shape[0]), dim=-1)
    nearest = [
        {"index": m, "tokens": list(zip(encoder.tokenizer.convert_ids_to_tokens(idx[m].tolist()), cos[m].tolist()))}
        for m in range(dist.num_tokens)
    ]
    return {
        "positions": positions,
        "padding_sigma_mean": float(sigma[layout.eos_position + 1 :].mean()) if layout.eos_position + 1 < len(sigma) else 0.0,
        "nearest_tokens": nearest,
    }
