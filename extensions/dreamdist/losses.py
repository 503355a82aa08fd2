"""The orthogonality loss (paper eq. 5) that keeps the K prompts apart."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

OrthoKind = Literal["abs", "squared"]


def ortho_loss(pooled: torch.Tensor, kind: OrthoKind = "abs") -> torch.Tensor:
    """Mean pairwise cosine similarity of the K prompts' pooled features, pairs i < j, / K(K-1).

    ``kind="abs"`` is the paper's |cos| (default); ``"squared"`` is the reference code's cos^2.
    With K = 1 there are no pairs and the loss is 0.
    """
    if kind not in ("abs", "squared"):
        raise ValueError(f"ortho kind must be 'abs' or 'squared', not {kind!r}")
    k = pooled.shape[0]
    if k < 2:
        return pooled.sum() * 0.0
    unit = F.normalize(pooled.float(), dim=-1)
    cos = unit @ unit.T
    i, j = torch.triu_indices(k, k, offset=1, device=pooled.device)
    pair = cos[i, j]
    values = pair.abs() if kind == "abs" else pair.square()
    return values.sum() / (k * (k - 1))
