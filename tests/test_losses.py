"""The training losses against independent numpy transcriptions of their formulas: the paper's
eq. 5, the authors' prompt_learner.orthogonal_loss, and Min-SNR-gamma (Hang et al. 2023) as
defined for each prediction target and as the authors' train.py computes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamdist.train.losses import min_snr_weights, ortho_loss


def cosines(pooled: np.ndarray) -> np.ndarray:
    unit = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
    return unit @ unit.T


def paper_eq5(pooled: np.ndarray) -> float:
    """Paper eq. 5: sum over pairs i < j of |cos(E_i, E_j)|, divided by K(K-1)."""
    k = len(pooled)
    cos = cosines(pooled)
    return sum(abs(cos[i, j]) for i in range(k) for j in range(i + 1, k)) / (k * (k - 1))


def authors_code(pooled: np.ndarray) -> float:
    """The authors' orthogonal_loss: cosine matrix, diagonal set to 0, squared, summed over the whole
    matrix (both triangles), divided by K(K-1)."""
    k = len(pooled)
    cos = cosines(pooled)
    np.fill_diagonal(cos, 0.0)
    return float((cos**2).sum() / (k * (k - 1)))


@pytest.mark.parametrize("k", [2, 5, 32])
def test_ortho_loss_kinds_match_their_transcriptions(k):
    pooled = np.random.default_rng(k).normal(size=(k, 24))
    tensor = torch.from_numpy(pooled).float()
    assert ortho_loss(tensor).item() == pytest.approx(paper_eq5(pooled), rel=1e-5)
    assert ortho_loss(tensor, "abs").item() == pytest.approx(paper_eq5(pooled), rel=1e-5)
    assert ortho_loss(tensor, "authors-code").item() == pytest.approx(authors_code(pooled), rel=1e-5)
    assert ortho_loss(tensor, "squared").item() == ortho_loss(tensor, "authors-code").item()  # the old name


def test_ortho_loss_edge_cases():
    assert ortho_loss(torch.randn(1, 8)).item() == 0.0  # no pairs (the authors' code divides 0 by 0)
    same = torch.ones(4, 8)
    assert ortho_loss(same, "abs").item() == pytest.approx(0.5)  # 6 pairs of cos 1 / 12
    assert ortho_loss(same, "authors-code").item() == pytest.approx(1.0)  # 12 ordered pairs / 12
    with pytest.raises(ValueError, match="abs, authors-code, squared"):
        ortho_loss(same, "cubed")


def min_snr_numpy(alphas_cumprod: np.ndarray, timesteps: np.ndarray, gamma: float, target: str) -> np.ndarray:
    """Hang et al. 2023: the x0-space weight min(SNR, gamma), carried to the model's target:
    epsilon-loss = SNR * x0-loss, v-loss = (SNR + 1) * x0-loss."""
    a = alphas_cumprod[timesteps].astype(np.float64)
    snr = a / (1.0 - a)
    x0_weight = np.minimum(snr, gamma)
    return {"epsilon": x0_weight / snr, "v_prediction": x0_weight / (snr + 1.0), "sample": x0_weight}[target]


def authors_train_py(alphas_cumprod: np.ndarray, timesteps: np.ndarray, gamma: float) -> np.ndarray:
    """The authors' train.py: SNR = (sqrt(a) / sqrt(1 - a))^2 in float32, weight = min(SNR, gamma) / SNR
    for whatever the prediction type."""
    a = alphas_cumprod.astype(np.float32)
    snr = (np.sqrt(a)[timesteps] / np.sqrt(1.0 - a)[timesteps]) ** 2
    return np.minimum(snr, np.float32(gamma)) / snr


def sd_alphas_cumprod() -> np.ndarray:
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")  # SD 2.x's
    return scheduler.alphas_cumprod.numpy()


@pytest.mark.parametrize("target", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("gamma", [1.0, 5.0, 20.0])
def test_min_snr_weights_match_hang_et_al(target, gamma):
    alphas = sd_alphas_cumprod()
    timesteps = np.arange(0, 1000, 7)
    ours = min_snr_weights(torch.from_numpy(alphas), torch.from_numpy(timesteps), gamma, target)
    assert ours.dtype == torch.float32 and ours.shape == (len(timesteps),)
    np.testing.assert_allclose(ours.numpy(), min_snr_numpy(alphas, timesteps, gamma, target), rtol=1e-6)


@pytest.mark.parametrize("target", ["epsilon", "v_prediction"])
def test_authors_code_weights_match_their_train_py(target):
    alphas = sd_alphas_cumprod()
    timesteps = np.arange(1000)
    ours = min_snr_weights(torch.from_numpy(alphas), torch.from_numpy(timesteps), 5.0, target, "authors-code")
    np.testing.assert_allclose(ours.numpy(), authors_train_py(alphas, timesteps, 5.0), rtol=1e-5)
    if target == "epsilon":  # the two kinds agree on epsilon, differ on v (the paper's SD 2.1)
        assert torch.allclose(ours, min_snr_weights(torch.from_numpy(alphas), torch.arange(1000), 5.0, target))
    else:
        hang = min_snr_weights(torch.from_numpy(alphas), torch.arange(1000), 5.0, target)
        assert (ours >= hang).all() and (ours[-1] / hang[-1]) > 100  # noisy timesteps weigh far more


def test_min_snr_off_and_extremes():
    alphas = torch.tensor([0.999, 0.5, 0.0])  # the last: zero terminal SNR
    t = torch.arange(3)
    assert torch.equal(min_snr_weights(alphas, t, 0.0, "v_prediction"), torch.ones(3))
    eps = min_snr_weights(alphas, t, 5.0, "epsilon")
    v = min_snr_weights(alphas, t, 5.0, "v_prediction")
    assert torch.isfinite(eps).all() and torch.isfinite(v).all()
    assert eps[2] == 1.0 and v[2] == 0.0 and eps[1] == 1.0 and v[1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="min-snr, authors-code"):
        min_snr_weights(alphas, t, 5.0, "epsilon", "max-snr")
