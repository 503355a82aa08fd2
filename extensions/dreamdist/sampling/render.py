"""Rendering: prompt samples + seeded noise -> a diffusers pipeline -> PIL images.

Nothing here touches the file system except ``render_grid``'s optional preview PNG: run folders are
``run_folder``'s job, command-line runs ``commands``'.
"""

from __future__ import annotations

import inspect
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from dreamdist.core.distfile import DistributionFile, load_distribution
from dreamdist.core.distribution import PromptDistribution
from dreamdist.core.encoder import SoftPromptEncoder
from dreamdist.core.gaussian import standard_normal
from dreamdist.core.mixture import Sampleable
from dreamdist.core.runtime import encoder_of, load_pipeline, native_resolution, pick_device, resolve_dtype
from dreamdist.core.seeds import derived_seed
from dreamdist.sampling.grid import contact_sheet, labelled_grid
from dreamdist.utils.atomic import atomic_path
from dreamdist.utils.errors import InputError

# what a pipeline's __call__ must accept for dreamdist to drive it
_NEEDED = frozenset({"prompt_embeds", "negative_prompt_embeds", "latents"})


# --------------------------------------------------------------------------- seeds and noise


def latent_noise(shape: Sequence[int], seed: int) -> torch.Tensor:
    """Initial latent noise (C, h, w) for image ``seed``: float32, CPU, device-independent. Drawn
    from a derived seed: the seed itself would replay the prompt sample's own stream."""
    return standard_normal(shape, derived_seed(seed, "latents"))


def step_generator(seed: int) -> torch.Generator:
    """CPU generator for the scheduler's per-step noise (ancestral/SDE schedulers) of image ``seed``."""
    return torch.Generator(device="cpu").manual_seed(derived_seed(seed, "scheduler"))


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, eq=False)
class Shot:
    """One image to make: prompt sample ``gaussian`` at ``seed`` scaled by ``gamma``. ``name`` is its
    file name in a run folder, ``row``/``col``/``caption`` its place in the grid, ``params`` extra
    per-image metadata."""

    gaussian: Sampleable
    seed: int
    gamma: float = 1.0
    name: str = ""
    row: int = 0
    col: int = 0
    caption: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RenderSettings:
    """How each image is rendered (the same for every image of a run)."""

    steps: int = 50
    guidance_scale: float = 7.5
    negative: str = ""
    batch_size: int = 4
    height: int | None = None
    width: int | None = None

    def validate(self) -> None:
        """Refuse, in one line naming the flag, what the pipeline would fail on deep inside."""
        if self.steps < 1:
            raise InputError(f"--steps must be at least 1, not {self.steps}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, not {self.batch_size}")
        if not math.isfinite(self.guidance_scale):
            raise InputError(f"--guidance-scale must be a finite number, not {self.guidance_scale}")
        for name, value in (("height", self.height), ("width", self.width)):
            if value is not None and (value < 8 or value % 8):
                raise InputError(f"--{name} must be a positive multiple of 8, not {value}")


@dataclass
class RenderStats:
    """Where the time of the renders so far went (seconds)."""

    pipeline_s: float = 0.0
    calls: int = 0
    images: int = 0
    padded: int = 0


# --------------------------------------------------------------------------- the sampler


class Sampler:
    """A loaded diffusers pipeline that renders images from prompt samples.

    ``pipe`` is any pipeline whose call takes ``prompt_embeds``, ``negative_prompt_embeds`` and
    ``latents`` and that has ``tokenizer``/``text_encoder`` (SD 2.1 and 2.1-base out of the box).
    """

    def __init__(self, pipe: Any, model: str | os.PathLike | None = None) -> None:
        try:
            accepted = set(inspect.signature(pipe.__call__).parameters)
        except (TypeError, ValueError):  # some wrappers hide their signature: trust them
            accepted = set(_NEEDED)
        missing = _NEEDED - accepted
        if missing and "kwargs" not in accepted:
            raise InputError(
                f"{type(pipe).__name__} does not take {', '.join(sorted(missing))}; dreamdist needs a "
                "text-to-image pipeline that accepts prompt embeddings (e.g. StableDiffusionPipeline)"
            )
        self.pipe = pipe
        self._accepts_generator = "generator" in accepted or "kwargs" in accepted
        self.model = str(model if model is not None else getattr(pipe, "name_or_path", "") or type(pipe).__name__)
        self._encoder: SoftPromptEncoder | None = None
        self._negatives: dict[str, torch.Tensor] = {}
        self.stats = RenderStats()

    @classmethod
    def load(
        cls, model: str | os.PathLike, device: str | torch.device | None = None, precision: str = "auto"
    ) -> Sampler:
        """Load ``model`` (a diffusers folder or hub id) on ``device`` ("auto": CUDA if present) at
        ``precision`` ("auto": fp16 on CUDA, fp32 on CPU)."""
        dev = device if isinstance(device, torch.device) else pick_device(device)
        return cls(load_pipeline(model, dev, resolve_dtype(precision, dev)), model)

    # ---- properties of the pipeline

    @property
    def encoder(self) -> SoftPromptEncoder:
        """The pipeline's own text encoder, wrapped once: distributions must be bound to it."""
        if self._encoder is None:
            self._encoder = encoder_of(self.pipe)
        return self._encoder

    @property
    def device(self) -> torch.device:
        return torch.device(getattr(self.pipe, "_execution_device", None) or self.pipe.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.pipe.unet.dtype

    @property
    def vae_scale(self) -> int:
        return int(getattr(self.pipe, "vae_scale_factor", 8))

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.unet.config.in_channels)

    @property
    def feature_dim(self) -> int:
        return int(self.pipe.unet.config.cross_attention_dim)

    def image_size(self, height: int | None = None, width: int | None = None) -> tuple[int, int]:
        """(height, width) in pixels; the model's native size where not given."""
        native, _ = native_resolution(self.pipe)
        h = int(height) if height else native
        w = int(width) if width else native
        if h % 8 or w % 8 or h < 8 or w < 8:
            raise InputError(f"image size {h}x{w} must be positive multiples of 8")
        return h, w

    def distribution(
        self,
        files: Sequence[str | os.PathLike | DistributionFile],
        weights: Sequence[float] | None = None,
        mix_rule: str = "paper",
        std_scale: float | Sequence[float] | None = None,
    ) -> PromptDistribution:
        """Bind distribution files to this pipeline's text encoder (refusing another encoder's files);
        ``std_scale`` scales each file's sigma before the mix (one value, or one per file)."""
        loaded = [f if isinstance(f, DistributionFile) else load_distribution(f) for f in files]
        return PromptDistribution(loaded, self.encoder, weights, mix_rule, encoder_name=self.model, std_scale=std_scale)

    def negative_embeds(self, text: str = "") -> torch.Tensor:
        """(1, L, d) features of the negative prompt, encoded once per text."""
        if text not in self._negatives:
            with torch.no_grad():
                self._negatives[text] = self.encoder.encode_text([text]).to(self.device, self.dtype)
        return self._negatives[text]

    # ---- rendering

    def render(
        self, shots: Sequence[Shot], settings: RenderSettings = RenderSettings(), progress: bool = False
    ) -> Iterator[tuple[Shot, Any]]:
        """Yield ``(shot, PIL image)`` in order, ``settings.batch_size`` images per pipeline call.

        Every call runs exactly ``batch_size`` images (a short last batch is padded with copies of
        its last shot, discarded): kernels pick their blocking by batch shape, so an image depends
        on the batch size but never on its neighbours or on where the run started.
        """
        settings.validate()
        height, width = self.image_size(settings.height, settings.width)
        latent_shape = (self.latent_channels, height // self.vae_scale, width // self.vae_scale)
        size = settings.batch_size
        bar = tqdm(total=len(shots), unit="img", desc="sampling", disable=None if progress else True, leave=False)
        try:
            for start in range(0, len(shots), size):
                chunk = list(shots[start : start + size])
                images = self._call(chunk, size - len(chunk), latent_shape, settings, (height, width))
                yield from zip(chunk, images)
                bar.update(len(chunk))
        finally:
            bar.close()

    def _call(
        self,
        chunk: list[Shot],
        pad: int,
        latent_shape: tuple[int, int, int],
        settings: RenderSettings,
        size_hw: tuple[int, int],
    ) -> list:
        """One pipeline call for ``chunk`` padded with ``pad`` copies of its last shot."""
        prompts = self._prompt_batch(chunk)
        latents = torch.stack([latent_noise(latent_shape, s.seed) for s in chunk])
        if pad:
            prompts = torch.cat([prompts, prompts[-1:].expand(pad, -1, -1)])
            latents = torch.cat([latents, latents[-1:].expand(pad, -1, -1, -1)])
        kwargs: dict[str, Any] = dict(
            prompt_embeds=prompts,
            negative_prompt_embeds=self.negative_embeds(settings.negative).expand(len(chunk) + pad, -1, -1),
            latents=latents.to(self.device, self.dtype),
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            height=size_hw[0],
            width=size_hw[1],
            output_type="pil",
        )
        if self._accepts_generator:
            kwargs["generator"] = [step_generator(s.seed) for s in chunk + [chunk[-1]] * pad]
        began = time.perf_counter()
        images = self.pipe(**kwargs).images
        self.stats.pipeline_s += time.perf_counter() - began
        self.stats.calls += 1
        self.stats.images += len(chunk)
        self.stats.padded += pad
        return images

    def _prompt_batch(self, shots: Sequence[Shot]) -> torch.Tensor:
        rows = []
        for shot in shots:
            g = shot.gaussian
            if g.shape[-1] != self.feature_dim:
                raise InputError(
                    f"prompt features have {g.shape[-1]} channels but the UNet cross-attends to "
                    f"{self.feature_dim}; the distribution belongs to another text encoder"
                )
            rows.append(g.sample_seeds([shot.seed], shot.gamma))  # the core's one sampling path
        return torch.cat(rows).to(self.device, self.dtype)

    def images(
        self,
        gaussian: Sampleable,
        seeds: Sequence[int],
        gamma: float = 1.0,
        settings: RenderSettings = RenderSettings(),
        progress: bool = False,
    ) -> list:
        """One PIL image per seed from ``gaussian`` (mu + gamma * w(seed) * sigma)."""
        gaussian = gaussian.detach()
        return [im for _, im in self.render([Shot(gaussian, int(s), float(gamma)) for s in seeds], settings, progress)]


def render_grid(
    pipe_or_model: Any,
    gaussian: Sampleable,
    seeds: Sequence[int],
    gamma: float | Sequence[float] = 1.0,
    steps: int = 25,
    guidance_scale: float = 7.5,
    out_png: str | os.PathLike | None = None,
    *,
    negative: str = "",
    batch_size: int = 4,
    height: int | None = None,
    width: int | None = None,
    cols: int | None = None,
    title: str | None = None,
    device: str | None = None,
    precision: str = "auto",
):
    """Preview a Gaussian (e.g. mid-training): one image per seed, as a captioned grid.

    ``pipe_or_model``: a diffusers pipeline, a ``Sampler``, or a model folder/hub id (loaded here on
    ``device``/``precision``). ``gamma`` may be a list: then rows are gammas, columns seeds (the same
    seeds in every row). Writes ``out_png`` atomically when given; returns the grid as a PIL image.
    Runs under ``torch.no_grad``; ``gaussian`` is detached, so training graphs are untouched.
    """
    if isinstance(pipe_or_model, Sampler):
        sampler = pipe_or_model
    elif isinstance(pipe_or_model, (str, os.PathLike)):
        sampler = Sampler.load(pipe_or_model, device, precision)
    else:
        sampler = Sampler(pipe_or_model)
    settings = RenderSettings(steps, guidance_scale, negative, batch_size, height, width)
    gaussian = gaussian.detach()
    seeds = [int(s) for s in seeds]
    gammas = [float(gamma)] if isinstance(gamma, (int, float)) else [float(g) for g in gamma]
    shots = [Shot(gaussian, s, g, row=r, col=c) for r, g in enumerate(gammas) for c, s in enumerate(seeds)]
    with torch.no_grad():
        images = [im for _, im in sampler.render(shots, settings)]
    if len(gammas) == 1:
        sheet = contact_sheet(images, [f"seed {s}" for s in seeds], cols=cols, title=title)
    else:
        rows = [images[r * len(seeds) : (r + 1) * len(seeds)] for r in range(len(gammas))]
        sheet = labelled_grid(rows, [f"gamma {g:g}" for g in gammas], [f"seed {s}" for s in seeds], title=title)
    if out_png is not None:
        with atomic_path(out_png) as tmp:
            sheet.save(tmp, format="PNG")
    return sheet
