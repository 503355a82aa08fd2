"""The frozen diffusion model as training sees it: loaded without unused parts, never trained.

Owns what depends on the model rather than on the method: device and precision, the noise
scheduler and its prediction target, the native resolution, the VAE latents of the reference
images and the text encoder's fingerprint.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from typing import Any, Iterator

import torch

from dreamdist.core.distfile import Fingerprint
from dreamdist.core.encoder import SoftPromptEncoder
from dreamdist.core.runtime import load_pipeline, native_resolution, pick_device, precision_name, resolve_dtype
from dreamdist.train.config import SettingError
from dreamdist.train.outcome import TrainingDiverged
from dreamdist.utils.compat import autocast
from dreamdist.utils.errors import InputError

VAE_CHUNK = 8  # the most images per VAE encoder call while caching latents (the memory plan may use fewer)
PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def resolve_precision(device: str | torch.device | None, precision: str) -> tuple[torch.device, torch.dtype]:
    """The device and weight dtype of a run; "auto" on CUDA is bf16 where supported (no loss scaling
    needed), else fp16."""
    dev = device if isinstance(device, torch.device) else pick_device(device)
    auto_cuda = "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp16"
    return dev, resolve_dtype(precision, dev, auto_cuda=auto_cuda)


def run_device(model: Any, device: str | torch.device | None, precision: str) -> tuple[torch.device, torch.dtype]:
    """Where and at which dtype ``FrozenModel.load`` will run ``model``: a folder or hub id on
    ``device`` at ``precision``; a loaded pipeline where it is, at its UNet's dtype."""
    dev, dtype = resolve_precision(device, precision)  # checked even for a loaded pipeline
    if isinstance(model, (str, os.PathLike)):
        return dev, dtype
    return torch.device(getattr(model, "device", dev)), model.unet.dtype


def check_resolution(requested: int | None, native: int, multiple: int) -> int:
    """``requested`` or the model's ``native`` resolution, refused unless a multiple of ``multiple``
    (one latent pixel per UNet down-sampling)."""
    resolution = int(requested or native)
    if resolution % multiple:
        raise SettingError(
            "resolution",
            f"{{name}} {resolution} must be a multiple of {multiple} for this "
            f"model (its native resolution is {native})",
        )
    return resolution


class FrozenModel:
    """A Stable-Diffusion-style pipeline prepared for training soft prompts: every weight frozen,
    a DDPM scheduler for the forward process, the text encoder wrapped for soft prompts."""

    def __init__(self, pipe: Any, name: str, device: torch.device, dtype: torch.dtype) -> None:
        from diffusers import DDPMScheduler  # here: importing diffusers costs seconds; --help stays fast

        for part in PARTS:
            if getattr(pipe, part, None) is None:
                raise InputError(
                    f"model {name!r} has no {part}; dreamdist trains on Stable-Diffusion-style "
                    "text-to-image pipelines (e.g. stabilityai/stable-diffusion-2-1)"
                )
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            module.requires_grad_(False).eval()
        self.pipe = pipe
        self.name = name
        self.device = device
        self.dtype = dtype
        self.encoder = SoftPromptEncoder(pipe.tokenizer, pipe.text_encoder)
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.prediction_type: str = self.noise_scheduler.config.prediction_type
        if self.prediction_type not in PREDICTION_TYPES:
            raise InputError(
                f"model {name!r}: unsupported prediction_type {self.prediction_type!r} "
                "(dreamdist trains epsilon, v_prediction and sample models)"
            )
        vae_config = pipe.vae.config
        self._scaling = float(getattr(vae_config, "scaling_factor", 1.0) or 1.0)
        self._shift = float(getattr(vae_config, "shift_factor", 0.0) or 0.0)

    @classmethod
    def load(
        cls, model: Any, device: str | torch.device | None, precision: str, name: str | None = None
    ) -> "FrozenModel":
        """``model``: a diffusers folder or hub id (loaded on ``device`` at ``precision``), or an
        already loaded pipeline (used as is: its device and dtype; its weights are never changed)."""
        dev, dtype = run_device(model, device, precision)
        if isinstance(model, (str, os.PathLike)):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning)
                pipe = load_pipeline(model, dev, dtype)
            return cls(pipe, name or str(model), dev, dtype)
        default = str(
            getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "") or type(model).__name__
        )
        return cls(model, name or default, dev, dtype)

    @property
    def precision(self) -> str:
        return precision_name(self.dtype)

    @functools.cached_property
    def fingerprint(self) -> Fingerprint:
        """Computed once: the text encoder is frozen, and hashing its embedding table is not free."""
        return Fingerprint.of(self.pipe.text_encoder)

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device.type, self.dtype)

    def training_resolution(self, requested: int | None) -> int:
        """``requested`` or the model's native resolution; it must suit the UNet's down-sampling."""
        return check_resolution(requested, *native_resolution(self.pipe))

    @property
    def vae_scale(self) -> int:
        return int(self.pipe.vae_scale_factor)

    @torch.no_grad()
    def encode_latents(self, pixels: torch.Tensor, batch: int = VAE_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std (N, C, h, w) of the VAE latent distribution of each image, float32 on the
        device, ``batch`` images per VAE call: computed once, a latent is drawn from them per step."""
        vae = self.pipe.vae
        means, stds = [], []
        for start in range(0, pixels.shape[0], batch):
            chunk = pixels[start : start + batch].to(self.device, vae.dtype)
            with self.autocast():
                dist = vae.encode(chunk).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
        mean, std = torch.cat(means), torch.cat(stds)
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise TrainingDiverged(
                f"the VAE produced NaN/inf latents at {self.precision}; try --precision fp32 or bf16"
            )
        return mean, std

    def scaled_latents(self, mean: torch.Tensor, std: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """A draw from the cached latent distributions, in the UNet's latent scale."""
        latents = (mean + std * eps) * self._scaling
        if self._shift:
            latents = latents - self._shift * self._scaling
        return latents

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the UNet should predict, per the scheduler's ``prediction_type``."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, timesteps)
        return latents

    @contextlib.contextmanager
    def unet_checkpointing(self, enabled: bool) -> Iterator[None]:
        """Gradient checkpointing of the UNet for the block, then as it was (a caller's pipeline is
        left as it was given). diffusers < 0.20 (threestudio's 0.19.3) checkpoints only in training
        mode, so the UNet is put in it meanwhile: a Stable Diffusion UNet has no dropout or batch
        norm, so its outputs are the same in either mode."""
        unet = self.pipe.unet
        switch = enabled and not getattr(unet, "is_gradient_checkpointing", False)
        training = unet.training
        if switch:
            unet.enable_gradient_checkpointing()
        if enabled:
            unet.train()
        try:
            yield
        finally:
            if switch:
                unet.disable_gradient_checkpointing()
            unet.train(training)
