"""Stage 2: fine-tune the diffusion model's UNet on the reference images, conditioned on a frozen
prompt distribution.

After stage 1 (``dreamdist train``) the prompt distribution captures what a prompt can express; a
logo, a face or one particular plushie stays approximate because the model is frozen. Following
Zeng, Suganuma & Okatani's two-stage recipe (stage 1 learns the prompt, stage 2 freezes it and the
text encoder and fine-tunes the UNet: 800 steps at lr 5e-6, a checkpoint every 200, no prior loss),
this trains the UNet while the distribution stays frozen: each step, each of the B images is noised
once and the UNet is conditioned on S fresh samples c_s = mu + gamma * w_s * sigma of the
distribution (as in stage 1), so the model learns the look across the whole distribution rather than
for one prompt. A mixture (``train --components``) conditions each image on samples of the component
that explains it (the file lists each component's images). The loss is the mean diffusion loss over
the B x S predictions (target per the scheduler's ``prediction_type``), plus, with DreamBooth's
prior preservation, ``prior_weight`` times the loss on B class images (drawn once by the base model
for ``class_prompt``, see ``prior``) conditioned on the class prompt. ``method="lora"`` trains peft
LoRA adapters on the attention projections instead of every weight, and fuses them into the saved
UNet.

Reused from stage 1: ``FrozenModel`` (loading, scheduler target, VAE latents cached once per image
and mirror image), reference-image checks and loading, the distribution's Gaussian
(``PromptDistribution``), ``StopRequest`` (Ctrl-C / SIGTERM) and the atomic writers. The text encoder
and VAE stay frozen; the distribution file is only read. Weights and optimizer are fp32 whatever the
precision (autocast does the compute): lr 5e-6 updates vanish in bf16 weights.

Reproducibility. Every random draw comes from one CPU generator seeded by ``config.seed``; the
checkpoint holds it with the optimizer and the trained weights, so on CPU a resumed run ends
bit-identical to one never interrupted.

Files, for ``--out FOLDER``: ``FOLDER/`` (the pipeline folder, see ``output``; written once, at the
end, atomically), ``FOLDER.ckpt`` (latest checkpoint), ``FOLDER.log.csv`` (losses per step),
``FOLDER.class-images/`` (prior preservation's cache) and, with ``snapshot_every``,
``FOLDER.step-NNNNNN/`` model folders. Nothing is written before every input has been checked.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dreamdist.core.distfile import file_sha256, load_distribution
from dreamdist.core.distribution import PromptDistribution
from dreamdist.core.gaussian import FeatureGaussian
from dreamdist.core.runtime import precision_name
from dreamdist.core.seeds import derived_seed
from dreamdist.finetune.checkpoint import FinetuneCheckpoint
from dreamdist.finetune.config import LORA_TARGETS, METHOD, OUTPUT, FinetuneConfig
from dreamdist.finetune.output import write_pipeline_folder
from dreamdist.finetune.prior import class_image_key, class_images, default_class_dir, unet_hash
from dreamdist.train.checkpoint import image_ids
from dreamdist.train.model import FrozenModel, resolve_precision
from dreamdist.train.outcome import TrainingDiverged, TrainingInterrupted
from dreamdist.train.runlog import noting_warnings, open_step_log
from dreamdist.utils.compat import autocast, grad_scaler
from dreamdist.utils.errors import InputError
from dreamdist.utils.images import check_reference_folder, load_reference_images
from dreamdist.utils.stop import StopRequest

logger = logging.getLogger("dreamdist.train")  # stage 1's logger: ``messages_to`` routes both
CSV_COLUMNS = ("step", "loss", "diffusion_loss", "prior_loss", "grad_norm", "lr", "elapsed_s")
PEFT_MISSING = "--method lora needs peft: pip install 'dreamdist[lora]' (or pip install 'peft>=0.6')"


@dataclass(frozen=True)
class FinetuneStep:
    """What a step did, handed to ``callback``."""

    step: int
    total_steps: int
    loss: float
    diffusion_loss: float
    prior_loss: float
    grad_norm: float
    elapsed_s: float


@dataclass
class FinetuneResult:
    out: Path | None  # the pipeline folder; None when this run stopped before the last step
    checkpoint: Path | None
    log_csv: Path | None
    step: int
    total_steps: int
    finished: bool
    image_count: int
    resumed_from: int
    diffusion_losses: list[float] = field(default_factory=list)
    prior_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0  # this run's steps plus caching latents (not class-image generation)
    step_seconds: float = 0.0  # this run's steps only
    class_images_made: int = 0
    class_image_s: float = 0.0
    snapshots: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def finetune_paths(out: str | os.PathLike, checkpoint: Any = None, log_csv: Any = None) -> dict[str, Path | None]:
    """Where a run writes beside ``out``: None/True = the default, False = off."""
    out = Path(out)

    def pick(given: Any, default: Path) -> Path | None:
        return None if given is False else Path(default if given in (None, True) else given)

    return {
        "out": out,
        "checkpoint": pick(checkpoint, out.with_name(out.name + ".ckpt")),
        "log_csv": pick(log_csv, out.with_name(out.name + ".log.csv")),
    }


class _Log:
    """The per-step CSV (trimmed to the checkpoint on resume, like stage 1's) and the progress bar."""

    def __init__(self, path: Path | None, start: int, total: int, progress: bool) -> None:
        self.start, self._file, self._csv = start, None, None
        if path is not None:
            self._file = open_step_log(path, CSV_COLUMNS, start)
            self._csv = csv.writer(self._file, lineterminator="\n")
        self._bar = tqdm(
            total=total,
            initial=start,
            unit="step",
            desc="fine-tuning",
            dynamic_ncols=True,
            disable=None if progress else True,
        )

    def record(self, info: FinetuneStep, lr: float) -> None:
        if self._csv is not None:
            self._csv.writerow(
                [
                    info.step,
                    f"{info.loss:.6g}",
                    f"{info.diffusion_loss:.6g}",
                    f"{info.prior_loss:.6g}",
                    f"{info.grad_norm:.6g}",
                    f"{lr:g}",
                    f"{info.elapsed_s:.3f}",
                ]
            )
            self._file.flush()
        self._bar.set_postfix({"loss": f"{info.diffusion_loss:.4f}"}, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
        if self._file is not None:
            self._file.close()


def _lora_config(cfg: FinetuneConfig) -> Any:
    try:
        from peft import LoraConfig
    except ImportError:
        raise InputError(PEFT_MISSING) from None
    return LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha or cfg.lora_rank,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        init_lora_weights=True,
    )


class FinetuneTrainer:
    """One stage-2 run. Construction checks every input (writing nothing but, with prior preservation,
    the class-image cache), loads the model, caches latents, and makes the trained state (fresh or
    from the checkpoint); ``run`` trains and writes the pipeline folder.

    ``distribution``: the stage-1 file (only read). ``model``: a diffusers folder or hub id (default:
    the distribution's base model); its text encoder must be the distribution's.
    """

    def __init__(
        self,
        distribution: str | os.PathLike,
        images_dir: str | os.PathLike,
        out: str | os.PathLike,
        config: FinetuneConfig | None = None,
        *,
        model: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        resume: bool = False,
        overwrite: bool = False,
        checkpoint: str | os.PathLike | None | bool = None,
        log_csv: str | os.PathLike | None | bool = None,
        class_dir: str | os.PathLike | None = None,
        progress: bool = True,
        callback: Callable[[FinetuneStep], None] | None = None,
    ) -> None:
        self.config = cfg = config if config is not None else FinetuneConfig()
        cfg.validate()
        paths = finetune_paths(out, checkpoint, log_csv)
        self.out, self.checkpoint_path, self.log_csv = paths["out"], paths["checkpoint"], paths["log_csv"]
        self._check_paths(resume, overwrite)
        self.overwrite, self.progress, self.callback = overwrite, progress, callback
        self.warnings: list[str] = []
        self.dist = load_distribution(distribution)
        self.distribution_path = Path(distribution).resolve()
        self.distribution_sha256 = file_sha256(distribution)
        self.image_paths = noting_warnings(self.warnings, check_reference_folder, images_dir)
        self.images_dir = Path(images_dir).resolve()
        self.image_component = self._image_components()  # before any model loads: a mismatch is cheap to say
        lora_config = _lora_config(cfg) if cfg.method == "lora" else None  # peft missing: one line, early
        if model is not None and not isinstance(model, (str, os.PathLike)):
            raise InputError("finetune trains the UNet in place: give a model folder or hub id, not a loaded pipeline")
        self.model_name = str(model if model is not None else self.dist.base_model)
        self.model = FrozenModel.load(self.model_name, device, "fp32", self.model_name)  # fp32 master weights
        _, self.compute_dtype = resolve_precision(self.model.device, cfg.precision)
        self.dist.check_encoder(self.model.pipe.text_encoder, self.model_name)  # FingerprintMismatchError
        self.template = cfg.template if cfg.template is not None else self.dist.template
        with torch.no_grad():
            mixture = PromptDistribution([self.dist], self.model.encoder).mixture(self.template)
        # the components stacked (C, L, d): image i is conditioned on component image_component[i]
        self.gaussian = FeatureGaussian.stacked(mixture.parts).to(self.model.device, torch.float32)
        self.resolution = self.model.training_resolution(cfg.resolution)
        saved = self._checked_checkpoint() if resume else None

        self.images = noting_warnings(
            self.warnings, load_reference_images, images_dir, self.resolution, self.image_paths
        )
        began = time.perf_counter()
        pixels = self.images.with_flips() if cfg.flip else self.images.pixels
        self.latent_mean, self.latent_std = self.model.encode_latents(pixels)
        self.latent_cache_s = time.perf_counter() - began
        self.class_images_made, self.class_image_s = 0, 0.0
        if cfg.prior_preservation:  # drawn by the base model, before any weight changes
            self._prepare_prior(Path(class_dir) if class_dir is not None else default_class_dir(self.out))

        unet = self.model.pipe.unet
        self.lora_config = lora_config
        if lora_config is not None:
            from peft import inject_adapter_in_model

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derived_seed(cfg.seed, "lora"))
                inject_adapter_in_model(lora_config, unet)
            unet.to(self.model.device)
            for name, param in unet.named_parameters():
                param.requires_grad_(".lora_" in name)
        else:
            unet.requires_grad_(True)
        self.trained = {name: p for name, p in unet.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(list(self.trained.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = grad_scaler(self.model.device.type) if self.compute_dtype == torch.float16 else None
        self.generator = torch.Generator(device="cpu").manual_seed(derived_seed(cfg.seed, "finetune"))
        self.queue = torch.zeros(0, dtype=torch.long)
        self.steps_done, self.elapsed_s, self.last_loss, self.checkpoint_step = 0, 0.0, math.nan, 0
        if saved is not None:
            self._restore(saved)

    # ---- checks and state

    def _check_paths(self, resume: bool, overwrite: bool) -> None:
        out, ckpt = self.out, self.checkpoint_path
        if out.is_file():
            raise InputError(f"--out {out} is a file; give a folder name for the fine-tuned model")
        if out.exists() and not overwrite:
            raise InputError(f"{out} exists; pass --force to replace it, or choose another --out")
        if resume and (ckpt is None or not ckpt.is_file()):
            raise InputError(f"--resume: no checkpoint at {ckpt}; run without --resume to start a new run")
        if not resume and ckpt is not None and ckpt.exists() and not overwrite:
            raise InputError(
                f"{ckpt}: a checkpoint of an earlier run exists; pass --resume to continue it, or --force to start over"
            )

    def _resume_settings(self) -> dict[str, Any]:
        settings = self.config.values(METHOD)
        settings.update(
            resolution=self.resolution, template=self.template, precision=precision_name(self.compute_dtype)
        )
        return settings

    def _checked_checkpoint(self) -> FinetuneCheckpoint:
        saved = FinetuneCheckpoint.load(self.checkpoint_path)
        saved.check_resumes(
            self.checkpoint_path,
            self._resume_settings(),
            image_ids(self.image_paths),
            self.distribution_sha256,
            self.model.fingerprint.sha256,
            self.config.steps,
        )
        return saved

    def _restore(self, saved: FinetuneCheckpoint) -> None:
        if set(saved.weights) != set(self.trained):
            raise InputError(f"{self.checkpoint_path}: its weights do not fit this model; --force to start over")
        with torch.no_grad():
            for name, param in self.trained.items():
                param.copy_(saved.weights[name])
        self.optimizer.load_state_dict(saved.optimizer)
        self.generator.set_state(saved.generator)
        self.queue = saved.queue
        self.steps_done = self.checkpoint_step = saved.step
        self.elapsed_s, self.last_loss = saved.elapsed_s, saved.last_loss
        logger.info(f"resuming from {self.checkpoint_path} at step {saved.step}/{self.config.steps}")

    def _prepare_prior(self, folder: Path) -> None:
        cfg, model = self.config, self.model
        key = class_image_key(
            cfg.class_prompt,
            model.fingerprint.sha256,
            unet_hash(model.pipe.unet),
            self.resolution,
            cfg.class_steps,
            cfg.class_guidance,
            cfg.seed,
        )
        began = time.perf_counter()
        paths, made = class_images(model.pipe, folder, cfg.class_images, key)
        self.class_dir, self.class_images_made = folder, made
        self.class_image_s = time.perf_counter() - began
        if made:
            logger.info(f"drew {made} class image(s) for {cfg.class_prompt!r} into {folder}")
        pixels = load_reference_images(folder, self.resolution, paths).pixels
        self.class_mean, self.class_std = model.encode_latents(pixels)
        with torch.no_grad():
            self.class_embed = model.encoder.encode_text([cfg.class_prompt]).float()  # (1, L, d)

    # ---- one step

    def draw(self) -> dict[str, torch.Tensor]:
        """Every random number of a step, from the run's CPU generator, in a fixed order."""
        cfg, g = self.config, self.generator
        b = cfg.batch_size
        while self.queue.numel() < b:
            self.queue = torch.cat([self.queue, torch.randperm(len(self.images), generator=g)])
        index, self.queue = self.queue[:b], self.queue[b:]
        if cfg.flip:
            index = index + len(self.images) * torch.randint(0, 2, (b,), generator=g)
        shape = (b, *self.latent_mean.shape[1:])
        steps = self.model.noise_scheduler.config.num_train_timesteps
        draws = {
            "index": index,
            "timesteps": torch.randint(0, steps, (b,), generator=g),
            "noise": torch.randn(shape, generator=g),
            "latent_eps": torch.randn(shape, generator=g),
            "w": torch.randn((b, cfg.samples, *self.gaussian.shape[1:]), generator=g),
        }
        if cfg.prior_preservation:
            draws.update(
                class_index=torch.randint(0, self.class_mean.shape[0], (b,), generator=g),
                class_timesteps=torch.randint(0, steps, (b,), generator=g),
                class_noise=torch.randn(shape, generator=g),
                class_eps=torch.randn(shape, generator=g),
            )
        return draws

    def conditioning(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, S, L, d): the S samples of each image's own component (a one-component file: of its
        one Gaussian), mu_c + gamma * w * sigma_c."""
        dev = self.model.device
        own = self.image_component[draws["index"] % len(self.images)].to(dev)  # a flipped image: its original's
        return self.gaussian.select(own).apply(draws["w"].to(dev), self.config.gamma)

    def _image_components(self) -> torch.Tensor:
        """(N,): the mixture component that explains each reference image, by file name (0 for all with
        one component). A mixture's images must be among those it was trained on."""
        if self.dist.num_components == 1:
            return torch.zeros(len(self.image_paths), dtype=torch.long)
        owner = {name: c for c, comp in enumerate(self.dist.components) for name in comp.images}
        unknown = [p.name for p in self.image_paths if p.name not in owner]
        if unknown:
            raise InputError(
                f"{', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''}: in none of the "
                f"{self.dist.num_components} components of {self.dist.path} (a mixture conditions each "
                "image on the component that explains it): fine-tune on the images it was trained on"
            )
        return torch.tensor([owner[p.name] for p in self.image_paths], dtype=torch.long)

    def _noised(
        self, mean: torch.Tensor, std: torch.Tensor, eps: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        model, dev = self.model, self.model.device
        latents = model.scaled_latents(mean, std, eps.to(dev))
        noise, timesteps = noise.to(dev), timesteps.to(dev)
        return model.noise_scheduler.add_noise(latents, noise, timesteps), model.target(latents, noise, timesteps)

    def step(self, draws: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward + backward of one step. Returns detached (loss, diffusion loss, prior loss)."""
        cfg, model, dev = self.config, self.model, self.model.device
        b, s = cfg.batch_size, cfg.samples
        index = draws["index"].to(dev)
        noisy, target = self._noised(
            self.latent_mean[index], self.latent_std[index], draws["latent_eps"], draws["noise"], draws["timesteps"]
        )
        cond = self.conditioning(draws).reshape(b * s, *self.gaussian.shape[1:])
        model_in = noisy.unsqueeze(1).expand(b, s, *noisy.shape[1:]).reshape(b * s, *noisy.shape[1:])
        timesteps = draws["timesteps"].to(dev).repeat_interleave(s)
        if cfg.prior_preservation:  # the class images join the same UNet batch
            ci = draws["class_index"].to(dev)
            c_noisy, c_target = self._noised(
                self.class_mean[ci],
                self.class_std[ci],
                draws["class_eps"],
                draws["class_noise"],
                draws["class_timesteps"],
            )
            model_in = torch.cat([model_in, c_noisy])
            timesteps = torch.cat([timesteps, draws["class_timesteps"].to(dev)])
            cond = torch.cat([cond, self.class_embed.expand(b, -1, -1)])
        with autocast(dev.type, self.compute_dtype):
            pred = model.pipe.unet(model_in, timesteps, encoder_hidden_states=cond).sample.float()
        inst = pred[: b * s].reshape(b, s, *pred.shape[1:])
        diffusion = F.mse_loss(inst, target.float().unsqueeze(1).expand_as(inst))
        prior = F.mse_loss(pred[b * s :], c_target.float()) if cfg.prior_preservation else torch.zeros((), device=dev)
        loss = diffusion + cfg.prior_weight * prior
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return loss.detach(), diffusion.detach(), prior.detach()

    def update(self) -> FinetuneStep:
        cfg = self.config
        loss, diffusion, prior = self.step(self.draw())
        params = list(self.trained.values())
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if cfg.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        else:
            norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None])
            )
        loss_v, diff_v, prior_v, norm_v = torch.stack([loss, diffusion, prior, norm.to(loss)]).tolist()
        if not math.isfinite(loss_v) or (self.scaler is None and not math.isfinite(norm_v)):
            self._diverged(loss_v if not math.isfinite(loss_v) else norm_v)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps_done += 1
        self.last_loss = loss_v
        return FinetuneStep(self.steps_done, cfg.steps, loss_v, diff_v, prior_v, norm_v, 0.0)

    def _diverged(self, value: float) -> None:
        kept = (
            f"the last good checkpoint (step {self.checkpoint_step}) is kept at {self.checkpoint_path}"
            if self.checkpoint_step and self.checkpoint_path is not None
            else "no checkpoint had been written yet"
        )
        raise TrainingDiverged(
            f"the loss became {value} at step {self.steps_done + 1}; fine-tuning stopped and {kept}. Try a lower --lr"
        )

    # ---- the loop

    def run(self, max_steps_this_run: int | None = None) -> FinetuneResult:
        """Train to ``config.steps`` (or stop after ``max_steps_this_run`` steps, with a checkpoint), then
        write the pipeline folder. Raises ``TrainingInterrupted`` on Ctrl-C/SIGTERM (after checkpointing)."""
        cfg, start = self.config, self.steps_done
        result = FinetuneResult(
            out=None,
            checkpoint=None,
            log_csv=self.log_csv,
            step=start,
            total_steps=cfg.steps,
            finished=False,
            image_count=len(self.images),
            resumed_from=start,
            class_images_made=self.class_images_made,
            class_image_s=self.class_image_s,
            warnings=list(self.warnings),
        )
        stop = StopRequest(self._stopping)
        unet = self.model.pipe.unet
        began = time.perf_counter()
        log = _Log(self.log_csv, start, cfg.steps, self.progress)
        try:
            unet.train()
            with self.model.unet_checkpointing(cfg.gradient_checkpointing), stop.installed():
                self._loop(result, log, stop, max_steps_this_run)
        finally:
            log.close()
            unet.eval()
            self.optimizer.zero_grad(set_to_none=True)
        result.step_seconds = time.perf_counter() - began
        result.seconds = self.latent_cache_s + result.step_seconds
        return result

    @staticmethod
    def _stopping(signal_name: str) -> None:
        again = " (Ctrl-C again to abort without saving)" if signal_name == "SIGINT" else ""
        logger.warning(f"{signal_name}: stopping after this step and saving a checkpoint{again}")

    def _loop(self, result: FinetuneResult, log: _Log, stop: StopRequest, max_steps: int | None) -> None:
        cfg, start, elapsed0 = self.config, self.steps_done, self.elapsed_s
        began = time.perf_counter()
        consistent = True
        try:
            while self.steps_done < cfg.steps:
                if max_steps is not None and self.steps_done - start >= max_steps:
                    break
                consistent = False
                info = self.update()
                consistent = True
                self.elapsed_s = elapsed0 + time.perf_counter() - began
                info = FinetuneStep(
                    info.step,
                    info.total_steps,
                    info.loss,
                    info.diffusion_loss,
                    info.prior_loss,
                    info.grad_norm,
                    self.elapsed_s,
                )
                result.step = info.step
                result.diffusion_losses.append(info.diffusion_loss)
                result.prior_losses.append(info.prior_loss)
                log.record(info, cfg.lr)
                if cfg.checkpoint_every and info.step % cfg.checkpoint_every == 0 and info.step < cfg.steps:
                    self._save_checkpoint()
                if cfg.snapshot_every and info.step % cfg.snapshot_every == 0 and info.step < cfg.steps:
                    result.snapshots.append(
                        self._write_folder(self.out.with_name(f"{self.out.name}.step-{info.step:06d}"), overwrite=True)
                    )
                if self.callback is not None:
                    self.callback(info)
                if stop.requested:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            if not consistent:
                raise
            saved = self._save_checkpoint()
            raise TrainingInterrupted(self.steps_done, saved, stop.signal_name or "SIGINT") from None
        result.checkpoint = self._save_checkpoint()
        if self.steps_done == cfg.steps:
            result.out = self._write_folder(self.out, overwrite=self.overwrite)
            result.finished = True

    # ---- what the run writes

    def _save_checkpoint(self) -> Path | None:
        path = self.checkpoint_path
        if path is None or not all(torch.isfinite(p).all() for p in self.trained.values()):
            return None
        FinetuneCheckpoint(
            step=self.steps_done,
            weights={k: p.detach().to("cpu", torch.float32).clone() for k, p in self.trained.items()},
            optimizer=self.optimizer.state_dict(),
            generator=self.generator.get_state(),
            queue=self.queue.clone(),
            settings=self._resume_settings(),
            images=image_ids(self.image_paths),
            distribution_sha256=self.distribution_sha256,
            fingerprint_sha256=self.model.fingerprint.sha256,
            elapsed_s=self.elapsed_s,
            last_loss=self.last_loss,
        ).save(path)
        self.checkpoint_step = self.steps_done
        return path

    def info(self) -> dict[str, Any]:
        """``dreamdist_finetune.json``: how the folder was made."""
        from dreamdist.version import __version__

        cfg = self.config
        settings = {k: v for k, v in cfg.to_dict().items() if k not in cfg.values(OUTPUT)}
        settings.update(resolution=self.resolution, template=self.template)
        return {
            "format": "dreamdist.finetune",
            "format_version": 1,
            "dreamdist": __version__,
            "base_model": self.model_name,
            "distribution": str(self.distribution_path),
            "distribution_sha256": self.distribution_sha256,
            "text_encoder_sha256": self.model.fingerprint.sha256,
            "references": str(self.images_dir),
            "images": [p.name for p in self.image_paths],
            "settings": settings,
            "steps_done": self.steps_done,
            "seconds": round(self.elapsed_s, 1),
            "final_loss": self.last_loss,
            "precision": precision_name(self.compute_dtype),
            "device": self.model.device.type,
            "optimizer": "AdamW",
            "lr_schedule": "constant",
            "class_images": str(self.class_dir) if cfg.prior_preservation else None,
        }

    def _write_folder(self, out: Path, overwrite: bool) -> Path:
        return write_pipeline_folder(
            out,
            self.model_name,
            self.model.pipe.unet,
            self.info(),
            lora_config=self.lora_config,
            pipe=self.model.pipe,
            overwrite=overwrite,
        )


def finetune(
    distribution: str | os.PathLike,
    images_dir: str | os.PathLike,
    out: str | os.PathLike,
    config: FinetuneConfig | None = None,
    *,
    max_steps_this_run: int | None = None,
    **options: Any,
) -> FinetuneResult:
    """Stage 2: fine-tune the UNet of ``model`` (default: the distribution's base model) on the images
    of ``images_dir``, conditioned on samples of the frozen distribution, and write a diffusers
    pipeline folder to ``out``. ``options``: ``model``, ``device``, ``resume``, ``overwrite``,
    ``checkpoint``/``log_csv`` (None = beside ``out``, False = off), ``class_dir``, ``progress``,
    ``callback`` (see ``FinetuneTrainer``). Raises ``InputError`` (bad input; nothing written),
    ``TrainingInterrupted``, ``TrainingDiverged``."""
    return FinetuneTrainer(distribution, images_dir, out, config, **options).run(max_steps_this_run)
