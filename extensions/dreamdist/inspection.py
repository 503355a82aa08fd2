"""What a distribution has learned, in human terms: per-position spread and nearest words."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dreamdist.distfile import DistributionFile
from dreamdist.distribution import PromptDistribution
from dreamdist.encoder import SoftPromptEncoder
from dreamdist.templates import Template


def file_summary(dist: DistributionFile) -> dict[str, Any]:
    """The file's metadata, counts as numbers (the file stores every value as text: safetensors
    metadata is str -> str)."""
    meta = dist.metadata()
    return {
        **meta,
        "format_version": int(meta["format_version"]),
        "num_prompts": dist.num_prompts,
        "num_tokens": dist.num_tokens,
        "image_count": dist.image_count,
    }


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
    padding = sigma[layout.eos_position + 1 :]
    return {
        "positions": positions,
        "padding_sigma_mean": float(padding.mean()) if len(padding) else 0.0,
        "nearest_tokens": nearest,
    }
