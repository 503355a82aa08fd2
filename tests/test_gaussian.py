"""The feature-space Gaussian: sampling moments, seeds, scaling and mixing (paper eq. 7)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dreamdist.core.gaussian import (
    FeatureGaussian,
    check_mix_rule,
    check_std_scales,
    check_weights,
    mix,
    normalised_weights,
)
from dreamdist.train.losses import ortho_loss
from dreamdist.utils.errors import MixError


def _gauss(seed, shape=(5, 6)):
    g = torch.Generator().manual_seed(seed)
    return FeatureGaussian(torch.randn(shape, generator=g), torch.rand(shape, generator=g) + 0.1)


def test_fit_is_mean_and_unbiased_std():
    feats = torch.randn(7, 5, 6)
    g = FeatureGaussian.fit(feats)
    np.testing.assert_allclose(g.mu.numpy(), feats.numpy().mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g.sigma.numpy(), feats.numpy().std(0, ddof=1), rtol=1e-5, atol=1e-6)
    single = FeatureGaussian.fit(feats[:1])
    assert torch.equal(single.sigma, torch.zeros(5, 6))


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_sample_moments_match_mu_and_gamma_sigma(gamma):
    g = _gauss(0)
    s = g.sample(20000, seed=3, gamma=gamma)
    # standard error of the mean is sigma*gamma/sqrt(n); allow 5 of them
    tol = 5 * (g.sigma * gamma) / math.sqrt(20000)
    assert ((s.mean(0) - g.mu).abs() < tol).all()
    assert ((s.std(0) / (gamma * g.sigma) - 1).abs() < 0.05).all()


def test_gamma_zero_is_mu_exactly_and_seeds_reproduce():
    g = _gauss(1)
    assert torch.equal(g.sample(4, seed=9, gamma=0.0), g.mu.expand(4, -1, -1))
    assert torch.equal(g.sample(3, seed=5), g.sample(3, seed=5))
    assert not torch.equal(g.sample(3, seed=5), g.sample(3, seed=6))
    torch.manual_seed(123)  # global RNG state must not matter
    a = g.sample(2, seed=5)
    torch.manual_seed(456)
    assert torch.equal(a, g.sample(2, seed=5))


def test_sample_seeds_are_independent_per_index():
    g = _gauss(2)
    batch = g.sample_seeds([10, 11, 12, 13])
    assert torch.equal(batch[2], g.sample_seeds([12])[0])
    assert torch.equal(g.scaled(2.0).sample_seeds([4]), g.sample_seeds([4], gamma=2.0))


def test_mix_paper_rule_matches_eq7_numpy():
    a, b, c = _gauss(3), _gauss(4), _gauss(5)
    w = [0.5, 0.3, 0.2]
    m = mix([(a, w[0]), (b, w[1]), (c, w[2])])
    mus = np.stack([x.mu.numpy() for x in (a, b, c)])
    sig = np.stack([x.sigma.numpy() for x in (a, b, c)])
    wa = np.array(w)[:, None, None]
    np.testing.assert_allclose(m.mu.numpy(), (wa * mus).sum(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(m.sigma.numpy(), (np.sqrt(wa) * sig).sum(0), rtol=1e-6)


def test_mix_reference_rule_matches_its_formula():
    a, b = _gauss(6), _gauss(7)
    m = mix([(a.scaled(0.5), 0.25), (b.scaled(2.0), 0.75)], rule="reference")
    expect = np.sqrt((0.25 * 0.5 * a.sigma.numpy()) ** 2 + (0.75 * 2.0 * b.sigma.numpy()) ** 2)
    np.testing.assert_allclose(m.sigma.numpy(), expect, rtol=1e-6)


@pytest.mark.parametrize("rule", ["paper", "reference"])
def test_mix_single_weight_one_is_identity(rule):
    a = _gauss(8)
    m = mix([(a, 1.0)], rule=rule)
    assert torch.equal(m.mu, a.mu) and torch.allclose(m.sigma, a.sigma, rtol=0, atol=0)
    m2 = mix([(a, 1.0), (_gauss(9), 0.0)], rule=rule)
    assert torch.equal(m2.mu, a.mu) and torch.equal(m2.sigma, a.sigma)


def test_mix_refuses_bad_input_and_normalises_weights():
    a = _gauss(10)
    with pytest.raises(MixError, match="different shapes"):
        mix([(a, 0.5), (_gauss(11, shape=(4, 6)), 0.5)])
    with pytest.raises(MixError, match="non-negative"):
        mix([(a, 1.5), (_gauss(12), -0.5)])
    with pytest.raises(MixError, match="unknown mix rule"):
        mix([(a, 1.0)], rule="nope")
    with pytest.warns(UserWarning, match="normalising"):
        m = mix([(a, 2.0), (a, 2.0)])
    assert torch.allclose(m.mu, a.mu)


def test_weight_checks_are_one_function_for_every_caller():
    assert check_weights(None, ["a", "b", "c"]) == [1 / 3] * 3  # equal by default
    assert check_weights([3, 1], ["a", "b"]) == [3.0, 1.0]  # as given: normalising is the mixer's job
    assert normalised_weights([3, 1]) == [0.75, 0.25] and normalised_weights([1 / 3] * 3) == [1 / 3] * 3
    with pytest.raises(MixError, match="2 distribution file.s. but 1 --weights; give one weight per file"):
        check_weights([1.0], ["a", "b"], "--weights")
    with pytest.raises(MixError, match="--weights: weight -0.5 for b is negative or not finite"):
        check_weights([0.5, -0.5], ["a", "b"], "--weights")
    with pytest.raises(MixError, match="weight nan is negative or not finite"):
        check_weights([float("nan")])
    with pytest.raises(MixError, match="sum to 0"):
        check_weights([0.0, 0.0], ["a", "b"])
    assert check_mix_rule("reference") == "reference"
    with pytest.raises(MixError, match="unknown --mix-rule 'avg'; choose from paper, reference"):
        check_mix_rule("avg", "--mix-rule")


def test_std_scales_one_per_file_or_one_for_all():
    assert check_std_scales(None, ["a", "b"]) == [1.0, 1.0]
    assert check_std_scales(0.5, ["a", "b"]) == [0.5, 0.5] == check_std_scales([0.5], ["a", "b"])
    assert check_std_scales([1, 0.5], ["a", "b"]) == [1.0, 0.5]
    with pytest.raises(MixError, match=r"2 distribution file\(s\) but 3 --std-scale values; give one per file"):
        check_std_scales([1, 1, 1], ["a", "b"], "--std-scale")
    with pytest.raises(MixError, match="but 0 std_scale values"):
        check_std_scales([], ["a", "b"])
    for bad in (-0.5, float("inf"), "2", True):
        with pytest.raises(MixError, match="for b must be a finite number >= 0"):
            check_std_scales([1.0, bad], ["a", "b"])


@pytest.mark.parametrize("rule", ["paper", "reference"])
def test_mix_of_scaled_components_matches_an_independent_transcription(rule):
    """Per-distribution scales s_i enter as s_i * sigma_i before the rule (the authors' generate.py:
    sqrt(sum (sigma_i * s_i * a_i)^2); eq. 7: sum sqrt(a_i) s_i sigma_i)."""
    a, b = _gauss(13), _gauss(14)
    w, s = [0.6, 0.4], [1.5, 0.25]
    m = mix([(a.scaled(s[0]), w[0]), (b.scaled(s[1]), w[1])], rule=rule)
    sa, sb = a.sigma.double().numpy(), b.sigma.double().numpy()
    if rule == "paper":
        expect = math.sqrt(w[0]) * s[0] * sa + math.sqrt(w[1]) * s[1] * sb
    else:
        expect = np.sqrt((sa * s[0] * w[0]) ** 2 + (sb * s[1] * w[1]) ** 2)
    np.testing.assert_allclose(m.sigma.numpy(), expect, rtol=1e-6)
    np.testing.assert_allclose(m.mu.numpy(), w[0] * a.mu.numpy() + w[1] * b.mu.numpy(), rtol=1e-6, atol=1e-6)


def test_ortho_loss_matches_formula_for_both_kinds():
    pooled = torch.randn(5, 8)
    unit = pooled / pooled.norm(dim=-1, keepdim=True)
    cos = (unit @ unit.T).numpy()
    pairs = [cos[i, j] for i in range(5) for j in range(i + 1, 5)]
    assert ortho_loss(pooled).item() == pytest.approx(sum(abs(c) for c in pairs) / 20, rel=1e-5)
    # "squared" is now the authors' code: cos^2 over both triangles (ordered pairs), twice the i < j sum
    assert ortho_loss(pooled, "squared").item() == pytest.approx(2 * sum(c * c for c in pairs) / 20, rel=1e-5)
    assert ortho_loss(pooled[:1]).item() == 0.0
