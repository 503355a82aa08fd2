"""Train a prompt distribution from reference images (DreamDistribution, Zhao et al. 2023, sec. 3).

K soft prompts of M learned token vectors go through the frozen CLIP text encoder; their features
give a per-position, per-channel Gaussian (mu, sigma over the K prompts). Each step, for each of the
B images of the batch, S reparameterised samples c_s = mu + w_s * sigma condition the frozen UNet on
the same noisy latent; the loss is the mean over the B x S predictions of the diffusion loss (target
from the scheduler's ``prediction_type``: epsilon, v-prediction or sample), each weighted by its
timestep's Min-SNR-gamma weight (``dreamdist.losses``; gamma 5 as the authors' train.py, 0 = plain
mean), plus ``ortho_weight`` times the orthogonality loss of the K prompts' pooled features. Only
``ctx`` (K, M, d_tok) is trained, with AdamW at a constant learning rate.

Images, as the authors' train.py by default: each is resized to the resolution on its short side,
then a random square crop is taken per step (``crop="center"``: always the centre); no flips unless
``flip``. The crops come from the latent cache: the VAE encodes each crop position once, before the
first step (positions evenly spaced along the long side, at most one latent pixel (8 image pixels on
SD) apart and at most 33 per image: ``dreamdist.images.crop_offsets``), and a step draws among them.
Encoding each crop, rather than cropping the latent of the whole resized image, keeps the latents
those of the very pixels the step trains on: the VAE's receptive field (and its mid-block attention)
reaches across a crop's edges, so a cropped latent is not the crop's latent.

Speed. The frozen parts never hold a gradient and are never recomputed needlessly: the latent
distributions' mean and std are cached before the first step (a latent is drawn from them per step);
the text encoder runs once per step on the K prompts; the B x S UNet evaluations of a step run as one
batch, or in chunks when the memory plan (``dreamdist.train.memory``, printed before the model is
loaded) says one batch does not fit: each chunk's backward stops at a detached copy of the sampled
conditionings, whose gradients add up over the chunks and then go through the Gaussian and the text
encoder once, so a chunked step computes the same update. No vision encoder or safety checker is loaded.

Mixtures (``components`` C > 1, beyond the paper). C blocks of K prompts, each its own Gaussian;
each image conditions the UNet on samples of the component it is assigned to, and the orthogonality
loss is the mean of the components' own. Assignments start from k-means on the images' latents and
are revised every ``assign_every`` steps by EM on the denoising loss (``dreamdist.train.components``).
The file stores each component's weight (its share of the images) and its images.

Reproducibility. Every random draw (batch order, flips, crops, timesteps, noise, latent samples,
prompt samples w) comes from one CPU ``torch.Generator`` seeded with ``config.seed``; checkpoints hold
it with the optimizer state, so on CPU an interrupted and resumed run ends bit-identical to an
uninterrupted one.

Files, for ``--out dist.safetensors``: ``dist.ckpt`` (latest checkpoint, atomic), ``dist.log.csv``
(losses per step), ``dist.previews/step-000100.png`` (optional preview grids). Nothing is written
before every input has been checked.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from dreamdist.core.distfile import Component, DistributionFile, save_distribution
from dreamdist.core.encoder import SoftPromptEncoder
from dreamdist.core.gaussian import FeatureGaussian
from dreamdist.core.mixture import GaussianMixture
from dreamdist.core.seeds import derived_seed
from dreamdist.core.templates import Template
from dreamdist.train.checkpoint import Checkpoint, image_ids, resume_settings
from dreamdist.train.components import ASSIGN_DRAWS, Assignment
from dreamdist.train.config import LENGTH, METHOD, SPEED, TrainConfig
from dreamdist.train.hooks import NO_HOOK, StepHook
from dreamdist.train.losses import min_snr_weights, ortho_loss
from dreamdist.train.memory import MemoryEstimate, MemoryPlan, ModelConfigs, Workload, free_memory, plan_memory
from dreamdist.train.model import VAE_CHUNK, FrozenModel, check_resolution, run_device
from dreamdist.train.outcome import StepInfo, TrainingDiverged, TrainingInterrupted, TrainResult
from dreamdist.train.paths import TrainPaths
from dreamdist.train.prompts import PromptSet
from dreamdist.train.runlog import RunLog, noting_warnings, render_preview
from dreamdist.utils.compat import grad_scaler
from dreamdist.utils.errors import InputError
from dreamdist.utils.images import ReferenceImages, check_reference_folder, crop_offsets, load_reference_images
from dreamdist.utils.stop import StopRequest

logger = logging.getLogger(__name__)


class Trainer:
    """One training run. Construction checks every input (writing nothing), loads the model, makes
    the learned state (fresh or from the checkpoint) and caches the latents; ``run`` trains.

    ``model``: a diffusers model folder or hub id (loaded here without safety checker or other
    unused models), or an already loaded pipeline (used as is: its device and dtype; its weights
    are never changed). ``hook``: phase hooks for a profiler (``dreamdist.train.hooks``).
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
        model_name: str | None = None,
        hook: StepHook | None = None,
    ) -> None:
        self.config = cfg = config if config is not None else TrainConfig()
        cfg.validate()
        self.paths = TrainPaths.of(out, checkpoint, log_csv, preview_dir)
        self.paths.check(resume=resume, overwrite=overwrite)  # before any expensive work
        self.progress, self.callback, self.hook = progress, callback, hook or NO_HOOK
        self.warnings: list[str] = []
        # list and decode every image once: cheap errors before loading a model
        self.image_paths = noting_warnings(self.warnings, check_reference_folder, images_dir)
        if cfg.components > len(self.image_paths):
            raise InputError(
                f"--components {cfg.components} needs at least {cfg.components} reference images; "
                f"{images_dir} has {len(self.image_paths)}"
            )
        self.template = Template.parse(cfg.template)
        # the model's configs (three small files): the resolution, the images and the memory plan,
        # all before any weight is loaded
        configs, note = _model_configs(model)
        images = None
        if configs is not None:
            self._check_template(model, configs)
            resolution = check_resolution(cfg.resolution, configs.native_resolution, configs.resolution_multiple)
            images = self._load_images(images_dir, resolution)
        self.memory = self._plan_memory(configs, note, images, model, device)
        if configs is not None:
            logger.info(self.memory.describe())
        self.model = FrozenModel.load(model, device, cfg.precision, model_name)
        if configs is None:  # said once the model is known to load: else its loading error says it all
            logger.info(self.memory.describe())
        self.layout = self.model.encoder.layout(self.template, cfg.num_tokens)  # TemplateError if it does not fit
        self.resolution = self.model.training_resolution(cfg.resolution)
        saved = self._checked_checkpoint() if resume else None
        if images is None or images.resolution != self.resolution:
            images = self._load_images(images_dir, self.resolution)
        self.images = images
        self.image_ids = image_ids(self.image_paths)  # [name, sha256]: a resume with other images is refused
        if saved is not None:
            saved.check_images(self.paths.checkpoint, self.image_ids)

        # the learned state: fresh, then as the checkpoint left it
        device, token_dim = self.model.device, self.model.encoder.token_dim
        prompts = cfg.components * cfg.num_prompts
        self.prompts = PromptSet(prompts, cfg.num_tokens, token_dim, seed=cfg.seed).to(device)
        self.optimizer = torch.optim.AdamW(self.prompts.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = grad_scaler(device.type) if self.model.dtype == torch.float16 else None  # fp16 loss scaling
        self.generator = torch.Generator(device="cpu").manual_seed(derived_seed(cfg.seed, "train"))
        self.queue = torch.zeros(0, dtype=torch.long)  # image indices left in this epoch
        self.steps_done, self.elapsed_s, self.last_loss, self.checkpoint_step = 0, 0.0, math.nan, 0
        self.assignment: Assignment | None = None  # None with one component
        if saved is not None:
            self._restore(saved)

        # the frozen inputs: latent mean and std of every crop (and its mirror image), once
        began = time.perf_counter()
        self.latent_mean, self.latent_std, self.crop_start, self.crop_count = self._cache_latents()
        self.vae_images_encoded = int(self.latent_mean.shape[0])
        self.latent_cache_s = time.perf_counter() - began
        scheduler = self.model.noise_scheduler
        self.snr_weights = min_snr_weights(  # per timestep; all 1 when snr_gamma is 0
            scheduler.alphas_cumprod,
            torch.arange(scheduler.config.num_train_timesteps),
            cfg.snr_gamma,
            self.model.prediction_type,
            cfg.snr_kind,
        ).to(self.model.device)
        if cfg.components > 1 and self.assignment is None:
            self.assignment = self._initial_assignment()

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.latent_mean.shape[1:])

    def _check_template(self, model: Any, configs: ModelConfigs) -> None:
        """Refuse a template that does not fit the tokenizer's context before any weight is loaded
        (the tokenizer's files and the text encoder's config suffice)."""
        if not isinstance(model, (str, os.PathLike)):
            return  # a loaded pipeline: checked on it right away
        from transformers import CLIPTokenizer

        try:
            tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
        except Exception:  # noqa: BLE001 - loading the model will say what is wrong, in its words
            return
        SoftPromptEncoder(tokenizer, configs.meta_text_encoder()).layout(self.template, self.config.num_tokens)

    def _load_images(self, images_dir: str | os.PathLike, resolution: int) -> ReferenceImages:
        return noting_warnings(
            self.warnings, load_reference_images, images_dir, resolution, self.image_paths, self.config.crop == "random"
        )

    def _crop_counts(self, images: ReferenceImages, step: int) -> list[int]:
        """Crop positions per image (1 each for centre crops)."""
        if self.config.crop == "center":
            return [1] * len(images)
        return [len(crop_offsets(max(t.shape[-2:]) - images.resolution, step)) for t in images.resized]

    def _plan_memory(
        self,
        configs: ModelConfigs | None,
        note: str,
        images: ReferenceImages | None,
        model: Any,
        device: str | torch.device | None,
    ) -> MemoryPlan:
        """The memory estimate and the UNet chunking (``dreamdist.train.memory``); a model the
        estimate cannot read runs as configured, with one line saying why there is no estimate."""
        cfg = self.config
        dev, dtype = run_device(model, device, cfg.precision)
        estimate = self.memory_estimate = None
        if configs is not None and images is not None:
            try:
                entries = sum(self._crop_counts(images, configs.vae_scale)) * (2 if cfg.flip else 1)
                work = Workload(
                    cfg.components * cfg.num_prompts,
                    cfg.num_tokens,
                    cfg.batch_size,
                    cfg.samples,
                    images.resolution,
                    dtype,
                    dev.type,
                    entries,
                    VAE_CHUNK,
                )
                estimate = self.memory_estimate = MemoryEstimate.of(configs, work)
            except Exception as exc:  # noqa: BLE001 - an estimate must never stop a run
                note = f"dry run failed: {type(exc).__name__}: {exc}".splitlines()[0]
        return plan_memory(
            estimate,
            cfg.batch_size * cfg.samples,
            cfg.unet_batch,
            cfg.gradient_checkpointing,
            free_memory(dev),
            str(dev),
            VAE_CHUNK,
            note,
        )

    def _cache_latents(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latent mean and std of every cache entry, and per image (and flip) its first entry and its
        number of crop positions. Entries: the images (each crop position of each), then their
        mirror images in the same order."""
        cfg, images, model = self.config, self.images, self.model
        batch = self.memory.vae_batch
        counts = torch.tensor(self._crop_counts(images, model.vae_scale), dtype=torch.long)
        if cfg.crop == "center":
            mean, std = model.encode_latents(images.with_flips() if cfg.flip else images.pixels, batch)
        else:
            means, stds, pending = [], [], []

            def encode() -> None:
                m, s = model.encode_latents(torch.stack(pending), batch)
                means.append(m)
                stds.append(s)
                pending.clear()

            for flipped in (False, True) if cfg.flip else (False,):
                for i in range(len(images)):
                    for crop in images.crops(i, model.vae_scale):
                        pending.append(crop.flip(-1) if flipped else crop)
                        if len(pending) == batch:
                            encode()
            if pending:
                encode()
            mean, std = torch.cat(means), torch.cat(stds)
        start = torch.cumsum(counts, 0) - counts
        if cfg.flip:
            start = torch.cat([start, start + int(counts.sum())])
        return mean, std, start, counts

    def _resume_settings(self) -> dict[str, Any]:
        return resume_settings(self.config, self.resolution, self.template, self.model.dtype)

    def _checked_checkpoint(self) -> Checkpoint:
        path = self.paths.checkpoint
        saved = Checkpoint.load(path)
        saved.check_resumes(path, self._resume_settings(), self.model.fingerprint, self.model.name, self.config.steps)
        return saved

    def _restore(self, saved: Checkpoint) -> None:
        with torch.no_grad():
            self.prompts.ctx.copy_(saved.ctx)
        self.optimizer.load_state_dict(saved.optimizer)
        if self.scaler is not None and saved.scaler:
            self.scaler.load_state_dict(saved.scaler)
        self.generator.set_state(saved.generator)
        self.queue = saved.queue
        if saved.assignment is not None:
            self.assignment = Assignment(saved.assignment, self.config.components)
        self.steps_done = self.checkpoint_step = saved.step
        self.elapsed_s, self.last_loss = saved.elapsed_s, saved.last_loss
        logger.info(f"resuming from {self.paths.checkpoint} at step {saved.step}/{self.config.steps}")

    # ---- one step: draw, step, update

    def draw(self) -> dict[str, torch.Tensor]:
        """Every random number of a step, from the run's CPU generator, in a fixed order."""
        cfg, g = self.config, self.generator
        b = cfg.batch_size
        while self.queue.numel() < b:  # epochs: each image once per pass, in a fresh random order
            self.queue = torch.cat([self.queue, torch.randperm(len(self.images), generator=g)])
        image, self.queue = self.queue[:b], self.queue[b:]
        return {"image": image, **self._draw_inputs(image, cfg.samples, g)}

    def _draw_inputs(self, image: torch.Tensor, samples: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        """For each of ``image`` (indices): its latent cache entry (flip and crop position), a
        timestep, noise, a latent draw and ``samples`` prompt draws w, from ``g`` in a fixed order."""
        cfg, b = self.config, len(image)
        index = image
        if cfg.flip:
            index = index + len(self.images) * torch.randint(0, 2, (b,), generator=g)
        index = self.crop_start[index]  # the first crop position of each image (or its mirror image)
        if cfg.crop == "random":
            index = index + (torch.rand(b, generator=g, dtype=torch.float64) * self.crop_count[image]).long()
        c, h, w = self.latent_shape
        seq, dim = self.layout.input_ids.shape[0], self.model.encoder.hidden_size
        return {
            "index": index,
            "timesteps": torch.randint(0, self.model.noise_scheduler.config.num_train_timesteps, (b,), generator=g),
            "noise": torch.randn((b, c, h, w), generator=g),
            "latent_eps": torch.randn((b, c, h, w), generator=g),
            "w": torch.randn((b, samples, seq, dim), generator=g),
        }

    def _noised(self, draws: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noisy latents, the UNet's target, timesteps) of ``draws``, on the device."""
        model, dev = self.model, self.model.device
        index = draws["index"].to(dev)
        latents = model.scaled_latents(
            self.latent_mean[index], self.latent_std[index], draws["latent_eps"].to(dev, non_blocking=True)
        )
        noise = draws["noise"].to(dev, non_blocking=True)
        timesteps = draws["timesteps"].to(dev)
        noisy = model.noise_scheduler.add_noise(latents, noise, timesteps)
        return noisy, model.target(latents, noise, timesteps).float(), timesteps

    def _component_gaussians(self) -> tuple[list[FeatureGaussian], Any]:
        """Each component's Gaussian (differentiable in ctx) and the prompts' encodings."""
        with self.model.autocast():
            return self.prompts.gaussians(self.model.encoder, self.template, self.config.components)

    def step(self, draws: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward + backward of one step (no optimizer update). Returns detached (loss, diffusion loss,
        ortho loss) and a 0-dim tensor that is 1 when the loss is finite."""
        cfg, model, dev, hook = self.config, self.model, self.model.device, self.hook
        b, s = cfg.batch_size, cfg.samples
        hook.begin_step(self.steps_done)

        # text encoder: C x K prompts -> a Gaussian per component -> B x S reparameterised samples,
        # image b's from its component (graph back to ctx)
        gaussians, encoded = self._component_gaussians()
        w = draws["w"].to(dev, non_blocking=True)
        if len(gaussians) == 1:  # one component: exactly the computation of a dreamdist without mixtures
            cond = gaussians[0].apply(w)  # (B, S, L, d) float32
        else:
            cond = FeatureGaussian.stacked(gaussians).select(self.assignment.owners[draws["image"]].to(dev)).apply(w)
        ortho = torch.stack([ortho_loss(p, cfg.ortho_kind) for p in encoded.pooled.split(cfg.num_prompts)]).mean()
        hook.end_phase("text_fwd")

        # UNet: the B x S evaluations, the S samples of image b on its noisy latent, in chunks of
        # the memory plan's size; each chunk's backward adds its share to the samples' gradient
        noisy, target, timesteps = self._noised(draws)
        target = target.repeat_interleave(s, dim=0)
        # each evaluation's share of the loss: the mean over B x S, Min-SNR weighted by its timestep
        share = (self.snr_weights[timesteps] / (b * s)).repeat_interleave(s)
        cond_leaf = cond.detach().reshape(b * s, *cond.shape[2:]).requires_grad_(True)
        model_in = noisy.repeat_interleave(s, dim=0)
        steps_in = timesteps.repeat_interleave(s)
        unet, scaler = model.pipe.unet, self.scaler  # scaler: fp16 only, loss scaling against underflow
        diffusion = torch.zeros((), device=dev)
        for start in range(0, b * s, self.memory.unet_batch):
            part = slice(start, start + self.memory.unet_batch)
            with model.autocast():
                pred = unet(
                    model_in[part].to(unet.dtype), steps_in[part], encoder_hidden_states=cond_leaf[part].to(unet.dtype)
                ).sample
            errors = (pred.float() - target[part]).square().flatten(1).mean(dim=1)  # per evaluation
            loss = (errors * share[part]).sum()
            del pred, errors
            hook.end_phase("unet_fwd")
            (scaler.scale(loss) if scaler is not None else loss).backward()
            hook.end_phase("unet_bwd")
            diffusion = diffusion + loss.detach()

        # backward: the samples' gradient (all chunks) and the ortho loss through the text encoder
        weighted_ortho = cfg.ortho_weight * ortho
        torch.autograd.backward(  # cond_leaf.grad is already scaled like the diffusion loss
            [cond, scaler.scale(weighted_ortho) if scaler is not None else weighted_ortho],
            [cond_leaf.grad.reshape(cond.shape), None],
        )
        hook.end_phase("text_bwd")
        loss = diffusion.detach() + weighted_ortho.detach()
        return loss, diffusion.detach(), ortho.detach(), torch.isfinite(loss)

    def update(self) -> tuple[float, float, float, float]:
        """One step of training: draw, forward, backward, checks, optimizer. Returns (loss, diffusion
        loss, ortho loss, gradient norm before clipping)."""
        cfg, scaler = self.config, self.scaler
        loss, diffusion, ortho, finite = self.step(self.draw())
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        if cfg.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_([self.prompts.ctx], cfg.max_grad_norm)
        else:
            norm = torch.linalg.vector_norm(self.prompts.ctx.grad)
        # one device sync per step, for the checks, the bar and the log together
        values = torch.stack([loss, diffusion, ortho, norm.to(loss), finite.to(loss)]).tolist()
        loss_v, diff_v, ortho_v, norm_v, finite_v = values
        if not finite_v:
            self._diverged("loss", loss_v)
        if scaler is None and not math.isfinite(norm_v):  # fp16's GradScaler skips inf steps by itself
            self._diverged("gradient", norm_v)
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps_done += 1
        self.last_loss = loss_v
        return loss_v, diff_v, ortho_v, norm_v

    # ---- mixtures: which images each component explains

    def _initial_assignment(self) -> Assignment:
        """k-means on each image's latent (its middle crop position, unflipped)."""
        middle = self.crop_start[: len(self.images)] + self.crop_count // 2
        assignment = Assignment.by_kmeans(
            self.latent_mean[middle.to(self.latent_mean.device)], self.config.components, self.config.seed
        )
        logger.info(f"components start with {assignment.sizes()} images (k-means on their latents)")
        return assignment

    @torch.no_grad()
    def denoising_costs(self) -> torch.Tensor:
        """(N, C): each image's Min-SNR-weighted denoising loss under each component, averaged over
        ``ASSIGN_DRAWS`` draws shared by every component; the draws come from the step's own stream
        (the same on a resumed run)."""
        cfg, model, dev = self.config, self.model, self.model.device
        g = torch.Generator(device="cpu").manual_seed(derived_seed(cfg.seed, f"assign:{self.steps_done}"))
        n = len(self.images)
        draws = self._draw_inputs(torch.arange(n).repeat_interleave(ASSIGN_DRAWS), 1, g)
        noisy, target, timesteps = self._noised(draws)
        weights = self.snr_weights[timesteps]
        w = draws["w"][:, 0].to(dev)
        gaussians, _ = self._component_gaussians()
        costs = torch.zeros(n * ASSIGN_DRAWS, len(gaussians), device=dev)
        unet, chunk = model.pipe.unet, self.memory.unet_batch
        for k, gaussian in enumerate(gaussians):
            cond = gaussian.apply(w)
            for start in range(0, len(w), chunk):
                part = slice(start, start + chunk)
                with model.autocast():
                    pred = unet(
                        noisy[part].to(unet.dtype), timesteps[part], encoder_hidden_states=cond[part].to(unet.dtype)
                    ).sample
                costs[part, k] = (pred.float() - target[part]).square().flatten(1).mean(dim=1) * weights[part]
        return costs.view(n, ASSIGN_DRAWS, -1).mean(dim=1).cpu()

    def _reassign(self) -> None:
        """The E step: each image to the component that denoises it best, none left empty."""
        before, self.assignment = self.assignment, self.assignment.reassigned(self.denoising_costs())
        logger.info(
            f"step {self.steps_done}: components hold {self.assignment.sizes()} images "
            f"({self.assignment.moved(before)} moved)"
        )

    def _diverged(self, what: str, value: float) -> None:
        if self.checkpoint_step and self.paths.checkpoint is not None:
            kept = f"the last good checkpoint (step {self.checkpoint_step}) is kept at {self.paths.checkpoint}"
        else:
            kept = "no checkpoint had been written yet"
        hint = ", or --precision bf16 / fp32" if self.model.dtype == torch.float16 else ""
        raise TrainingDiverged(
            f"the {what} became {value} at step {self.steps_done + 1}; training stopped and "
            f"{kept}. Try a lower --lr{hint}"
        )

    # ---- the loop

    def run(self, max_steps_this_run: int | None = None) -> TrainResult:
        """Train to ``config.steps`` (or stop after ``max_steps_this_run`` steps of this run, with a
        checkpoint). Raises ``TrainingInterrupted`` on Ctrl-C/SIGTERM (after checkpointing) and
        ``TrainingDiverged`` on a NaN/inf loss (keeping the last good checkpoint)."""
        cfg, start = self.config, self.steps_done
        result = TrainResult(
            out=None,
            checkpoint=None,
            log_csv=self.paths.log_csv,
            step=start,
            total_steps=cfg.steps,
            finished=False,
            image_count=len(self.images),
            resumed_from=start,
            warnings=list(self.warnings),
            vae_images_encoded=self.vae_images_encoded,
            latent_cache_s=self.latent_cache_s,
        )
        began = time.perf_counter()
        stop = StopRequest(self._stopping)
        try:
            with (
                self.model.unet_checkpointing(self.memory.gradient_checkpointing),
                RunLog(self.paths.log_csv, start, cfg.steps, self.progress) as log,
                stop.installed(),
            ):
                self._loop(result, log, stop, max_steps_this_run)
        finally:
            self.prompts.ctx.grad = None
        result.seconds = self.latent_cache_s + time.perf_counter() - began
        return result

    @staticmethod
    def _stopping(signal_name: str) -> None:
        again = " (Ctrl-C again to abort without saving)" if signal_name == "SIGINT" else ""
        logger.warning(f"{signal_name}: stopping after this step and saving a checkpoint{again}")

    def _loop(self, result: TrainResult, log: RunLog, stop: StopRequest, max_steps: int | None) -> None:
        cfg, start, elapsed0 = self.config, self.steps_done, self.elapsed_s
        loop_began = time.perf_counter()

        def elapsed() -> float:
            return elapsed0 + time.perf_counter() - loop_began

        consistent = True  # False while a step is half done
        try:
            while self.steps_done < cfg.steps:
                if max_steps is not None and self.steps_done - start >= max_steps:
                    break
                consistent = False
                loss, diffusion, ortho, norm = self.update()
                consistent = True
                step = result.step = self.steps_done
                now = self.elapsed_s = elapsed()
                result.diffusion_losses.append(diffusion)
                result.ortho_losses.append(ortho)
                log.record(step, loss, diffusion, ortho, norm, cfg.lr, now, now - elapsed0)
                if cfg.components > 1 and step % cfg.assign_every == 0 and step < cfg.steps:
                    self._reassign()
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    self._save_checkpoint()
                if cfg.preview_every and (step % cfg.preview_every == 0 or step == cfg.steps):
                    path = self._preview()
                    if path is not None:
                        result.previews.append(path)
                if self.callback is not None:
                    self.callback(StepInfo(step, cfg.steps, loss, diffusion, ortho, norm, now))
                if stop.requested:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            if not consistent:  # a second Ctrl-C mid-step: abort without saving the half-done step
                raise
            self.elapsed_s = elapsed()
            saved = self._save_checkpoint()
            raise TrainingInterrupted(self.steps_done, saved, stop.signal_name or "SIGINT") from None
        self.elapsed_s = elapsed()
        result.checkpoint = self._save_checkpoint()
        if self.steps_done == cfg.steps:
            result.out = self._save_distribution()
            result.finished = True

    # ---- what the run writes

    def _save_checkpoint(self) -> Path | None:
        path = self.paths.checkpoint
        if path is None or not torch.isfinite(self.prompts.ctx).all():  # never replace a good one with a bad one
            return None
        Checkpoint(
            step=self.steps_done,
            ctx=self.prompts.ctx.detach().to("cpu", torch.float32).clone(),
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else {},
            generator=self.generator.get_state(),
            queue=self.queue.clone(),
            settings=self._resume_settings(),
            images=self.image_ids,
            fingerprint=self.model.fingerprint,
            elapsed_s=self.elapsed_s,
            last_loss=self.last_loss,
            assignment=None if self.assignment is None else self.assignment.owners,
        ).save(path)
        self.checkpoint_step = self.steps_done
        return path

    def _preview(self) -> Path | None:
        cfg, step = self.config, self.steps_done
        with torch.no_grad():
            gaussians, _ = self._component_gaussians()
        weights = [1.0] if self.assignment is None else self.assignment.weights
        mixture = GaussianMixture(tuple(gaussians), tuple(weights))
        return render_preview(
            self.model.pipe,
            mixture,
            self.paths.preview_dir / f"step-{step:06d}.png",
            cfg.preview_count,
            cfg.preview_steps,
            self.resolution,
            step,
        )

    def _save_distribution(self) -> Path:
        """The distribution file, with how it was made (settings as resolved, model, precision, time)."""
        cfg, model = self.config, self.model
        training = cfg.values(METHOD, LENGTH, SPEED)
        training.update(
            resolution=self.resolution,
            template=str(self.template),
            steps_done=self.steps_done,
            prediction_type=model.prediction_type,
            precision=model.precision,
            device=model.device.type,
            optimizer="AdamW",
            lr_schedule="constant",
            seconds=round(self.elapsed_s, 1),
            final_loss=self.last_loss,
            images=[p.name for p in self.image_paths],
            latent_cache_entries=self.vae_images_encoded,
            **self.memory.record(),
        )
        dist = DistributionFile(
            ctx=self.prompts.ctx.detach().to("cpu", torch.float32).clone(),
            base_model=model.name,
            fingerprint=model.fingerprint,
            template=str(self.template),
            training=training,
            image_count=len(self.images),
            components=(Component(1.0),)
            if self.assignment is None
            else self.assignment.components([p.name for p in self.image_paths]),
        )
        return save_distribution(self.paths.out, dist)


def _model_configs(model: Any) -> tuple[ModelConfigs | None, str]:
    """The model's configs, or None and why (a model that is not Stable-Diffusion-shaped, or not
    readable: loading it will say so in its own words)."""
    try:
        return ModelConfigs.read(model), ""
    except Exception as exc:  # noqa: BLE001 - see above
        return None, f"cannot read the model's configs: {type(exc).__name__}"


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
    max_steps_this_run: int | None = None,
    model_name: str | None = None,
) -> TrainResult:
    """Learn a prompt distribution from the images in ``images_dir`` and write it to ``out``.

    ``model``: diffusers folder / hub id, or a loaded pipeline. ``config``: ``TrainConfig()`` (paper
    defaults) when None. ``device``: None/"auto" (CUDA if present), "cpu", "cuda:1"...
    ``checkpoint``/``log_csv``: None = beside ``out`` (``dist.ckpt``, ``dist.log.csv``), False = off.
    ``resume``: continue from the checkpoint. ``overwrite``: replace an existing ``out`` / start over
    despite an existing checkpoint. ``callback(StepInfo)`` runs after each step; raising
    KeyboardInterrupt from it stops like Ctrl-C. Messages (resuming, stopping) go to the
    ``dreamdist.train`` logger (``messages_to`` routes them). Raises ``InputError`` (bad input;
    nothing written; ``SettingError`` for a bad setting), ``TrainingInterrupted``, ``TrainingDiverged``.
    """
    trainer = Trainer(
        images_dir,
        model,
        out,
        config,
        device=device,
        resume=resume,
        overwrite=overwrite,
        checkpoint=checkpoint,
        log_csv=log_csv,
        preview_dir=preview_dir,
        progress=progress,
        callback=callback,
        model_name=model_name,
    )
    return trainer.run(max_steps_this_run=max_steps_this_run)
