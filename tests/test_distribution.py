"""Distribution files bound to an encoder: templates, mixing files, shared view draws."""

from __future__ import annotations

import re

import pytest
import torch

from dreamdist.distribution import PromptDistribution
from dreamdist.errors import MixError


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
