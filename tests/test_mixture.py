"""Mixtures of Gaussians (``train --components``): the per-seed component pick, sampling, eq. 7 across
mixture files, and the distribution file's version 2."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from dreamdist.core.distfile import FORMAT_VERSION, load_distribution, save_distribution
from dreamdist.core.distribution import PromptDistribution
from dreamdist.core.gaussian import FeatureGaussian, mix, standard_normal
from dreamdist.core.mixture import GaussianMixture, mix_mixtures, pick_component
from dreamdist.utils.errors import DistributionFileError, MixError


def _gaussian(seed: int, shape=(3, 4)) -> FeatureGaussian:
    g = torch.Generator().manual_seed(seed)
    return FeatureGaussian(torch.randn(shape, generator=g), torch.rand(shape, generator=g))


def test_picks_follow_the_weights_and_are_seeded():
    weights = [0.2, 0.0, 0.8]
    picks = [pick_component(weights, s) for s in range(4000)]
    assert picks == [pick_component(weights, s) for s in range(4000)]  # the same on every call
    assert 1 not in picks  # a weight-0 component is never drawn
    share = picks.count(0) / len(picks)
    assert abs(share - 0.2) < 0.03  # binomial sd at n=4000: 0.006
    assert pick_component([3.0, 1.0], 7) == pick_component([0.75, 0.25], 7)  # weights as shares
    assert all(pick_component([1.0], s) == 0 for s in range(10))


def test_one_component_samples_exactly_as_its_gaussian():
    g = _gaussian(0)
    seeds = [0, 5, 123456789]
    assert torch.equal(GaussianMixture((g,), (1.0,)).sample_seeds(seeds, 0.7), g.sample_seeds(seeds, 0.7))


def test_a_seed_draws_its_component_then_the_usual_sample():
    a, b = _gaussian(1), _gaussian(2)
    m = GaussianMixture((a, b), (1.0, 3.0))
    assert m.weights == (0.25, 0.75)
    seeds = list(range(40))
    samples = m.sample_seeds(seeds, 1.5)
    for s, row in zip(seeds, samples):
        chosen = (a, b)[m.pick(s)]
        torch.testing.assert_close(row, chosen.mu + 1.5 * standard_normal(a.shape, s) * chosen.sigma, rtol=0, atol=0)
    assert {m.pick(s) for s in seeds} == {0, 1}


def test_mixing_mixtures_is_eq7_over_one_component_per_file():
    a0, a1, b0 = _gaussian(3), _gaussian(4), _gaussian(5)
    ma = GaussianMixture((a0, a1), (0.4, 0.6))
    mb = GaussianMixture((b0,), (1.0,))
    mixed = mix_mixtures([ma, mb], [0.3, 0.7], "reference")
    assert len(mixed) == 2 and mixed.weights == pytest.approx((0.4, 0.6))
    for part, a in zip(mixed.parts, (a0, a1)):
        expected = mix([(a, 0.3), (b0, 0.7)], "reference")
        assert torch.equal(part.mu, expected.mu) and torch.equal(part.sigma, expected.sigma)
    four = mix_mixtures([ma, ma], [0.5, 0.5])
    assert len(four) == 4 and four.weights == pytest.approx((0.16, 0.24, 0.24, 0.36))
    with pytest.raises(MixError, match="differ in shape"):
        GaussianMixture((a0, _gaussian(6, (2, 4))), (1, 1))


def test_mixture_file_round_trips_as_version_2(tiny_mixture, tiny_distribution):
    dist = load_distribution(tiny_mixture)
    assert dist.num_components == 2 and dist.num_prompts == 4 and dist.ctx.shape[0] == 8
    assert [c.weight for c in dist.components] == [0.25, 0.75]
    assert dist.components[1].images == ("1-0.png", "1-1.png")
    assert [t.shape[0] for t in dist.component_ctx()] == [4, 4]
    with safe_open(str(tiny_mixture), framework="pt") as f:
        meta = f.metadata()
    assert meta["format_version"] == "2" == str(FORMAT_VERSION)
    assert json.loads(meta["components"])[0] == {"weight": 0.25, "images": ["0-0.png", "0-1.png"]}
    single = load_distribution(tiny_distribution)  # one component: still written as version 1
    with safe_open(str(tiny_distribution), framework="pt") as f:
        assert f.metadata()["format_version"] == "1" and "components" not in f.metadata()
    assert single.num_components == 1 and single.components[0].weight == 1.0


def test_a_newer_version_is_refused_and_a_bad_split_named(tiny_mixture, tmp_path):
    from safetensors.torch import load_file, save_file

    with safe_open(str(tiny_mixture), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(tiny_mixture))
    newer = tmp_path / "newer.safetensors"
    save_file(tensors, str(newer), metadata={**meta, "format_version": "3"})
    with pytest.raises(DistributionFileError, match="format version 3 is newer than this dreamdist reads"):
        load_distribution(newer)
    three = tmp_path / "three.safetensors"
    weights = json.dumps([{"weight": 1.0, "images": []}] * 3)
    save_file(tensors, str(three), metadata={**meta, "components": weights})
    with pytest.raises(DistributionFileError, match="8 learned prompts do not split into 3 components"):
        load_distribution(three)
    dist = load_distribution(tiny_mixture)
    copy = save_distribution(tmp_path / "copy.safetensors", dist)
    assert load_distribution(copy).components == dist.components


def test_distribution_samples_each_seed_from_its_component(tiny_mixture, tiny_encoder):
    dist = PromptDistribution.from_files([tiny_mixture], tiny_encoder)
    mixture = dist.mixture()
    file = load_distribution(tiny_mixture)
    for part, ctx in zip(mixture.parts, file.component_ctx()):  # each fitted on its own K prompts
        expected = FeatureGaussian.fit(tiny_encoder.encode_soft(ctx, dist_template(file)).features.float())
        torch.testing.assert_close(part.mu, expected.mu)
        torch.testing.assert_close(part.sigma, expected.sigma)
    seeds = list(range(12))
    samples = dist.sample(seeds)
    for s, row in zip(seeds, samples):
        torch.testing.assert_close(row, mixture.parts[mixture.pick(s)].sample_seeds([s])[0])
    with pytest.raises(MixError, match="has 2 components"):
        dist.gaussian()
    views = dist.sample_views(["{}", "{}, side view", "{}, back view"], seed=3)
    for template, row in zip(["{}", "{}, side view", "{}, back view"], views):  # one component for every view
        part = dist.mixture(template).parts[mixture.pick(3)]
        torch.testing.assert_close(row, part.apply(standard_normal(part.shape, 3)))


def dist_template(file):
    from dreamdist.core.templates import Template

    return Template.parse(file.template)
