"""What a distribution has learned, in human terms: per-position spread and nearest words."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dreamdist.core.distfile import DistributionFile
from dreamdist.core.distribution import PromptDistribution
from dreamdist.core.encoder import SoftPromptEncoder
from dreamdist.core.gaussian import FeatureGaussian
from dreamdist.core.templates import Template


def file_summary(dist: DistributionFile) -> dict[str, Any]:
    """The file's metadata, counts as numbers (the file stores every value as text: safetensors
    metadata is str -> str)."""
    meta = dist.metadata()
    if "components" in meta:  # the JSON text, given parsed
        meta["components"] = [{"component": i, **c.to_dict()} for i, c in enumerate(dist.components)]
    return {
        **meta,
        "format_version": int(meta["format_version"]),
        "num_prompts": dist.num_prompts,
        "num_components": dist.num_components,
        "num_tokens": dist.num_tokens,
        "image_count": dist.image_count,
    }


@torch.no_grad()
def inspect_distribution(dist: DistributionFile, model: str, top: int = 3) -> dict[str, Any]:
    """Per position spread and nearest words; for a mixture, per component, with its weight and the
    reference images it explains (under ``components``)."""
    encoder = SoftPromptEncoder.from_pretrained(model)
    mixture = PromptDistribution([dist], encoder, encoder_name=model).mixture()
    layout = encoder.layout(Template.parse(dist.template), dist.num_tokens)
    reports = [_component_report(encoder, layout, g, ctx, top) for g, ctx in zip(mixture.parts, dist.component_ctx())]
    if len(reports) == 1:
        return reports[0]
    return {
        "components": [
            {"component": i, "weight": c.weight, "images": list(c.images), **r}
            for i, (c, r) in enumerate(zip(dist.components, reports))
        ]
    }


def _component_report(
    encoder: SoftPromptEncoder, layout: Any, gaussian: FeatureGaussian, ctx: torch.Tensor, top: int
) -> dict[str, Any]:
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
    means = F.normalize(ctx.float().mean(dim=0), dim=-1)
    cos, idx = (means @ table.T).topk(min(top, table.shape[0]), dim=-1)
    nearest = [
        {"index": m, "tokens": list(zip(encoder.tokenizer.convert_ids_to_tokens(idx[m].tolist()), cos[m].tolist()))}
        for m in range(ctx.shape[1])
    ]
    padding = sigma[layout.eos_position + 1 :]
    return {
        "positions": positions,
        "padding_sigma_mean": float(padding.mean()) if len(padding) else 0.0,
        "nearest_tokens": nearest,
    }
