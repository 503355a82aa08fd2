"""Run soft prompts (token-embedding sequences) through a frozen CLIP text encoder.

Rather than re-implementing the transformer (position embeddings, causal mask, final layer norm,
EOS pooling), we run the model's own ``forward`` on token ids and swap in our embeddings at the
token-embedding layer with a forward hook. The features are then exactly what the model computes
for token ids, on transformers 4.x (nested ``.text_model``) and 5.x (flat) alike.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch

from dreamdist.core.templates import Template
from dreamdist.utils.errors import TemplateError


@dataclass
class EncodedPrompts:
    features: torch.Tensor  # (B, L, d): per-position text features (what the UNet cross-attends to)
    pooled: torch.Tensor  # (B, d): feature at each prompt's EOS position


@dataclass(frozen=True)
class PromptLayout:
    """Token ids of one template with M placeholder slots; ``start`` is the first slot."""

    input_ids: torch.Tensor  # (L,)
    start: int
    num_tokens: int
    eos_position: int


class SoftPromptEncoder:
    """A frozen tokenizer + CLIPTextModel pair that encodes text and soft prompts alike."""

    def __init__(self, tokenizer, text_encoder) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.max_length = int(tokenizer.model_max_length)
        if self.max_length > 1000:  # tokenizers without a limit report a huge sentinel
            self.max_length = int(text_encoder.config.max_position_embeddings)

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> "SoftPromptEncoder":
        """Load ``tokenizer/`` and ``text_encoder/`` of a diffusers model folder or hub id."""
        from transformers import CLIPTextModel, CLIPTokenizer

        from dreamdist.utils.compat import transformers_dtype_kwargs

        tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
        dtype_kwargs = transformers_dtype_kwargs(dtype)
        text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", **dtype_kwargs)
        if device is not None:
            text_encoder = text_encoder.to(device)
        return cls(tokenizer, text_encoder)

    @property
    def device(self) -> torch.device:
        return self.token_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.token_embedding.weight.dtype

    @property
    def token_embedding(self) -> torch.nn.Embedding:
        return self.text_encoder.get_input_embeddings()

    @property
    def hidden_size(self) -> int:
        return int(self.text_encoder.config.hidden_size)

    @property
    def token_dim(self) -> int:
        return int(self.token_embedding.weight.shape[1])

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids if text else []

    def layout(self, template: Template, num_tokens: int) -> PromptLayout:
        """[SOS] + prefix + M slots + suffix + [EOS] + padding, refusing what does not fit."""
        prefix, suffix = self._ids(template.prefix), self._ids(template.suffix)
        used = 2 + len(prefix) + num_tokens + len(suffix)
        if used > self.max_length:
            raise TemplateError(
                f"template {str(template)!r} does not fit: prefix {len(prefix)} + learned "
                f"{num_tokens} + suffix {len(suffix)} tokens + 2 special = {used} > "
                f"{self.max_length} positions; shorten the template or use fewer tokens"
            )
        tok = self.tokenizer
        slot = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids = [tok.bos_token_id, *prefix, *([slot] * num_tokens), *suffix, tok.eos_token_id]
        eos_position = len(ids) - 1
        ids += [slot if tok.pad_token_id is None else tok.pad_token_id] * (self.max_length - len(ids))
        return PromptLayout(torch.tensor(ids), 1 + len(prefix), num_tokens, eos_position)

    @contextlib.contextmanager
    def _embeddings_override(self, embeds: torch.Tensor) -> Iterator[None]:
        handle = self.token_embedding.register_forward_hook(lambda module, args, out: embeds)
        try:
            yield
        finally:
            handle.remove()

    def encode_embeddings(self, input_ids: torch.Tensor, embeds: torch.Tensor) -> EncodedPrompts:
        """Encode (B, L, d_tok) token embeddings; ``input_ids`` (B, L) only locate EOS for pooling."""
        input_ids = input_ids.to(self.device)
        with self._embeddings_override(embeds.to(self.dtype)):
            out = self.text_encoder(input_ids=input_ids)
        return EncodedPrompts(out.last_hidden_state, out.pooler_output)

    def encode_soft(self, ctx: torch.Tensor, template: Template) -> EncodedPrompts:
        """Encode K soft prompts ``ctx`` (K, M, d_tok) placed in ``template``; differentiable in ctx."""
        k, m, _ = ctx.shape
        lay = self.layout(template, m)
        ids = lay.input_ids.to(self.device)
        with torch.no_grad():
            fixed = self.token_embedding(ids)
        end = lay.start + m
        embeds = torch.cat([fixed[: lay.start].expand(k, -1, -1), ctx.to(fixed), fixed[end:].expand(k, -1, -1)], dim=1)
        features = self.encode_embeddings(ids.expand(k, -1), embeds).features
        # Pool at the template's own EOS, not where CLIP looks for it (the first end-of-text id, or the
        # largest id): SD 1.x tokenizers pad with end-of-text, so the learned slots would be taken for it.
        return EncodedPrompts(features, features[:, lay.eos_position])

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Plain-text features (B, L, d), e.g. for negative prompts; padded like SD pipelines do."""
        ids = self.tokenizer(
            texts, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.device)
        return self.text_encoder(input_ids=ids).last_hidden_state
