"""The view-dependent 3D conditioning in the core (no threestudio): one draw shared by all views,
gamma, seeds, mixing, saving/reloading, width check, and the trained-distribution cache."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from dreamdist.conditioning3d.views import (
    SampleSpec,
    ViewConditioning,
    cached_distribution,
    check_feature_width,
    distribution_cache_key,
    sample_spec,
    sample_view_conditioning,
)
from dreamdist.core.distribution import PromptDistribution
from dreamdist.utils.errors import DistributionFileError, DreamdistError, InputError, TemplateError

VIEWS = ["{}, side view", "{}, front view", "{}, back view", "{}, overhead view"]


@pytest.fixture(scope="module")
def dist(tiny_distribution, tiny_encoder):
    return PromptDistribution.from_files([tiny_distribution], tiny_encoder)


def _cond(dist, seed=7, gamma=1.0, template="{}", neg="blurry"):
    return sample_view_conditioning(
        dist,
        template,
        VIEWS,
        seed=seed,
        gamma=gamma,
        negative_prompt=neg,
        view_names=["side", "front", "back", "overhead"],
        base_model="tiny",
    )


def test_one_draw_is_shared_by_every_view(dist):
    cond = _cond(dist)
    gaussians = [dist.gaussian(t) for t in ["{}", *VIEWS]]
    feats = [cond.text, *cond.text_vd]
    varies = torch.stack([g.sigma > 1e-3 for g in gaussians]).all(0)
    assert varies.float().mean() > 0.5
    ws = [((f - g.mu) / g.sigma)[varies] for f, g in zip(feats, gaussians)]
    for w in ws[1:]:
        assert torch.allclose(w, ws[0], atol=1e-3)
    # and it is the seed's standard-normal draw
    from dreamdist.core.gaussian import standard_normal

    assert torch.allclose(ws[0], standard_normal(gaussians[0].shape, 7)[varies], atol=1e-3)


def test_gamma_zero_gives_each_directions_mean(dist):
    cond = _cond(dist, gamma=0.0)
    assert torch.equal(cond.text, dist.gaussian("{}").mu)
    for feats, template in zip(cond.text_vd, VIEWS):
        assert torch.equal(feats, dist.gaussian(template).mu)
    # directions differ from each other (their templates differ)
    assert not torch.allclose(cond.text_vd[0], cond.text_vd[2])


def test_same_seed_same_tensors_other_seed_differs(dist):
    a, b, c = _cond(dist, seed=3), _cond(dist, seed=3), _cond(dist, seed=4)
    for name in ("text", "text_vd", "uncond", "uncond_vd"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.allclose(a.text_vd, c.text_vd)
    assert torch.equal(a.uncond, c.uncond)  # negative prompts are plain text, not sampled


def test_negative_prompts_are_plain_text_through_the_same_encoder(dist, tiny_encoder):
    cond = _cond(dist, neg="low quality")
    expected = tiny_encoder.encode_text(["low quality"])[0]
    assert torch.equal(cond.uncond, expected)
    assert cond.uncond_vd.shape == (4, *expected.shape)


def test_mixing_follows_the_2d_module(tiny_distribution, tiny_distribution_b, tiny_encoder, dist):
    only_a = PromptDistribution.from_files([tiny_distribution, tiny_distribution_b], tiny_encoder, [1.0, 0.0])
    assert torch.allclose(_cond(only_a).text_vd, _cond(dist).text_vd, atol=1e-6)
    paper = PromptDistribution.from_files([tiny_distribution, tiny_distribution_b], tiny_encoder, [0.5, 0.5])
    ref = PromptDistribution.from_files(
        [tiny_distribution, tiny_distribution_b], tiny_encoder, [0.5, 0.5], mix_rule="reference"
    )
    cp, cr = _cond(paper), _cond(ref)
    # same mean (gamma 0), different spread rules
    assert torch.allclose(_cond(paper, gamma=0).text_vd, _cond(ref, gamma=0).text_vd, atol=1e-6)
    assert not torch.allclose(cp.text_vd, cr.text_vd)
    assert cp.spec.weights == (0.5, 0.5) and cr.spec.mix_rule == "reference"
    assert len(cp.spec.file_hashes) == 2


def test_spec_from_the_files_alone_equals_the_sampled_spec(dist, tiny_distribution):
    """A resumed 3D run compares the spec it expects (no model loaded) with the saved one: both come
    from sample_spec, so equal settings give equal specs."""
    from dreamdist.core.distfile import file_sha256

    cond = _cond(dist, seed=5, gamma=0.5)
    expected = sample_spec(
        seed=5,
        gamma=0.5,
        template="{}",
        view_templates=VIEWS,
        negative_prompt="blurry",
        file_hashes=[file_sha256(tiny_distribution)],
        base_model="tiny",
        view_names=["side", "front", "back", "overhead"],
        files=[str(tiny_distribution)],
    )
    assert expected == cond.spec and expected.differences(cond.spec) == []
    assert expected.weights == (1.0,) and expected.negative_prompts_vd == ("blurry",) * 4
    with pytest.raises(InputError, match="4 view templates but 1 negative prompts"):
        sample_spec(
            seed=5, gamma=0.5, template="{}", view_templates=VIEWS, negative_prompts_vd=["x"], file_hashes=["h"]
        )


def test_templates_without_placeholder_are_refused_in_one_line(dist):
    with pytest.raises(TemplateError) as err:
        sample_view_conditioning(dist, "a photo", VIEWS, seed=0)
    assert "\n" not in str(err.value)
    with pytest.raises(TemplateError, match="view prompt 'a cat, side view'"):
        sample_view_conditioning(dist, "{}", ["a cat, side view"], seed=0)


def test_saved_conditioning_reloads_identically(dist, tmp_path, tiny_distribution):
    cond = _cond(dist, seed=11, gamma=0.7, template="a photo of {} made of gold")
    path = cond.save(tmp_path / "c.safetensors")
    back = ViewConditioning.load(path)
    assert back.spec == cond.spec
    assert back.spec.seed == 11 and back.spec.gamma == 0.7 and back.spec.template == "a photo of {} made of gold"
    from dreamdist.core.distfile import file_sha256

    assert back.spec.file_hashes == (file_sha256(tiny_distribution),)
    for name in ("text", "text_vd", "uncond", "uncond_vd"):
        assert torch.equal(getattr(back, name), getattr(cond, name))
    assert back.spec.differences(cond.spec) == []
    other = _cond(dist, seed=12).spec
    assert any(d.startswith("seed 11 != 12") for d in cond.spec.differences(other))
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def test_unreadable_conditioning_file_is_one_line(tmp_path):
    bad = tmp_path / "c.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(DistributionFileError) as err:
        ViewConditioning.load(bad)
    assert "\n" not in str(err.value) and str(bad) in str(err.value)


def test_spec_json_round_trip():
    spec = SampleSpec(1, 0.5, "{}", ("{}, side view",), "", ("",), ("ab",), (1.0,), "paper", "m", ("side",), ("f",))
    assert SampleSpec.from_json(spec.to_json()) == spec
    assert "std_scales" not in spec.to_json()  # no per-file scales: the JSON conditionings always had
    scaled = sample_spec(
        seed=1,
        gamma=1.0,
        template="{}",
        view_templates=["{}, side view"],
        file_hashes=["a", "b"],
        std_scales=[1.0, 0.5],
    )
    assert scaled.std_scales == (1.0, 0.5) and SampleSpec.from_json(scaled.to_json()) == scaled


def test_per_file_std_scales_are_part_of_the_spec(tiny_distribution, tiny_distribution_b, tiny_encoder):
    files = [tiny_distribution, tiny_distribution_b]
    plain = _cond(PromptDistribution.from_files(files, tiny_encoder))
    ones = _cond(PromptDistribution.from_files(files, tiny_encoder, std_scale=[1.0, 1.0]))
    half = _cond(PromptDistribution.from_files(files, tiny_encoder, std_scale=[1.0, 0.5]))
    assert ones.spec == plain.spec and plain.spec.std_scales == () and plain.spec.file_std_scales == (1.0, 1.0)
    assert torch.equal(ones.text_vd, plain.text_vd)
    assert half.spec.std_scales == (1.0, 0.5) and not torch.allclose(half.text_vd, plain.text_vd)
    assert half.spec.differences(plain.spec) == ["std_scales (1.0, 0.5) != (1.0, 1.0)"]
    # a conditioning saved before per-file scales existed (no key in its JSON) stands for scales of 1
    old = json.loads(plain.spec.to_json())
    assert "std_scales" not in old and SampleSpec.from_json(json.dumps(old)).differences(ones.spec) == []


def test_feature_width_check():
    check_feature_width(1024, 1024, "enc", "guid")
    check_feature_width(1024, None, "enc", "guid")  # unknown: no check
    with pytest.raises(InputError) as err:
        check_feature_width(768, 1024, "runwayml/stable-diffusion-v1-5", "sd-v2.1-base-4view")
    assert "768" in str(err.value) and "1024" in str(err.value) and "\n" not in str(err.value)


def _images(folder, contents):
    folder.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(contents):
        (folder / f"img{i}.png").write_bytes(data)
    return folder


def test_cache_key_is_content_addressed(tmp_path):
    a = _images(tmp_path / "a", [b"one", b"two"])
    b = _images(tmp_path / "b", [b"two", b"one"])  # same contents, other names/order
    c = _images(tmp_path / "c", [b"one", b"three"])
    s = {"train_steps": 10, "num_prompts": 4}
    assert distribution_cache_key(a, s, "m") == distribution_cache_key(b, s, "m")
    assert distribution_cache_key(a, s, "m") != distribution_cache_key(c, s, "m")
    assert distribution_cache_key(a, s, "m") != distribution_cache_key(a, {**s, "train_steps": 11}, "m")
    assert distribution_cache_key(a, s, "m") != distribution_cache_key(a, s, "other-model")
    with pytest.raises(InputError):
        distribution_cache_key(tmp_path / "missing", s, "m")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no reference images found"):
        distribution_cache_key(tmp_path / "empty", s, "m")


def test_cache_trains_each_key_once_even_concurrently(tmp_path):
    folder = _images(tmp_path / "imgs", [b"x", b"y"])
    calls = []

    def train(path):
        calls.append(path)
        time.sleep(0.3)  # a slow training: the other runs must wait on the lock, not train again
        from dreamdist.utils.atomic import atomic_write_bytes

        atomic_write_bytes(path, b"trained")

    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(cached_distribution(folder, {"s": 1}, "m", train, tmp_path / "cache"))
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(set(results)) == 1 and results[0].read_bytes() == b"trained"
    assert results[0].with_name(results[0].name + ".lock").parent == results[0].parent
    # a later run loads the cached file without training
    assert cached_distribution(folder, {"s": 1}, "m", train, tmp_path / "cache") == results[0]
    assert len(calls) == 1


def test_cache_refuses_a_training_that_wrote_nothing(tmp_path):
    folder = _images(tmp_path / "imgs", [b"x"])
    with pytest.raises(DreamdistError, match="wrote no distribution file"):
        cached_distribution(folder, {}, "m", lambda path: None, tmp_path / "cache")
