"""The Python API (dreamdist.load / mix / train_distribution): embeddings against the formulas, the CLI's
seed rule, the fingerprint check, and pipelines other than text-to-image."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import dreamdist
from dreamdist.cli import main
from dreamdist.core.distfile import load_distribution
from dreamdist.core.encoder import SoftPromptEncoder
from dreamdist.core.gaussian import standard_normal
from dreamdist.core.templates import Template
from dreamdist.utils.errors import FingerprintMismatchError, MixError

STEPS = 3


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _gaussian(path, pipe, template: str):
    """mu, sigma computed here from the file's vectors: encode, then mean / unbiased std over K."""
    encoder = SoftPromptEncoder(pipe.tokenizer, pipe.text_encoder)
    with torch.no_grad():
        feats = encoder.encode_soft(load_distribution(path).ctx, Template.parse(template)).features
    return feats.mean(0), feats.std(0, unbiased=True)


def test_import_dreamdist_stays_light():
    code = "import sys, dreamdist; print('torch' in sys.modules, callable(dreamdist.load))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]  # torch only arrives with the first API call


def test_prompt_embeds_follow_the_formula_and_the_cli_seed_rule(pipe, tiny_distribution):
    dist = dreamdist.load(tiny_distribution)
    assert (dist.num_prompts, dist.num_tokens, dist.template) == (4, 2, "{}")
    embeds, negative = dist.prompt_embeds(pipe, n=3, seed=5, gamma=0.7, template="a {} at night")
    mu, sigma = _gaussian(tiny_distribution, pipe, "a {} at night")
    for i in range(3):
        expected = mu + 0.7 * standard_normal(mu.shape, 5 + i) * sigma
        torch.testing.assert_close(embeds[i], expected, rtol=1e-5, atol=1e-6)
    alone, _ = dist.prompt_embeds(pipe, n=1, seed=6, gamma=0.7, template="a {} at night")
    torch.testing.assert_close(alone[0], embeds[1])  # image i of a call = seed + i
    assert negative.shape == embeds.shape and torch.equal(negative[0], negative[2])
    mean, _ = dist.prompt_embeds(pipe, n=2, seed=0, gamma=0.0)
    torch.testing.assert_close(mean[0], _gaussian(tiny_distribution, pipe, "{}")[0], rtol=1e-5, atol=1e-6)


def test_api_images_equal_the_cli_images_for_the_same_seeds(pipe, tiny_distribution, tiny_model_dir, tmp_path):
    out = tmp_path / "cli"
    assert (
        main(
            [
                "sample",
                str(tiny_distribution),
                "--model",
                str(tiny_model_dir),
                "--n",
                "2",
                "--seed",
                "3",
                "--steps",
                str(STEPS),
                "--guidance-scale",
                "5",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    cli = [np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in sorted(out.glob("seed*.png"))]
    dist = dreamdist.load(tiny_distribution)
    embeds, negative = dist.prompt_embeds(pipe, n=2, seed=3)
    images = pipe(
        prompt_embeds=embeds,
        negative_prompt_embeds=negative,
        latents=dist.latents(pipe, n=2, seed=3),
        num_inference_steps=STEPS,
        guidance_scale=5.0,
    ).images
    assert len(cli) == 2
    for ours, theirs in zip(images, cli):
        assert np.abs(np.asarray(ours, dtype=np.int16) - theirs).max() <= 1


def test_other_text_encoder_is_refused_in_one_line(tiny_distribution, other_model_dir):
    from diffusers import StableDiffusionPipeline

    other = StableDiffusionPipeline.from_pretrained(other_model_dir, safety_checker=None, requires_safety_checker=False)
    with pytest.raises(FingerprintMismatchError) as err:
        dreamdist.load(tiny_distribution).prompt_embeds(other)
    assert "\n" not in str(err.value) and "trained on" in str(err.value)


def test_composes_with_img2img(pipe, tiny_distribution):
    from diffusers import StableDiffusionImg2ImgPipeline

    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    embeds, negative = dreamdist.load(tiny_distribution).prompt_embeds(img2img, n=2, seed=0)
    start = Image.new("RGB", (32, 32), (200, 40, 40))
    images = img2img(
        image=[start, start], prompt_embeds=embeds, negative_prompt_embeds=negative, strength=0.6, num_inference_steps=4
    ).images
    assert len(images) == 2 and images[0].size == (32, 32)


def test_mix_follows_paper_eq7(pipe, tiny_distribution, tiny_distribution_b):
    mixed = dreamdist.mix([tiny_distribution, tiny_distribution_b], weights=[0.7, 0.3])
    embeds, _ = mixed.prompt_embeds(pipe, n=1, seed=2)
    (mu_a, s_a), (mu_b, s_b) = (_gaussian(p, pipe, "{}") for p in (tiny_distribution, tiny_distribution_b))
    mu, sigma = 0.7 * mu_a + 0.3 * mu_b, 0.7**0.5 * s_a + 0.3**0.5 * s_b
    torch.testing.assert_close(embeds[0], mu + standard_normal(mu.shape, 2) * sigma, rtol=1e-5, atol=1e-5)


def test_mix_with_per_file_std_scales_and_templates_follows_the_reference_rule(
    pipe, tiny_encoder, tiny_model_dir, tmp_path
):
    """Two files trained in different templates, each encoded in its own; sigma_i scaled by s_i
    before the authors' rule sigma = sqrt(sum (a_i s_i sigma_i)^2)."""
    from conftest import write_random_distribution

    a = write_random_distribution(
        tmp_path / "a.safetensors", tiny_encoder, tiny_model_dir, seed=3, template="a photo of {}"
    )
    b = write_random_distribution(
        tmp_path / "b.safetensors", tiny_encoder, tiny_model_dir, seed=4, template="{} in the snow"
    )
    mixed = dreamdist.mix([a, dreamdist.load(b)], weights=[0.25, 0.75], rule="reference", std_scale=[2.0, 0.5])
    embeds, _ = mixed.prompt_embeds(pipe, n=1, seed=4, gamma=0.5)
    (mu_a, s_a), (mu_b, s_b) = _gaussian(a, pipe, "a photo of {}"), _gaussian(b, pipe, "{} in the snow")
    mu = 0.25 * mu_a + 0.75 * mu_b
    sigma = ((0.25 * 2.0 * s_a) ** 2 + (0.75 * 0.5 * s_b) ** 2).sqrt()
    torch.testing.assert_close(embeds[0], mu + 0.5 * standard_normal(mu.shape, 4) * sigma, rtol=1e-5, atol=1e-5)
    with pytest.raises(MixError, match="2 distribution file.s. but 3 std_scale values"):
        dreamdist.mix([a, b], std_scale=[1, 1, 1])


def test_train_distribution_returns_the_file(tiny_model_dir, tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (40 * i, 120, 200)).save(refs / f"{i}.png")
    path = dreamdist.train_distribution(
        refs,
        tiny_model_dir,
        tmp_path / "d.safetensors",
        steps=2,
        num_prompts=2,
        num_tokens=1,
        samples=1,
        batch_size=1,
        device="cpu",
        progress=False,
    )
    assert path == tmp_path / "d.safetensors" and load_distribution(path).ctx.shape[:2] == (2, 1)


def test_a_mixture_samples_each_seed_from_its_component(pipe, tiny_mixture):
    dist = dreamdist.load(tiny_mixture)
    assert (dist.num_components, dist.num_prompts) == (2, 4) and "C=2, K=4" in repr(dist)
    embeds, _ = dist.prompt_embeds(pipe, n=6, seed=0, gamma=0.5)
    file = load_distribution(tiny_mixture)
    encoder = SoftPromptEncoder(pipe.tokenizer, pipe.text_encoder)
    with torch.no_grad():  # each component's Gaussian computed here from its own K prompts
        parts = [encoder.encode_soft(ctx, Template.parse("{}")).features for ctx in file.component_ctx()]
    from dreamdist.core.mixture import pick_component

    for seed in range(6):
        feats = parts[pick_component([0.25, 0.75], seed)]
        expected = feats.mean(0) + 0.5 * standard_normal(feats.shape[1:], seed) * feats.std(0, unbiased=True)
        torch.testing.assert_close(embeds[seed], expected, rtol=1e-5, atol=1e-6)
