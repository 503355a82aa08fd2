"""Train a prompt distribution from reference images (DreamDistribution, Zhao et al. 2023, sec. 3).

K soft prompts of M learned token vectors go through the frozen CLIP text encoder; their features
give a per-position, per-channel Gaussian (mu, sigma over the K prompts). Each step, for each of the
B images of the batch, S reparameterised samples c_s = mu + w_s * sigma condition the frozen UNet on
the same noisy latent; the loss is the mean diffusion loss over the B x S predictions (target from
the scheduler's ``prediction_type``: epsilon, v-prediction or sample) plus ``ortho_weight`` times
the orthogonality loss of the K prompts' pooled features. Only ``ctx`` (K, M, d_tok) is trained,
with AdamW at a constant learning rate.

Speed. The frozen parts never hold a gradient and are never recomputed needlessly: the VAE encodes
every image and its mirror image once, before the first step (the latent distribution's mean and
std are cached, a latent is drawn from them per step); the text encoder runs once per step on the K
prompts; the B x S UNet evaluations of a step are one batch. No vision encoder or safety checker is
loaded.

Reproducibility. Every random draw (batch order, flips, timesteps, noise, latent samples, prompt
samples w) comes from one CPU ``torch.Generator`` seeded with ``config.seed``; checkpoints hold it
with the optimizer state, so on CPU an interrupted and resumed run ends bit-identical to an
uninterrupted one.

Files, for ``--out dist.safetensors``: ``dist.ckpt`` (latest checkpoint, atomic), ``dist.log.csv``
(losses per step), ``dist.previews/step-000100.png`` (optional preview grids). Nothing is written
before every input has been checked.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from dreamdist.atomic import atomic_path, atomic_write_text
from dreamdist.compat import autocast, grad_scaler
from dreamdist.distfile import DistributionFile, Fingerprint, file_sha256, save_distribution
from dreamdist.encoder import SoftPromptEncoder
from dreamdist.errors import DreamdistError, InputError
from dreamdist.gaussian import FeatureGaussian
from dreamdist.images import ReferenceImages, check_reference_folder, load_reference_images
from dreamdist.losses import ortho_loss
from dreamdist.prompts import PromptSet
from dreamdist.runtime import native_resolution, precision_name
from dreamdist.seeds import derived_seed
from dreamdist.templates import Template

CHECKPOINT_FORMAT = "dreamdist.train-checkpoint"
CHECKPOINT_VERSION = 1
ORTHO_KINDS = ("abs", "squared")
CSV_COLUMNS = ("step", "loss", "diffusion_loss", "ortho_loss", "grad_norm", "lr", "elapsed_s")
VAE_CHUNK = 8  # images per VAE encoder call while caching latents

# Settings that define the optimisation: a checkpoint only resumes a run with the same values.
_RESUME_KEYS = ("num_prompts", "num_tokens", "samples", "ortho_weight", "ortho_kind", "lr", "batch_size",
                "weight_decay", "max_grad_norm", "template", "resolution", "flip", "seed")


class TrainingDiverged(DreamdistError):
    """The loss (or the gradient) became NaN or inf; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM (or a callback's KeyboardInterrupt) stopped training after a complete step;
    a checkpoint was written when checkpoints are on. ``--resume`` continues from it."""

    def __init__(self, step: int, checkpoint: Path | None, signal_name: str = "SIGINT") -> None:
        self.step = step
        self.checkpoint = checkpoint
        self.signal_name = signal_name
        where = f"checkpoint saved to {checkpoint}; continue with --resume" if checkpoint else "no checkpoint (checkpoints are off)"
        super().__init__(f"interrupted ({signal_name}) after step {step}: {where}")


class PreviewWarning(UserWarning):
    """A preview grid could not be rendered; training goes on."""


# --------------------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Training settings; the defaults are the paper's (K, M, S, lambda, steps, lr) and its reference
    script's (batch size 4, AdamW with weight decay 1e-2, gradient clipping at norm 1)."""

    num_prompts: int = 32  # K
    num_tokens: int = 8  # M (the paper's quantitative study uses 4)
    samples: int = 4  # S reparameterised samples per image
    ortho_weight: float = 5e-3  # lambda
    ortho_kind: str = "abs"  # "abs" = paper eq. 5 (|cos|), "squared" = reference code (cos^2)
    steps: int = 1500
    lr: float = 1e-3  # constant
    batch_size: int = 4
    weight_decay: float = 1e-2  # AdamW, as the reference script
    max_grad_norm: float = 1.0  # gradient clipping as the reference script; 0 turns it off
    template: str = "{}"  # training template; "{}" = the learned vectors alone
    resolution: int | None = None  # default: the model's native resolution
    flip: bool = True  # horizontal-flip augmentation
    seed: int = 0
    precision: str = "auto"  # auto: fp32 on CPU, bf16 (fp16 without bf16 support) on CUDA
    gradient_checkpointing: bool = False  # of the frozen UNet: less memory, ~30% slower
    checkpoint_every: int = 100  # steps; 0 = only on interrupt and at the end
    preview_every: int = 0  # steps; 0 = no previews
    preview_count: int = 4  # images per preview grid (seeds 0..n-1)
    preview_steps: int = 25  # denoising steps of preview images

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise InputError(msg)

        need(self.num_prompts >= 1, f"--num-prompts must be at least 1 (the paper uses 32), not {self.num_prompts}")
        if self.num_prompts == 1:
            warnings.warn("--num-prompts 1 learns a single prompt (sigma = 0, no orthogonality loss): a "
                          "textual-inversion-like baseline, not a distribution; the paper uses 32", stacklevel=3)
        need(self.num_tokens >= 1, f"--num-tokens must be at least 1, not {self.num_tokens}")
        need(self.samples >= 1, f"--samples must be at least 1, not {self.samples}")
        need(self.steps >= 1, f"--steps must be at least 1, not {self.steps}")
        need(self.batch_size >= 1, f"--batch-size must be at least 1, not {self.batch_size}")
        need(math.isfinite(self.lr) and self.lr > 0, f"--lr must be a positive number, not {self.lr}")
        need(math.isfinite(self.ortho_weight) and self.ortho_weight >= 0,
             f"--ortho-weight must be >= 0, not {self.ortho_weight}")
        need(self.ortho_kind in ORTHO_KINDS, f"--ortho-kind must be one of {', '.join(ORTHO_KINDS)}, "
             f"not {self.ortho_kind!r}")
        need(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"--weight-decay must be >= 0, not {self.weight_decay}")
        need(math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0,
             f"--max-grad-norm must be >= 0 (0 = off), not {self.max_grad_norm}")
        need(self.resolution is None or self.resolution >= 8,
             f"--resolution must be at least 8 pixels, not {self.resolution}")
        need(self.checkpoint_every >= 0, f"--checkpoint-every must be >= 0, not {self.checkpoint_every}")
        need(self.preview_every >= 0, f"--preview-every must be >= 0, not {self.preview_every}")
        need(self.preview_count >= 1, f"--preview-count must be at least 1, not {self.preview_count}")
        need(self.preview_steps >= 1, f"--preview-steps must be at least 1, not {self.preview_steps}")
        need(0 <= self.seed < 2**63, f"--seed must be in [0, 2^63), not {self.seed}")
        Template.parse(self.template)  # TemplateError names the problem

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class StepInfo:
    """What a step did, handed to ``callback`` after the step is complete."""

    step: int
    total_steps: int
    loss: float
    diffusion_loss: float
    ortho_loss: float
    grad_norm: float
    elapsed_s: float


@dataclass
class TrainResult:
    out: Path | None  # the distribution file; None when this run stopped before the last step
    checkpoint: Path | None
    log_csv: Path | None
    step: int  # steps done in total (resumed ones included)
    total_steps: int
    finished: bool
    image_count: int
    resumed_from: int  # 0 for a fresh run
    diffusion_losses: list[float] = field(default_factory=list)  # this run's steps only
    ortho_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    vae_images_encoded: int = 0
    previews: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def default_paths(out: str | os.PathLike) -> dict[str, Path]:
    """Where checkpoint, log and previews of ``out`` go by default (beside it)."""
    out = Path(out)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return {
        "checkpoint": out.with_name(f"{stem}.ckpt"),
        "log_csv": out.with_name(f"{stem}.log.csv"),
        "preview_dir": out.with_name(f"{stem}.previews"),
    }


# --------------------------------------------------------------------------- helpers


def _resolve(device: str | torch.device | None, precision: str) -> tuple[torch.device, torch.dtype]:
    from dreamdist.runtime import pick_device, resolve_dtype

    dev = device if isinstance(device, torch.device) else pick_device(device)
    auto_cuda = "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp16"
    return dev, resolve_dtype(precision, dev, auto_cuda=auto_cuda)


def _use_sdpa(unet) -> None:
    """Make sure the UNet attends with torch's scaled_dot_product_attention (the default in recent
    diffusers; older configurations may have set the plain processor)."""
    try:
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
    except ImportError:  # pragma: no cover - very old diffusers
        return
    if not hasattr(F, "scaled_dot_product_attention"):
        return
    processors = getattr(unet, "attn_processors", {})
    if any(type(p) is AttnProcessor for p in processors.values()):
        unet.set_attn_processor(AttnProcessor2_0())


class _StopRequest:
    """SIGINT / SIGTERM handlers that ask the loop to stop after the current step. A second Ctrl-C
    aborts at once (no checkpoint of the half-done step). Installed only in the main thread."""

    def __init__(self, notify: Callable[[str], None]) -> None:
        self.signal_name: str | None = None
        self._notify = notify
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        name = signal.Signals(signum).name
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = name
        self._notify(f"{name}: stopping after this step and saving a checkpoint"
                     f"{' (Ctrl-C again to abort without saving)' if signum == signal.SIGINT else ''}")

    @contextlib.contextmanager
    def installed(self) -> Iterator["_StopRequest"]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except (ValueError, OSError):  # pragma: no cover - exotic embedders
                pass
        try:
            yield self
        finally:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)


# --------------------------------------------------------------------------- the trainer


class Trainer:
    """One training run. Construction checks every input (and writes nothing); ``run`` trains.

    ``model``: a diffusers model folder or hub id (loaded here without safety checker or other
    unused models), or an already loaded pipeline (used as is: its device and dtype; its weights
    are never changed). ``log``: a function receiving one-line status messages.
    """

    def __init__(
        self,
        images_dir: str | os.PathLike,
        model: Any,
        out: str | os.PathLike,
        config: TrainConfig | None = None,
        *,
        device: str | torch.device | None = None,
        resume: bool = False,
        overwrite: bool = False,
        checkpoint: str | os.PathLike | None | bool = None,
        log_csv: str | os.PathLike | None | bool = None,
        preview_dir: str | os.PathLike | None = None,
        progress: bool = True,
        callback: Callable[[StepInfo], None] | None = None,
        log: Callable[[str], None] | None = None,
        model_name: str | None = None,
    ) -> None:
        self.config = config = config if config is not None else TrainConfig()
        config.validate()
        self.out = Path(out)
        defaults = default_paths(self.out)
        self.checkpoint_path = (None if checkpoint is False else
                                Path(defaults["checkpoint"] if checkpoint in (None, True) else checkpoint))
        self.log_csv = None if log_csv is False else Path(defaults["log_csv"] if log_csv in (None, True) else log_csv)
        self.preview_dir = Path(preview_dir or defaults["preview_dir"])
        self.progress = progress
        self.callback = callback
        self._log = log or (lambda msg: None)
        self._has_log = log is not None
        self.resume = resume
        self.warnings: list[str] = []
        self.clock: Callable[[], float] = time.perf_counter  # for profiled phase times (bench: process_time)

        # 1. paths: refuse to clobber anything, before any expensive work
        if self.out.is_dir():
            raise InputError(f"--out {self.out} is a folder; give a file name such as {self.out / 'dist.safetensors'}")
        if self.out.exists() and not overwrite:
            raise InputError(f"{self.out} exists; pass --force to overwrite it, or choose another --out")
        if self.checkpoint_path is not None and self.checkpoint_path.resolve() == self.out.resolve():
            raise InputError(f"--checkpoint {self.checkpoint_path} is the --out file; give the checkpoint another name")
        if resume and (self.checkpoint_path is None or not self.checkpoint_path.is_file()):
            raise InputError(f"--resume: no checkpoint at {self.checkpoint_path}; run without --resume to start "
                             "a new training run")
        if not resume and self.checkpoint_path is not None and self.checkpoint_path.exists() and not overwrite:
            raise InputError(f"{self.checkpoint_path}: a checkpoint of an earlier run exists; pass --resume to "
                             "continue it, or --force to start over")

        # 2. images: list and decode everything once (cheap errors before loading a model)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.image_paths = check_reference_folder(images_dir)
        self._rewarn(caught)

        # 3. model
        self.device, self.dtype = _resolve(device, config.precision)
        if isinstance(model, (str, os.PathLike)):
            from dreamdist.runtime import load_pipeline

            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning)
                self.pipe = load_pipeline(model, self.device, self.dtype)
            self.model_name = model_name or str(model)
        else:
            self.pipe = model
            self.device = torch.device(getattr(model, "device", self.device))
            self.dtype = model.unet.dtype
            self.model_name = model_name or str(getattr(model, "name_or_path", "") or
                                                getattr(model.config, "_name_or_path", "") or type(model).__name__)
        pipe = self.pipe
        for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            if getattr(pipe, part, None) is None:
                raise InputError(f"model {self.model_name!r} has no {part}; dreamdist trains on Stable-Diffusion-style "
                                 "text-to-image pipelines (e.g. stabilityai/stable-diffusion-2-1)")
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            module.requires_grad_(False).eval()
        self.encoder = SoftPromptEncoder(pipe.tokenizer, pipe.text_encoder)
        self.template = Template.parse(config.template)
        self.layout = self.encoder.layout(self.template, config.num_tokens)  # TemplateError if it does not fit

        from diffusers import DDPMScheduler

        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.prediction_type = self.noise_scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise InputError(f"model {self.model_name!r}: unsupported prediction_type {self.prediction_type!r} "
                             "(dreamdist trains epsilon, v_prediction and sample models)")
        native, multiple = native_resolution(pipe)
        self.resolution = int(config.resolution or native)
        if self.resolution % multiple:
            raise InputError(f"--resolution {self.resolution} must be a multiple of {multiple} for this model "
                             f"(its native resolution is {native})")

        # 4. resume state (checked against this run's settings before anything is written)
        self._state: dict[str, Any] | None = None
        if resume:
            self._state = self._read_checkpoint(self.checkpoint_path)

        # 5. images at the training resolution
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.images: ReferenceImages = load_reference_images(images_dir, self.resolution, self.image_paths)
        self._rewarn(caught)
        if self._state is not None:
            self._check_images(self._state)

    # ---- small helpers

    def _rewarn(self, caught) -> None:
        for w in caught:
            self.warnings.append(str(w.message))
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def _resume_settings(self) -> dict[str, Any]:
        values = self.config.to_dict()
        values["resolution"] = self.resolution
        values["template"] = str(self.template)
        settings = {k: values[k] for k in _RESUME_KEYS}
        settings["precision"] = precision_name(self.dtype)
        return settings

    def _image_ids(self) -> list[list[str]]:
        return [[p.name, file_sha256(p)] for p in self.image_paths]

    def _read_checkpoint(self, path: Path) -> dict[str, Any]:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line answer
            raise InputError(f"{path}: not a readable training checkpoint ({type(exc).__name__}); "
                             "run with --force to start over") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise InputError(f"{path}: not a dreamdist training checkpoint; run with --force to start over")
        if int(state.get("version", 0)) > CHECKPOINT_VERSION:
            raise InputError(f"{path}: checkpoint version {state['version']} is newer than this dreamdist; upgrade it")
        try:
            theirs = json.loads(state["settings"])
            for key in ("step", "ctx", "optimizer", "generator", "queue", "images", "fingerprint",
                        "fingerprint_probe", "elapsed_s"):
                state[key]  # noqa: B018 - presence check
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: damaged training checkpoint; run with --force to start over") from None
        ours = self._resume_settings()
        differ = [f"{k}: checkpoint {theirs.get(k)!r}, now {ours[k]!r}" for k in ours if theirs.get(k) != ours[k]]
        if differ:
            raise InputError(f"{path}: cannot resume with different settings ({'; '.join(differ)}); use the "
                             "checkpoint's settings, or --force to start over")
        fp = json.loads(state["fingerprint"])
        fingerprint = Fingerprint(fp["hidden_size"], fp["vocab_size"], fp["sha256"], state["fingerprint_probe"])
        if not fingerprint.matches(Fingerprint.of(self.pipe.text_encoder)):
            raise InputError(f"{path}: the checkpoint was trained with another text encoder than {self.model_name!r}; "
                             "resume with the same --model")
        if int(state["step"]) > self.config.steps:
            raise InputError(f"{path}: the checkpoint is at step {state['step']}, past --steps {self.config.steps}")
        return state

    def _check_images(self, state: dict[str, Any]) -> None:
        if json.loads(state["images"]) != self._image_ids():
            raise InputError(f"{self.checkpoint_path}: the reference images changed since the checkpoint was "
                             "written; resume with the same images, or --force to start over")

    # ---- latents

    @torch.no_grad()
    def _cache_latents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std (2N, C, h, w) of the VAE latent distribution of every image and its flip,
        computed once (float32, on the device)."""
        vae = self.pipe.vae
        pixels = self.images.with_flips() if self.config.flip else self.images.pixels
        means, stds = [], []
        for start in range(0, pixels.shape[0], VAE_CHUNK):
            chunk = pixels[start:start + VAE_CHUNK].to(self.device, vae.dtype)
            with self._autocast():
                dist = vae.encode(chunk).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
        self.vae_images_encoded = int(pixels.shape[0])
        mean, std = torch.cat(means), torch.cat(stds)
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise TrainingDiverged(f"the VAE produced NaN/inf latents at {precision_name(self.dtype)}; "
                                   "try --precision fp32 or bf16")
        return mean, std

    def _autocast(self):
        return autocast(self.device.type, self.dtype)

    # ---- one step

    def _draw(self) -> dict[str, torch.Tensor]:
        """Every random number of a step, from the run's CPU generator, in a fixed order."""
        cfg, g = self.config, self.generator
        b = cfg.batch_size
        while self._queue.numel() < b:  # epochs: each image once per pass, in a fresh random order
            self._queue = torch.cat([self._queue, torch.randperm(len(self.images), generator=g)])
        index, self._queue = self._queue[:b], self._queue[b:]
        if cfg.flip:
            index = index + len(self.images) * torch.randint(0, 2, (b,), generator=g)
        c, h, w = self._lat_shape
        seq, dim = self.layout.input_ids.shape[0], self.encoder.hidden_size
        return {
            "index": index,
            "timesteps": torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (b,), generator=g),
            "noise": torch.randn((b, c, h, w), generator=g),
            "latent_eps": torch.randn((b, c, h, w), generator=g),
            "w": torch.randn((b, cfg.samples, seq, dim), generator=g),
        }

    def _sync(self) -> None:
        if self.profile and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward + backward of one step (no optimizer update). Returns detached (loss, diffusion loss,
        ortho loss) and a 0-dim tensor that is 1 when the loss is finite. Phase times go to ``timings``
        when ``profile`` is on."""
        cfg, dev = self.config, self.device
        unet, sched = self.pipe.unet, self.noise_scheduler
        draws = self._draw()
        b, s = cfg.batch_size, cfg.samples
        clock = self.clock
        t0 = clock()

        # text encoder: K prompts -> Gaussian -> B x S reparameterised samples (graph back to ctx)
        with self._autocast():
            encoded = self.encoder.encode_soft(self.prompts.ctx, self.template)
        gaussian = FeatureGaussian.fit(encoded.features.float())
        cond = gaussian.apply(draws["w"].to(dev, non_blocking=True))  # (B, S, L, d) float32
        ortho = ortho_loss(encoded.pooled, cfg.ortho_kind)
        self._sync()
        t1 = clock()

        # UNet: the B x S evaluations as one batch; the S samples of image b share its noisy latent
        index = draws["index"].to(dev)
        eps = draws["latent_eps"].to(dev, non_blocking=True)
        latents = (self._mean[index] + self._std[index] * eps) * self._scaling
        if self._shift:
            latents = latents - self._shift * self._scaling
        noise = draws["noise"].to(dev, non_blocking=True)
        timesteps = draws["timesteps"].to(dev)
        noisy = sched.add_noise(latents, noise, timesteps)
        if self.prediction_type == "epsilon":
            target = noise
        elif self.prediction_type == "v_prediction":
            target = sched.get_velocity(latents, noise, timesteps)
        else:
            target = latents
        cond_leaf = cond.detach().reshape(b * s, *cond.shape[2:]).requires_grad_(True)
        model_in = noisy.unsqueeze(1).expand(b, s, *noisy.shape[1:]).reshape(b * s, *noisy.shape[1:])
        with self._autocast():
            pred = unet(model_in.to(unet.dtype), timesteps.repeat_interleave(s),
                        encoder_hidden_states=cond_leaf.to(unet.dtype)).sample
        pred = pred.float().reshape(b, s, *pred.shape[1:])
        diffusion = F.mse_loss(pred, target.float().unsqueeze(1).expand_as(pred))  # mean over B, S, pixels
        self._sync()
        t2 = clock()

        # backward: UNet to the samples' features, then the text encoder to ctx (one graph each)
        scaler = self.scaler  # fp16 only: loss scaling against gradient underflow
        (scaler.scale(diffusion) if scaler is not None else diffusion).backward()
        self._sync()
        t3 = clock()
        weighted_ortho = cfg.ortho_weight * ortho
        torch.autograd.backward(  # cond_leaf.grad is already scaled like the diffusion loss
            [cond, scaler.scale(weighted_ortho) if scaler is not None else weighted_ortho],
            [cond_leaf.grad.reshape(cond.shape), None],
        )
        self._sync()
        t4 = clock()
        if self.profile:
            for key, value in (("text_fwd", t1 - t0), ("unet_fwd", t2 - t1), ("unet_bwd", t3 - t2),
                               ("text_bwd", t4 - t3)):
                self.timings.setdefault(key, []).append(value)
        loss = diffusion.detach() + weighted_ortho.detach()
        return loss, diffusion.detach(), ortho.detach(), torch.isfinite(loss)

    # ---- checkpoints, logs, previews

    def _write_checkpoint(self, step: int, elapsed: float) -> Path | None:
        if self.checkpoint_path is None:
            return None
        if not torch.isfinite(self.prompts.ctx).all():  # never replace a good checkpoint with a bad one
            return None
        fingerprint = Fingerprint.of(self.pipe.text_encoder)
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "step": step,
            "ctx": self.prompts.ctx.detach().to("cpu", torch.float32).clone(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "generator": self.generator.get_state(),
            "queue": self._queue.clone(),
            "settings": json.dumps(self._resume_settings(), sort_keys=True),
            "images": json.dumps(self._image_ids()),
            "fingerprint": fingerprint.to_json(),
            "fingerprint_probe": fingerprint.probe,
            "elapsed_s": float(elapsed),
            "last_loss": float(self._last_loss),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        with atomic_path(self.checkpoint_path) as tmp:
            tmp.write_bytes(buffer.getvalue())
        self._checkpoint_step = step
        return self.checkpoint_path

    def _open_csv(self, resumed_step: int):
        if self.log_csv is None:
            return None
        rows: list[list[str]] = []
        if resumed_step and self.log_csv.is_file():  # keep the rows up to the checkpoint, drop the rest
            with open(self.log_csv, newline="") as f:
                reader = csv.reader(f)
                for row in reader:
                    if row and row[0].isdigit() and int(row[0]) <= resumed_step:
                        rows.append(row)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
        atomic_write_text(self.log_csv, text.getvalue())
        handle = open(self.log_csv, "a", newline="")
        return handle, csv.writer(handle, lineterminator="\n")

    def _gaussian_now(self) -> FeatureGaussian:
        with torch.no_grad(), self._autocast():
            features = self.encoder.encode_soft(self.prompts.ctx, self.template).features
        return FeatureGaussian.fit(features.float())

    def _preview(self, step: int) -> Path | None:
        try:
            from dreamdist.sampling import render_grid
        except ImportError:
            if not self._preview_skipped:
                self._log("previews skipped: the 2D sampler (dreamdist.sampling.render_grid) is not available")
                self._preview_skipped = True
            return None
        path = self.preview_dir / f"step-{step:06d}.png"
        cfg = self.config
        try:
            render_grid(self.pipe, self._gaussian_now(), list(range(cfg.preview_count)), 1.0, cfg.preview_steps,
                        out_png=path, height=self.resolution, width=self.resolution, title=f"step {step}")
        except Exception as exc:  # noqa: BLE001 - a failed preview must not end a long run
            warnings.warn(f"preview at step {step} failed: {type(exc).__name__}: {exc}", PreviewWarning, stacklevel=2)
            return None
        return path

    def _final_file(self, step: int, elapsed: float) -> Path:
        cfg = self.config
        training = cfg.to_dict()
        training.update(
            resolution=self.resolution,
            template=str(self.template),
            steps_done=step,
            prediction_type=self.prediction_type,
            precision=precision_name(self.dtype),
            device=self.device.type,
            optimizer="AdamW",
            lr_schedule="constant",
            seconds=round(elapsed, 1),
            final_loss=self._last_loss,
            images=[p.name for p in self.image_paths],
        )
        for key in ("preview_every", "preview_count", "preview_steps", "checkpoint_every"):
            training.pop(key, None)
        dist = DistributionFile(
            ctx=self.prompts.ctx.detach().to("cpu", torch.float32).clone(),
            base_model=self.model_name,
            fingerprint=Fingerprint.of(self.pipe.text_encoder),
            template=str(self.template),
            training=training,
            image_count=len(self.images),
        )
        return save_distribution(self.out, dist)

    # ---- the loop

    def run(self, max_steps_this_run: int | None = None, profile: bool = False) -> TrainResult:
        """Train to ``config.steps`` (or stop after ``max_steps_this_run`` steps of this run, with a
        checkpoint). Raises ``TrainingInterrupted`` on Ctrl-C/SIGTERM (after checkpointing) and
        ``TrainingDiverged`` on a NaN/inf loss (keeping the last good checkpoint)."""
        from tqdm.auto import tqdm

        cfg = self.config
        self.profile = profile
        self.timings: dict[str, list[float]] = {}
        self._preview_skipped = False
        self._last_loss = float("nan")
        self._checkpoint_step = 0
        pipe = self.pipe
        vae_cfg = pipe.vae.config
        self._scaling = float(getattr(vae_cfg, "scaling_factor", 1.0) or 1.0)
        self._shift = float(getattr(vae_cfg, "shift_factor", 0.0) or 0.0)

        # state: fresh or from the checkpoint
        self.prompts = PromptSet(cfg.num_prompts, cfg.num_tokens, self.encoder.token_dim, seed=cfg.seed).to(self.device)
        self.optimizer = torch.optim.AdamW(self.prompts.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = grad_scaler(self.device.type) if self.dtype == torch.float16 else None
        self.generator = torch.Generator(device="cpu").manual_seed(derived_seed(cfg.seed, "train"))
        self._queue = torch.zeros(0, dtype=torch.long)
        start, elapsed0 = 0, 0.0
        if self._state is not None:
            state = self._state
            with torch.no_grad():
                self.prompts.ctx.copy_(state["ctx"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scaler is not None and state["scaler"]:
                self.scaler.load_state_dict(state["scaler"])
            self.generator.set_state(state["generator"])
            self._queue = state["queue"].clone()
            start, elapsed0 = int(state["step"]), float(state["elapsed_s"])
            self._last_loss = float(state.get("last_loss", float("nan")))
            self._checkpoint_step = start
            self._log(f"resuming from {self.checkpoint_path} at step {start}/{cfg.steps}")

        result = TrainResult(out=None, checkpoint=None, log_csv=self.log_csv, step=start, total_steps=cfg.steps,
                             finished=False, image_count=len(self.images), resumed_from=start,
                             warnings=list(self.warnings))
        unet_checkpointing = cfg.gradient_checkpointing and not getattr(pipe.unet, "is_gradient_checkpointing", False)
        began = time.perf_counter()
        csv_out = bar = None
        try:
            if unet_checkpointing:
                pipe.unet.enable_gradient_checkpointing()
            _use_sdpa(pipe.unet)
            self._mean, self._std = self._cache_latents()
            self._lat_shape = tuple(self._mean.shape[1:])
            self.latent_cache_s = time.perf_counter() - began
            result.vae_images_encoded = self.vae_images_encoded
            csv_out = self._open_csv(start)
            bar = tqdm(total=cfg.steps, initial=start, unit="step", desc="training", dynamic_ncols=True,
                       disable=None if self.progress else True)
            self._run_loop(result, start, elapsed0, csv_out, bar, max_steps_this_run)
            return self._finish(result, began)
        finally:
            if bar is not None:
                bar.close()
            if csv_out is not None:
                csv_out[0].close()
            if unet_checkpointing:
                pipe.unet.disable_gradient_checkpointing()
            self.prompts.ctx.grad = None

    def _update(self, step: int) -> tuple[float, float, float, float]:
        """Step ``step`` -> ``step + 1``: forward, backward, checks, optimizer. Returns
        (loss, diffusion loss, ortho loss, gradient norm before clipping)."""
        cfg, scaler = self.config, self.scaler
        loss, diffusion, ortho, finite = self._step()
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        if cfg.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_([self.prompts.ctx], cfg.max_grad_norm)
        else:
            norm = torch.linalg.vector_norm(self.prompts.ctx.grad)
        # one device sync per step, for the checks, the bar and the log together
        loss_v, diff_v, ortho_v, norm_v, finite_v = torch.stack(
            [loss, diffusion, ortho, norm.to(loss), finite.to(loss)]).tolist()
        bad = None
        if not finite_v:
            bad = ("loss", loss_v)
        elif scaler is None and not math.isfinite(norm_v):  # fp16's GradScaler skips inf steps by itself
            bad = ("gradient", norm_v)
        if bad is not None:
            if self._checkpoint_step and self.checkpoint_path is not None:
                kept = f"the last good checkpoint (step {self._checkpoint_step}) is kept at {self.checkpoint_path}"
            else:
                kept = "no checkpoint had been written yet"
            hint = ", or --precision bf16 / fp32" if self.dtype == torch.float16 else ""
            raise TrainingDiverged(f"the {bad[0]} became {bad[1]} at step {step + 1}; training stopped and "
                                   f"{kept}. Try a lower --lr{hint}")
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_v, diff_v, ortho_v, norm_v

    def _run_loop(self, result: TrainResult, start: int, elapsed0: float, csv_out, bar,
                  max_steps_this_run: int | None) -> None:
        cfg = self.config
        loop_began = time.perf_counter()

        def elapsed() -> float:
            return elapsed0 + time.perf_counter() - loop_began

        stop = _StopRequest(self._log if self._has_log else bar.write)
        step = start
        consistent = True
        smooth = None
        with stop.installed():
            try:
                while step < cfg.steps:
                    if max_steps_this_run is not None and step - start >= max_steps_this_run:
                        result.step = step
                        result.checkpoint = self._write_checkpoint(step, elapsed())
                        return
                    consistent = False
                    loss_v, diff_v, ortho_v, norm_v = self._update(step)
                    step += 1
                    consistent = True
                    self._last_loss = loss_v
                    result.step = step
                    result.diffusion_losses.append(diff_v)
                    result.ortho_losses.append(ortho_v)
                    now = elapsed()
                    if csv_out is not None:
                        csv_out[1].writerow([step, f"{loss_v:.6g}", f"{diff_v:.6g}", f"{ortho_v:.6g}",
                                             f"{norm_v:.6g}", f"{cfg.lr:g}", f"{now:.3f}"])
                        csv_out[0].flush()
                    smooth = diff_v if smooth is None else 0.9 * smooth + 0.1 * diff_v
                    rate = (step - start) / max(now - elapsed0, 1e-9)
                    bar.set_postfix({"loss": f"{smooth:.4f}", "ortho": f"{ortho_v:.4f}",
                                     "steps/s": f"{rate:.3g}"}, refresh=False)
                    bar.update(1)
                    if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                        self._write_checkpoint(step, now)
                    if cfg.preview_every and (step % cfg.preview_every == 0 or step == cfg.steps):
                        path = self._preview(step)
                        if path is not None:
                            result.previews.append(path)
                    if self.callback is not None:
                        self.callback(StepInfo(step, cfg.steps, loss_v, diff_v, ortho_v, norm_v, now))
                    if stop.signal_name is not None:
                        raise KeyboardInterrupt
            except KeyboardInterrupt:
                if not consistent:  # a second Ctrl-C mid-step: abort without saving the half-done step
                    raise
                saved = self._write_checkpoint(step, elapsed())
                raise TrainingInterrupted(step, saved, stop.signal_name or "SIGINT") from None
        result.checkpoint = self._write_checkpoint(step, elapsed())
        result.out = self._final_file(step, elapsed())
        result.finished = True

    def _finish(self, result: TrainResult, began: float) -> TrainResult:
        result.seconds = time.perf_counter() - began
        return result


def train_distribution(
    images_dir: str | os.PathLike,
    model: Any,
    out: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    device: str | torch.device | None = None,
    resume: bool = False,
    overwrite: bool = False,
    checkpoint: str | os.PathLike | None | bool = None,
    log_csv: str | os.PathLike | None | bool = None,
    preview_dir: str | os.PathLike | None = None,
    progress: bool = True,
    callback: Callable[[StepInfo], None] | None = None,
    log: Callable[[str], None] | None = None,
    max_steps_this_run: int | None = None,
    model_name: str | None = None,
) -> TrainResult:
    """Learn a prompt distribution from the images in ``images_dir`` and write it to ``out``.

    ``model``: diffusers folder / hub id, or a loaded pipeline. ``config``: ``TrainConfig()`` (paper
    defaults) when None. ``device``: None/"auto" (CUDA if present), "cpu", "cuda:1"...
    ``checkpoint``/``log_csv``: None = beside ``out`` (``dist.ckpt``, ``dist.log.csv``), False = off.
    ``resume``: continue from the checkpoint. ``overwrite``: replace an existing ``out`` / start over
    despite an existing checkpoint. ``callback(StepInfo)`` runs after each step; raising
    KeyboardInterrupt from it stops like Ctrl-C. Raises ``InputError`` (bad input; nothing written),
    ``TrainingInterrupted``, ``TrainingDiverged``.
    """
    trainer = Trainer(images_dir, model, out, config, device=device, resume=resume, overwrite=overwrite,
                      checkpoint=checkpoint, log_csv=log_csv, preview_dir=preview_dir, progress=progress,
                      callback=callback, log=log, model_name=model_name)
    return trainer.run(max_steps_this_run=max_steps_this_run)
