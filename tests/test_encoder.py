"""The soft-prompt encoder must compute exactly what CLIPTextModel computes for token ids."""

from __future__ import annotations

import pytest
import torch

from dreamdist.core.templates import Template
from dreamdist.train.prompts import PromptSet
from dreamdist.utils.errors import TemplateError


def _ids(encoder, text):
    return encoder.tokenizer(text, padding="max_length", max_length=77, return_tensors="pt").input_ids


@pytest.mark.parametrize("text", ["a photo of a red cat at night", "", "cathedral"])
def test_token_embeddings_reproduce_clip_text_model(tiny_encoder, text):
    ids = _ids(tiny_encoder, text)
    ref = tiny_encoder.text_encoder(input_ids=ids)
    out = tiny_encoder.encode_embeddings(ids, tiny_encoder.token_embedding(ids))
    assert out.features.shape == (1, 77, tiny_encoder.hidden_size)
    assert (out.features - ref.last_hidden_state).abs().max() < 1e-5
    assert (out.pooled - ref.pooler_output).abs().max() < 1e-5


@pytest.mark.parametrize("template", ["{}", "a photo of {}", "{} at night", "a photo of {} at night, side view"])
def test_soft_prompt_of_real_word_embeddings_equals_text(tiny_encoder, template):
    """Placing the real embeddings of "red cat" in the learned slots equals encoding the full text."""
    word_ids = tiny_encoder.tokenizer("red cat", add_special_tokens=False).input_ids
    ctx = tiny_encoder.token_embedding(torch.tensor(word_ids))[None]  # (1, M, d)
    out = tiny_encoder.encode_soft(ctx, Template.parse(template))
    full = template.replace("{}", "red cat")
    ref = tiny_encoder.text_encoder(input_ids=_ids(tiny_encoder, full))
    assert (out.features - ref.last_hidden_state).abs().max() < 1e-5
    assert (out.pooled - ref.pooler_output).abs().max() < 1e-5


def test_eos_pooling_picks_each_prompts_eos_position(tiny_encoder):
    template = Template.parse("a photo of {} at night")
    lay = tiny_encoder.layout(template, 3)
    prefix = len(tiny_encoder.tokenizer("a photo of", add_special_tokens=False).input_ids)
    suffix = len(tiny_encoder.tokenizer("at night", add_special_tokens=False).input_ids)
    assert lay.start == 1 + prefix
    assert lay.eos_position == 1 + prefix + 3 + suffix
    assert lay.input_ids[lay.eos_position] == tiny_encoder.tokenizer.eos_token_id
    assert (lay.input_ids[lay.eos_position + 1 :] == tiny_encoder.tokenizer.pad_token_id).all()
    ctx = torch.randn(5, 3, tiny_encoder.token_dim)
    out = tiny_encoder.encode_soft(ctx, template)
    assert torch.equal(out.pooled, out.features[:, lay.eos_position])


def test_sd1_tokenizer_whose_pad_is_end_of_text_pools_at_the_template_eos(tiny_encoder):
    """SD 1.x (and MVDream's sd-v1.5-4view) pad with end-of-text: the learned slots hold the pad id, so
    CLIP's own pooling (first end-of-text / largest id) would land on a learned slot, not the EOS."""
    import copy

    sd1 = copy.deepcopy(tiny_encoder)
    sd1.tokenizer.pad_token = sd1.tokenizer.eos_token
    assert sd1.tokenizer.pad_token_id == sd1.tokenizer.eos_token_id
    template = Template.parse("a photo of {}")
    lay = sd1.layout(template, 2)
    assert lay.input_ids[lay.start] == sd1.tokenizer.eos_token_id  # a slot looks like an EOS to CLIP
    ctx = torch.randn(3, 2, sd1.token_dim)
    out = sd1.encode_soft(ctx, template)
    assert torch.equal(out.pooled, out.features[:, lay.eos_position])
    clip_pool = sd1.text_encoder(input_ids=lay.input_ids[None]).pooler_output  # CLIP's choice: a slot
    assert not torch.allclose(clip_pool, out.features[:1, lay.eos_position])
    upto = lay.eos_position + 1  # causal: up to the EOS, the pad id makes no difference
    torch.testing.assert_close(out.features[:, :upto], tiny_encoder.encode_soft(ctx, template).features[:, :upto])


def test_too_long_template_is_refused_with_lengths(tiny_encoder):
    long = "a " * 70 + "{}"
    with pytest.raises(TemplateError, match=r"prefix 70 \+ learned 8 \+ suffix 0 tokens \+ 2 special = 80 > 77"):
        tiny_encoder.layout(Template.parse(long), 8)


@pytest.mark.parametrize("bad", ["no placeholder", "{} and {}"])
def test_template_needs_exactly_one_placeholder(bad):
    with pytest.raises(TemplateError, match="exactly one"):
        Template.parse(bad)


def test_gradients_reach_only_the_learned_vectors(tiny_encoder):
    prompts = PromptSet(4, 2, tiny_encoder.token_dim, seed=0)
    (gaussian,), encoded = prompts.gaussians(tiny_encoder, Template.parse("a photo of {}"), 1)
    from dreamdist.train.losses import ortho_loss

    w = torch.randn(3, *gaussian.shape)
    loss = gaussian.apply(w).square().mean() + ortho_loss(encoded.pooled)
    loss.backward()
    assert prompts.ctx.grad is not None and prompts.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_encoder.text_encoder.parameters())
    assert all(not p.requires_grad for p in tiny_encoder.text_encoder.parameters())


def test_prompt_set_init_is_small_gaussian():
    prompts = PromptSet(32, 8, 64, seed=0)
    assert prompts.ctx.shape == (32, 8, 64)
    assert abs(prompts.ctx.std().item() - 0.02) < 0.002
