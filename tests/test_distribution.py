"""Distribution files bound to an encoder: templates, mixing files, shared view draws."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from dreamdist.core.distribution import PromptDistribution
from dreamdist.core.gaussian import standard_normal
from dreamdist.utils.errors import MixError


def test_gamma_zero_sample_equals_mu_and_fit_happens_once(tiny_distribution, tiny_encoder, monkeypatch):
    dist = PromptDistribution.from_files([tiny_distribution], tiny_encoder)
    calls = []
    original = tiny_encoder.encode_soft
    monkeypatch.setattr(tiny_encoder, "encode_soft", lambda *a: calls.append(1) or original(*a))
    s = dist.sample([0, 1, 2], gamma=0.0, template="a photo of {} at night")
    dist.sample([3, 4], gamma=1.0, template="a photo of {} at night")
    assert len(calls) == 1
    mu = dist.gaussian("a photo of {} at night").mu
    assert all(torch.equal(x, mu) for x in s)


def test_mixing_two_copies_of_a_file_keeps_mu(tiny_distribution, tiny_distribution_b, tiny_encoder):
    one = PromptDistribution.from_files([tiny_distribution], tiny_encoder)
    two = PromptDistribution.from_files([tiny_distribution, tiny_distribution], tiny_encoder, [0.5, 0.5])
    assert torch.allclose(one.gaussian().mu, two.gaussian().mu, atol=1e-6)
    first = PromptDistribution.from_files([tiny_distribution, tiny_distribution_b], tiny_encoder, [1.0, 0.0])
    assert torch.equal(first.sample([5, 6]), one.sample([5, 6]))


def test_views_share_one_draw(tiny_distribution, tiny_encoder):
    dist = PromptDistribution.from_files([tiny_distribution], tiny_encoder)
    templates = ["{}", "{}, side view", "{}, back view"]
    views = dist.sample_views(templates, seed=7, gamma=1.0)
    g0, g1 = dist.gaussian(templates[0]), dist.gaussian(templates[1])
    varies = (g0.sigma > 1e-3) & (g1.sigma > 1e-3)  # SOS has sigma 0: every prompt shares it
    assert varies.float().mean() > 0.5
    w0 = (views[0] - g0.mu) / g0.sigma
    w1 = (views[1] - g1.mu) / g1.sigma
    assert torch.allclose(w0[varies], w1[varies], atol=1e-3)
    assert torch.equal(dist.sample_views(templates, 7), views)
    assert not torch.equal(dist.sample_views(templates, 8), views)


def test_bad_weights_and_rules_are_refused_when_bound(tiny_distribution, tiny_distribution_b, tiny_encoder):
    files = [tiny_distribution, tiny_distribution_b]
    with pytest.raises(MixError, match="one weight per file"):
        PromptDistribution.from_files(files, tiny_encoder, [1.0])
    with pytest.raises(MixError, match=f"weight -1 for {re.escape(str(tiny_distribution_b))} is negative"):
        PromptDistribution.from_files(files, tiny_encoder, [2.0, -1.0])
    with pytest.raises(MixError, match="unknown mix rule 'average'"):
        PromptDistribution.from_files(files, tiny_encoder, mix_rule="average")
    assert PromptDistribution.from_files(files, tiny_encoder, [3, 1]).weights == [3.0, 1.0]  # recorded as given


# --------------------------------------------------------------------------- mixing files of different templates


def _fit_by_hand(path, encoder, template):
    """mu and sigma transcribed independently: encode the file's K prompts, mean / unbiased std (numpy)."""
    from dreamdist.core.distfile import load_distribution
    from dreamdist.core.templates import Template

    with torch.no_grad():
        feats = encoder.encode_soft(load_distribution(path).ctx, Template.parse(template)).features.double().numpy()
    return feats.mean(0), feats.std(0, ddof=1)


@pytest.mark.parametrize("rule", ["paper", "reference"])
@pytest.mark.parametrize("asked", [None, "a painting of {}"])
def test_mix_of_two_templates_and_scales_matches_the_formulas(two_templates, tiny_encoder, rule, asked):
    """Each file in the asked template, else its own; sigma_i scaled by s_i before the mix:
    paper (eq. 7) sigma* = sum sqrt(a_i) s_i sigma_i, reference sqrt(sum (a_i s_i sigma_i)^2)."""
    a, b = two_templates
    weights, scales = [0.7, 0.3], [1.0, 0.5]
    dist = PromptDistribution.from_files([a, b], tiny_encoder, weights, rule, std_scale=scales)
    (mu_a, s_a), (mu_b, s_b) = (
        _fit_by_hand(p, tiny_encoder, asked or own) for p, own in ((a, "a photo of {}"), (b, "{} in the snow"))
    )
    mu = 0.7 * mu_a + 0.3 * mu_b
    if rule == "paper":
        sigma = np.sqrt(0.7) * 1.0 * s_a + np.sqrt(0.3) * 0.5 * s_b
    else:
        sigma = np.sqrt((0.7 * 1.0 * s_a) ** 2 + (0.3 * 0.5 * s_b) ** 2)
    g = dist.gaussian(asked)
    np.testing.assert_allclose(g.mu.numpy(), mu, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g.sigma.numpy(), sigma, rtol=1e-5, atol=1e-5)
    assert dist.templates(asked) == ([asked, asked] if asked else ["a photo of {}", "{} in the snow"])
    assert dist.shared_template(asked) == asked  # None: the files' own templates differ
    # a sample is mu* + gamma * w * sigma*, gamma after the mix
    w = standard_normal(g.shape, 11).double().numpy()
    np.testing.assert_allclose(dist.sample([11], 2.0, asked)[0].numpy(), mu + 2.0 * w * sigma, rtol=1e-4, atol=1e-4)


def test_no_template_encodes_each_file_in_its_own(two_templates, tiny_encoder):
    a, b = two_templates
    mixed = PromptDistribution.from_files([a, b], tiny_encoder, [0.0, 1.0])
    alone = PromptDistribution.from_files([b], tiny_encoder)
    assert torch.equal(mixed.gaussian().mu, alone.gaussian().mu)  # b in "{} in the snow", not a's template
    forced = PromptDistribution.from_files([a, b], tiny_encoder, [0.0, 1.0]).gaussian("a photo of {}")
    assert not torch.allclose(forced.mu, alone.gaussian().mu)


def test_one_std_scale_for_every_file_equals_gamma_and_counts_are_checked(two_templates, tiny_encoder, monkeypatch):
    a, b = two_templates
    plain = PromptDistribution.from_files([a, b], tiny_encoder)
    one = PromptDistribution.from_files([a, b], tiny_encoder, std_scale=0.5)
    assert one.std_scales == [0.5, 0.5] and plain.std_scales == [1.0, 1.0]
    torch.testing.assert_close(one.gaussian().sigma, plain.gaussian().sigma * 0.5)  # both rules are linear in s
    with pytest.raises(MixError, match=r"2 distribution file\(s\) but 3 std_scale values; give one per file"):
        PromptDistribution.from_files([a, b], tiny_encoder, std_scale=[1, 1, 1])
    with pytest.raises(MixError, match="std_scale: -1.0 for .*snow.safetensors must be a finite number >= 0"):
        PromptDistribution.from_files([a, b], tiny_encoder, std_scale=[1.0, -1.0])
    calls = []
    original = tiny_encoder.encode_soft
    monkeypatch.setattr(tiny_encoder, "encode_soft", lambda *x: calls.append(1) or original(*x))
    fresh = PromptDistribution.from_files([a, b], tiny_encoder, std_scale=[1.0, 2.0])
    fresh.gaussian(), fresh.file_mixtures(), fresh.gaussian("{}"), fresh.gaussian("{}")
    assert len(calls) == 4  # each (file, template) encoded once
