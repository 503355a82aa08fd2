"""The training losses' pieces: the orthogonality loss (paper eq. 5) that keeps the K prompts apart,
and the Min-SNR-gamma weights of the diffusion loss (Hang et al. 2023) the authors' train.py uses.

Orthogonality, on the K prompts' pooled features (unit vectors u_k, cos_ij = u_i . u_j):

- ``"abs"`` (the paper's eq. 5, default): sum over pairs i < j of |cos_ij|, divided by K(K-1);
- ``"authors-code"`` (the authors' prompt_learner.py): the cosine matrix with its diagonal set to 0,
  squared and summed over *both* triangles, divided by K(K-1): the mean of cos^2 over ordered pairs,
  twice the i < j sum. ``"squared"`` is accepted as another name for it.

Min-SNR-gamma, with SNR(t) = alphas_cumprod[t] / (1 - alphas_cumprod[t]): the loss of a sample at
timestep t is weighted so that its x0-space weight is min(SNR, gamma), i.e. in the space of the
model's target

- epsilon: min(SNR, gamma) / SNR;  v-prediction: min(SNR, gamma) / (SNR + 1);  sample (x0): min(SNR, gamma)

(``"min-snr"``, default). ``"authors-code"``: min(SNR, gamma) / SNR whatever the target, as the
authors' train.py computes it (it does not tell v-prediction, the paper's SD 2.1, from epsilon).
gamma = 0 turns the weighting off (all weights 1).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

OrthoKind = Literal["abs", "authors-code", "squared"]
ORTHO_KINDS = ("abs", "authors-code")
ORTHO_ALIASES = {"squared": "authors-code"}  # the name this option had before it matched the authors' value
SNR_KINDS = ("min-snr", "authors-code")


def ortho_kind_name(kind: str) -> str:
    """The canonical name of an orthogonality-loss kind (``"squared"`` -> ``"authors-code"``)."""
    return ORTHO_ALIASES.get(kind, kind)


def ortho_loss(pooled: torch.Tensor, kind: OrthoKind = "abs") -> torch.Tensor:
    """The orthogonality loss of the K prompts' pooled features (K, d); see the module doc.
    With K = 1 there are no pairs and the loss is 0 (the authors' code divides 0 by 0 there)."""
    name = ortho_kind_name(kind)
    if name not in ORTHO_KINDS:
        raise ValueError(f"ortho kind must be one of {', '.join(ORTHO_KINDS + tuple(ORTHO_ALIASES))}, not {kind!r}")
    k = pooled.shape[0]
    if k < 2:
        return pooled.sum() * 0.0
    unit = F.normalize(pooled.float(), dim=-1)
    cos = unit @ unit.T
    i, j = torch.triu_indices(k, k, offset=1, device=pooled.device)
    pair = cos[i, j]
    if name == "abs":
        return pair.abs().sum() / (k * (k - 1))
    return 2.0 * pair.square().sum() / (k * (k - 1))  # both triangles of a symmetric matrix


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """SNR(t) = alphas_cumprod[t] / (1 - alphas_cumprod[t]), float64 (inf where alphas_cumprod is 1)."""
    alpha = alphas_cumprod.to(torch.float64)[timesteps.to(alphas_cumprod.device)]
    return alpha / (1.0 - alpha)


def min_snr_weights(
    alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float, prediction_type: str, kind: str = "min-snr"
) -> torch.Tensor:
    """Per-timestep loss weights (float32, shape of ``timesteps``); see the module doc. A zero-SNR
    timestep (zero-terminal-SNR schedules) gets weight 1 for epsilon, 0 for v and sample (no 0/0)."""
    if kind not in SNR_KINDS:
        raise ValueError(f"snr kind must be one of {', '.join(SNR_KINDS)}, not {kind!r}")
    if gamma <= 0:
        return torch.ones(timesteps.shape, dtype=torch.float32)
    ratio = snr(alphas_cumprod, timesteps)
    clipped = ratio.clamp(max=gamma)
    if kind == "authors-code" or prediction_type == "epsilon":
        weights = (gamma / ratio).clamp(max=1.0)  # = min(SNR, gamma) / SNR, and 1 at SNR = 0
    elif prediction_type == "v_prediction":
        weights = clipped / (ratio + 1.0)
    elif prediction_type == "sample":
        weights = clipped
    else:
        raise ValueError(f"no Min-SNR weights for prediction_type {prediction_type!r}")
    return weights.to(torch.float32)
