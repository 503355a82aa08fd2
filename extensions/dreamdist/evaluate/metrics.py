"""The formulas behind ``dreamdist evaluate``, on feature matrices (rows = images), in float64.

- ``frechet_distance``: the Frechet (2-Wasserstein) distance between two Gaussians,
  ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)). FID is this distance between Gaussians
  fitted (mean, unbiased covariance) to Inception-v3 pool features of the two image sets (Heusel et
  al. 2017). tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the
  symmetric PSD matrix S1^(1/2) S2 S1^(1/2), which has the same eigenvalues as S1 S2: no complex
  ``sqrtm`` round-off to discard and no scipy needed, and exact for the rank-deficient covariances
  that small reference sets give.
- ``mean_cosine``: CLIP-I / DINO (DreamBooth, Ruiz et al. 2023): the mean over every (generated,
  reference) pair of the cosine similarity of their embeddings.
- ``density_coverage``: Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative
  Models". With reference ("real") features X_1..X_N, generated ("fake") Y_1..Y_M and r_i the
  distance from X_i to its k-th nearest other reference point:
  density = 1/(kM) sum_j sum_i 1[||Y_j - X_i|| < r_i]  (can exceed 1),
  coverage = 1/N sum_i 1[min_j ||Y_j - X_i|| < r_i]  (in [0, 1]).
  Same definitions, strict inequalities and k-th-neighbour convention as the authors' ``prdc`` package.
- ``mean_pairwise_cosine_distance``: diversity within one set, the mean over its unordered pairs
  {i, j}, i != j, of the cosine distance 1 - cos(x_i, x_j): 0 for identical embeddings, up to 2
  (about 0.2-0.4 for CLIP embeddings of varied images of one subject).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_K = 5  # Naeem et al.'s recommended k, and the paper's


def _matrix(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty (n, d) feature matrix, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: features contain NaN or infinity")
    return a


@dataclass(frozen=True)
class GaussianStats:
    """Mean (d,) and unbiased covariance (d, d) of a feature set, float64."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int


def gaussian_stats(features) -> GaussianStats:
    """Fit a Gaussian to the rows of ``features``: mean and unbiased (n - 1) covariance, as
    pytorch-fid, torch-fidelity and clean-fid do. Needs at least 2 rows."""
    x = _matrix(features, "features")
    if x.shape[0] < 2:
        raise ValueError("a covariance needs at least 2 feature vectors")
    return GaussianStats(x.mean(axis=0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1]), x.shape[0])


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (tiny negative
    eigenvalues from round-off are clipped to 0)."""
    sym = (matrix + matrix.T) / 2
    w, v = np.linalg.eigh(sym)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1, sigma2) -> float:
    """tr((S1 S2)^(1/2)) for symmetric PSD S1, S2, in float64."""
    s1 = np.asarray(sigma1, dtype=np.float64)
    s2 = np.asarray(sigma2, dtype=np.float64)
    root = _sqrt_psd(s1)
    inner = root @ s2 @ root
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), float64, >= 0."""
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))
    return max(value, 0.0)  # round-off can leave -1e-12 for identical sets


def frechet_distance_of_features(features_a, features_b) -> float:
    """FID-style distance between two feature sets (each needs at least 2 rows)."""
    a, b = gaussian_stats(features_a), gaussian_stats(features_b)
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def mean_cosine(generated, references) -> float:
    """Mean over all (generated, reference) pairs of the cosine similarity of their feature vectors."""
    g = _matrix(generated, "generated features")
    r = _matrix(references, "reference features")
    if g.shape[1] != r.shape[1]:
        raise ValueError(f"feature sizes differ: {g.shape[1]} vs {r.shape[1]}")
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    r = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
    return float((g @ r.T).mean())


def mean_pairwise_cosine_distance(features) -> float:
    """Mean over the n (n - 1) / 2 unordered pairs of rows of 1 - (cosine similarity); needs 2 rows."""
    x = _matrix(features, "features")
    n = x.shape[0]
    if n < 2:
        raise ValueError("a pairwise distance needs at least 2 feature vectors")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    cos = x @ x.T
    upper = np.triu_indices(n, k=1)
    return float((1.0 - cos[upper]).mean())


def pairwise_distances(a, b) -> np.ndarray:
    """Euclidean distances (len(a), len(b)), float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(sq, 0.0, None))


def knn_radii(features, k: int = DEFAULT_K) -> np.ndarray:
    """Distance from each row to its k-th nearest *other* row."""
    x = _matrix(features, "reference features")
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"k-nearest-neighbour radii need more than k={k} points, got {x.shape[0]}")
    d = pairwise_distances(x, x)
    np.fill_diagonal(d, 0.0)  # each point is its own 0-th neighbour, exactly
    return np.partition(d, k, axis=1)[:, k]


def density_coverage(references, generated, k: int = DEFAULT_K) -> tuple[float, float]:
    """Naeem et al. 2020 density and coverage of ``generated`` with respect to ``references``
    (see the module doc). Needs more than ``k`` reference vectors."""
    real = _matrix(references, "reference features")
    fake = _matrix(generated, "generated features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: {real.shape[1]} vs {fake.shape[1]}")
    radii = knn_radii(real, k)
    inside = pairwise_distances(real, fake) < radii[:, None]  # (N real, M fake)
    density = float(inside.sum() / (k * fake.shape[0]))
    coverage = float(inside.any(axis=1).mean())
    return density, coverage
