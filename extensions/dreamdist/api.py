"""The Python API for diffusers users: a learned distribution inside your own pipeline.

    import dreamdist
    dist = dreamdist.load("style.safetensors")
    embeds, negative = dist.prompt_embeds(pipe, n=4, seed=0, gamma=1.0, template="a {} at night")
    images = pipe(prompt_embeds=embeds, negative_prompt_embeds=negative,
                  latents=dist.latents(pipe, n=4, seed=0)).images

Seeds follow the CLI's rule: image i of a call is seed + i, for its prompt sample and its initial
latents alike, so ``dreamdist sample --seed S`` and this API give the same images with the same
scheduler and steps. Everything here works with any pipeline that takes ``prompt_embeds`` (img2img,
ControlNet, your own scheduler): the distribution only needs the pipeline's tokenizer and text encoder.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from dreamdist.core.distfile import DistributionFile, load_distribution
from dreamdist.core.distribution import PromptDistribution
from dreamdist.core.encoder import SoftPromptEncoder
from dreamdist.core.gaussian import MixRule, check_mix_rule, check_std_scales, check_weights
from dreamdist.core.runtime import native_resolution
from dreamdist.sampling import latent_noise
from dreamdist.train import TrainConfig
from dreamdist.train import train_distribution as _train

__all__ = ["Distribution", "load", "mix", "train_distribution"]


def _pipeline_name(pipe: Any) -> str:
    return str(getattr(pipe, "name_or_path", "") or getattr(pipe.config, "_name_or_path", "") or type(pipe).__name__)


class Distribution:
    """One learned prompt distribution, or a weighted mix of several (paper eq. 7).

    Bound lazily to each pipeline it is used with: the K learned prompts are encoded by that
    pipeline's text encoder (checked against the file's fingerprint first) once per template.
    """

    def __init__(
        self,
        files: Sequence[DistributionFile],
        weights: Sequence[float] | None = None,
        rule: MixRule = "paper",
        std_scale: float | Sequence[float] | None = None,
    ) -> None:
        self.files = list(files)
        labels = [str(f.path or f"file {i + 1}") for i, f in enumerate(self.files)]
        self.weights = None if weights is None else check_weights(weights, labels, "weights")
        self.rule = check_mix_rule(rule, "rule")
        self.std_scales = check_std_scales(std_scale, labels, "std_scale")  # one per file
        self._bound: tuple[Any, PromptDistribution] | None = None  # (text encoder, its binding)

    def __repr__(self) -> str:
        names = ", ".join(str(f.path or "<memory>") for f in self.files)
        mixture = f"C={self.num_components}, " if self.num_components > 1 else ""
        return f"Distribution({names}, {mixture}K={self.num_prompts}, M={self.num_tokens})"

    @property
    def num_prompts(self) -> int:
        """K: prompts per component of the (first) distribution."""
        return self.files[0].num_prompts

    @property
    def num_components(self) -> int:
        """Components of the mix: the product of the files' (1 unless trained with ``components``)."""
        return math.prod(f.num_components for f in self.files)

    @property
    def num_tokens(self) -> int:
        return int(self.files[0].ctx.shape[1])

    @property
    def template(self) -> str:
        """The template the (first) distribution was trained in; "{}" stands for the learned vectors."""
        return self.files[0].template

    @property
    def base_model(self) -> str:
        return self.files[0].base_model

    def _binding(self, pipe: Any) -> PromptDistribution:
        encoder = pipe.text_encoder
        if self._bound is None or self._bound[0] is not encoder:
            soft = SoftPromptEncoder(pipe.tokenizer, encoder)
            self._bound = (
                encoder,
                PromptDistribution(
                    self.files,
                    soft,
                    self.weights,
                    self.rule,
                    encoder_name=_pipeline_name(pipe),
                    std_scale=self.std_scales,
                ),
            )
        return self._bound[1]

    @torch.no_grad()
    def prompt_embeds(
        self,
        pipe: Any,
        n: int = 1,
        seed: int = 0,
        gamma: float = 1.0,
        template: str | None = None,
        negative_prompt: str = "",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` prompt samples and the matching negative prompt, each (n, 77, d) on the pipeline's
        device and dtype: pass them as ``prompt_embeds`` / ``negative_prompt_embeds``.

        ``gamma`` scales diversity (0: the mean prompt); ``template`` re-encodes the learned prompts
        in new words ("a {} at night"), default: the training template. Raises
        ``FingerprintMismatchError`` in one line when ``pipe``'s text encoder is not the one the
        distribution was trained in. In a mix with no ``template``, each file is encoded in its own
        training template.
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, not {n}")
        bound = self._binding(pipe)
        embeds = bound.sample(range(int(seed), int(seed) + n), float(gamma), template)
        negative = bound.encoder.encode_text([negative_prompt]).expand(n, -1, -1)
        dtype = pipe.unet.dtype if getattr(pipe, "unet", None) is not None else pipe.text_encoder.dtype
        return embeds.to(pipe.device, dtype), negative.to(pipe.device, dtype)

    def latents(
        self, pipe: Any, n: int = 1, seed: int = 0, height: int | None = None, width: int | None = None
    ) -> torch.Tensor:
        """The initial latents (n, C, h, w) the CLI uses for images seed .. seed + n - 1 (a CPU
        generator per image, so they are the same on any device). ``height``/``width`` in pixels,
        default: the model's native size. Pass as ``latents=`` to a text-to-image pipeline."""
        native, _ = native_resolution(pipe)
        scale = int(pipe.vae_scale_factor)
        shape = (int(pipe.unet.config.in_channels), (height or native) // scale, (width or native) // scale)
        stacked = torch.stack([latent_noise(shape, int(seed) + i) for i in range(n)])
        return stacked.to(pipe.device, pipe.unet.dtype)


def load(path: str | os.PathLike) -> Distribution:
    """Read a distribution file written by ``dreamdist train``."""
    return Distribution([load_distribution(path)])


def mix(
    paths: Sequence[str | os.PathLike | Distribution],
    weights: Sequence[float] | None = None,
    rule: MixRule = "paper",
    std_scale: float | Sequence[float] | None = None,
) -> Distribution:
    """A mix of several distributions with ``weights`` (default: equal; normalised to sum 1).
    ``rule``: "paper" (eq. 7: sigma = sum sqrt(a_i) sigma_i) or "reference" (the authors' generate.py:
    sigma = sqrt(sum (a_i sigma_i)^2)). ``std_scale``: file i's sigma_i becomes s_i * sigma_i before the
    mix (generate.py's ``--std_scale``), one number for every file or one per file; default 1. Bad
    weights, rules or scales are refused here, in one line (``MixError``)."""
    files: list[DistributionFile] = []
    for item in paths:
        files.extend(item.files if isinstance(item, Distribution) else [load_distribution(item)])
    return Distribution(files, weights, rule, std_scale)


def train_distribution(
    images: str | os.PathLike,
    model: Any,
    out: str | os.PathLike,
    *,
    device: str | None = None,
    resume: bool = False,
    progress: bool = True,
    **settings: Any,
) -> Path:
    """Learn a distribution from the images in folder ``images`` and write it to ``out``; returns
    ``out``. ``model``: a diffusers model folder, hub id or loaded pipeline. ``settings``: any
    ``dreamdist.train.TrainConfig`` field (``steps=1500``, ``num_prompts=32``, ...; the paper's
    defaults otherwise). Interrupted runs continue with ``resume=True``."""
    result = _train(images, model, out, TrainConfig(**settings), device=device, resume=resume, progress=progress)
    return Path(result.out)
