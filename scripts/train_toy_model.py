#!/usr/bin/env python
"""Train the toy text-to-image model that ships as ``extensions/dreamdist/toy/model``.

A tiny Stable-Diffusion-2-architecture pipeline (the same classes as ``dreamdist.tiny_model``: a
CLIPTokenizer over the project's small vocabulary, CLIPTextModel, UNet2DConditionModel, AutoencoderKL,
DDIM scheduler, epsilon prediction), trained from scratch on CPU on procedurally drawn captioned
32x32 shapes (``dreamdist.toy.shapes``):

1. the VAE (downsampling by 2: 32x32x3 <-> 16x16x4) for reconstruction, MSE + a small KL term;
2. the latents of the whole data set are cached and the VAE's ``scaling_factor`` set to 1/std;
3. the text encoder and UNet jointly, for conditional denoising (epsilon target, min-SNR-5 loss
   weights), with caption dropout (empty caption) for classifier-free guidance and attribute
   dropout (colour, shape, background each sometimes left out of the caption), keeping an EMA of
   the weights, which is what ships.

Seeded and reproducible (same seed and thread count, same weights). The defaults are the shipped
run; ``--eval N`` then samples every plain caption ("a red square") N times and reports how often
the rule-based classifier (``dreamdist.toy.classify``) sees the asked colour and shape.

    nice -n 19 python scripts/train_toy_model.py --out extensions/dreamdist/toy/model --eval 16
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dreamdist.tiny_model import clip_text_encoder, sd_scheduler, write_tokenizer
from dreamdist.toy.classify import classify
from dreamdist.toy.shapes import BACKGROUNDS, COLOURS, SHAPES, caption_for, make_dataset

TEXT_HIDDEN = 64


def log(msg: str, t0: float) -> None:
    """Wall time since start, then this process's CPU time (about 2x wall on an idle 2-core machine)."""
    print(f"[{time.time() - t0:7.1f}s wall {time.process_time():7.1f}s cpu] {msg}", flush=True)


# --------------------------------------------------------------------------- models


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
        mid_block_add_attention=False,  # flat-colour shapes need no attention to reconstruct
    )


def build_text_encoder(tokenizer):
    return clip_text_encoder(tokenizer, TEXT_HIDDEN)


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=(2, 4, 4),
        use_linear_projection=True,  # as SD 2.x
        norm_num_groups=16,
    )


# --------------------------------------------------------------------------- captions


class CaptionTable:
    """Every caption the training can produce (each attribute present or left out, plus the empty
    caption for classifier-free guidance), tokenized once."""

    def __init__(self, tokenizer) -> None:
        self.texts = [""]
        for c in (None, *COLOURS):
            for s in (None, *SHAPES):
                for b in (None, *BACKGROUNDS):
                    self.texts.append(caption_for(s, c, b))
        self.index = {t: i for i, t in enumerate(self.texts)}
        self.ids = tokenizer(
            self.texts,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids

    def draw(self, specs, rng: np.random.Generator, p_uncond: float, p_drop: tuple[float, float, float]):
        """Token ids (B, 77) for one caption per spec: empty with probability ``p_uncond``, else
        with colour, shape, background each dropped with the probabilities in ``p_drop``."""
        rows = []
        for spec in specs:
            if rng.random() < p_uncond:
                rows.append(0)
                continue
            colour = None if rng.random() < p_drop[0] else spec.colour
            shape = None if rng.random() < p_drop[1] else spec.shape
            background = None if rng.random() < p_drop[2] else spec.background
            rows.append(self.index[caption_for(shape, colour, background)])
        return self.ids[rows]


# --------------------------------------------------------------------------- training stages


def train_vae(vae, images: torch.Tensor, args, rng: torch.Generator, t0: float) -> None:
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    n = images.shape[0]
    for step in range(args.vae_steps):
        idx = torch.randint(0, n, (args.vae_batch,), generator=rng)
        x = images[idx]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=rng)
        recon = vae.decode(z).sample
        rec = F.mse_loss(recon, x)
        kl = posterior.kl().mean() / z[0].numel()
        loss = rec + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.vae_steps - 1:
            log(f"vae step {step:4d}  mse {rec.item():.5f}  kl/dim {kl.item():.3f}", t0)
    vae.eval()


@torch.no_grad()
def encode_all(vae, images: torch.Tensor, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, images.shape[0], chunk):
        posterior = vae.encode(images[i : i + chunk]).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


class EMA:
    def __init__(self, modules, decay: float) -> None:
        self.decay = decay
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - decay)

    @torch.no_grad()
    def copy_to(self, modules) -> None:
        params = [p for m in modules for p in m.parameters()]
        for p, s in zip(params, self.shadow):
            p.copy_(s)


def train_denoiser(unet, text_encoder, scheduler, latent_mean, latent_std, specs, captions, args, t0):
    """Joint text-encoder + UNet training; returns EMA copies of both."""
    rng = torch.Generator().manual_seed(args.seed + 2)
    np_rng = np.random.default_rng(args.seed + 3)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    warmup = min(200, args.steps // 10 + 1)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))  # cosine to 10%

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    ema = EMA([unet, text_encoder], args.ema)
    alphas_cumprod = scheduler.alphas_cumprod.float()
    snr = alphas_cumprod / (1 - alphas_cumprod)
    loss_weight = torch.clamp(snr, max=args.min_snr) / snr  # min-SNR-gamma, epsilon target
    unet.train()
    text_encoder.train()
    n = latent_mean.shape[0]
    running = 0.0
    for step in range(args.steps):
        idx = torch.randint(0, n, (args.batch,), generator=rng)
        z0 = latent_mean[idx] + latent_std[idx] * torch.randn(latent_mean[idx].shape, generator=rng)
        z0 = z0 * args.scaling_factor
        noise = torch.randn(z0.shape, generator=rng)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), generator=rng)
        zt = scheduler.add_noise(z0, noise, t)
        ids = captions.draw([specs[i] for i in idx.tolist()], np_rng, args.p_uncond, tuple(args.p_drop))
        cond = text_encoder(input_ids=ids).last_hidden_state
        pred = unet(zt, t, cond).sample
        per_sample = (pred - noise).pow(2).mean(dim=(1, 2, 3))
        loss = (per_sample * loss_weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.update(step)
        running += per_sample.mean().item()
        if (step + 1) % 100 == 0 or step == args.steps - 1:
            k = (step % 100) + 1
            lr = sched.get_last_lr()[0]
            log(f"denoiser step {step + 1:5d}/{args.steps}  eps-mse {running / k:.4f}  lr {lr:.2e}", t0)
            running = 0.0
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    ema.copy_to([ema_unet, ema_text])
    return ema_unet, ema_text


# --------------------------------------------------------------------------- saving and evaluation


def save_pipeline(out: Path, vae, text_encoder, unet, tokenizer_dir: Path, info: dict) -> Path:
    """Write the diffusers folder atomically (staging folder + rename). UNet and VAE weights are
    stored in fp16 (diffusers loads them as fp32 unless told otherwise); the text encoder stays fp32
    so every loader gets one dtype for the prompt embeddings."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    out = Path(out)
    staging = out.with_name(f".{out.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    pipe = StableDiffusionPipeline(
        vae=copy.deepcopy(vae).half(),
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir),
        unet=copy.deepcopy(unet).half(),
        scheduler=sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(staging, safe_serialization=True)
    (staging / "TOY_MODEL.json").write_text(json.dumps(info, indent=2) + "\n")
    for f in staging.rglob("*"):
        if f.is_file():
            f.chmod(0o644)  # safetensors writes 0600; package data must be world-readable
    backup = out.with_name(f".{out.name}.old")
    shutil.rmtree(backup, ignore_errors=True)
    if out.exists():
        out.rename(backup)
    staging.rename(out)
    shutil.rmtree(backup, ignore_errors=True)
    return out


def plain_captions() -> list[tuple[str, str, str]]:
    return [(f"a {c} {s}", c, s) for c in COLOURS for s in SHAPES]


@torch.no_grad()
def evaluate(
    model_dir: Path, per_caption: int, seed: int, guidance: float, steps: int, grid: Path | None = None
) -> dict:
    """Sample every plain caption ``per_caption`` times; share with the asked colour/shape/both."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    rows, hits = [], {"colour": 0, "shape": 0, "both": 0}
    grid_rows = []
    total = 0
    for i, (text, colour, shape) in enumerate(plain_captions()):
        gen = torch.Generator().manual_seed(seed + i)
        images = pipe(
            [text] * per_caption,
            height=32,
            width=32,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=gen,
            output_type="np",
        ).images
        labels = [classify(im) for im in images]
        grid_rows.append(np.concatenate(list(images), axis=1))
        c = sum(lab.colour == colour for lab in labels)
        s = sum(lab.shape == shape for lab in labels)
        b = sum(lab.colour == colour and lab.shape == shape for lab in labels)
        rows.append((text, c, s, b))
        hits["colour"] += c
        hits["shape"] += s
        hits["both"] += b
        total += per_caption
    width = max(len(r[0]) for r in rows)
    print(f"{'caption':<{width}}  colour  shape  both   (of {per_caption}; guidance {guidance}, {steps} DDIM steps)")
    for text, c, s, b in rows:
        print(f"{text:<{width}}  {c:6d} {s:6d} {b:5d}")
    rates = {k: v / total for k, v in hits.items()}
    if grid is not None:
        from dreamdist.toy.shapes import to_pil

        to_pil(np.concatenate(grid_rows, axis=0)).resize((32 * per_caption * 3, 32 * len(grid_rows) * 3), 0).save(grid)
    print(f"overall: colour {rates['colour']:.1%}  shape {rates['shape']:.1%}  both {rates['both']:.1%}  of {total}")
    return rates


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("extensions/dreamdist/toy/model"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (results depend on it)")
    p.add_argument("--images", type=int, default=12000, help="size of the drawn training set")
    p.add_argument("--vae-steps", type=int, default=400)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--vae-kl", type=float, default=1e-4, help="KL weight per latent dimension")
    p.add_argument("--steps", type=int, default=1800, help="text encoder + UNet steps")
    p.add_argument("--batch", type=int, default=48)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema", type=float, default=0.998)
    p.add_argument("--min-snr", type=float, default=5.0)
    p.add_argument("--p-uncond", type=float, default=0.1, help="caption dropout for classifier-free guidance")
    p.add_argument(
        "--p-drop",
        type=float,
        nargs=3,
        default=(0.1, 0.1, 0.5),
        metavar=("COLOUR", "SHAPE", "BG"),
        help="probability of leaving each attribute out of a caption",
    )
    p.add_argument("--eval", type=int, default=0, metavar="N", help="after training, sample each plain caption N times")
    p.add_argument("--eval-guidance", type=float, default=7.5)
    p.add_argument("--eval-steps", type=int, default=25)
    p.add_argument("--eval-grid", type=Path, default=None, help="save the evaluation samples as one PNG grid")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import CLIPTokenizer

    images_np, specs = make_dataset(args.images, seed=args.seed)
    images = torch.from_numpy(images_np).permute(0, 3, 1, 2).contiguous() * 2 - 1
    log(f"drew {len(specs)} training images", t0)

    vae = build_vae()
    log(f"VAE {sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M params", t0)
    train_vae(vae, images, args, torch.Generator().manual_seed(args.seed + 1), t0)
    latent_mean, latent_std = encode_all(vae, images)
    args.scaling_factor = float(1.0 / latent_mean.std())
    vae.register_to_config(scaling_factor=args.scaling_factor)
    log(f"cached latents {tuple(latent_mean.shape)}; scaling factor {args.scaling_factor:.4f}", t0)

    work = args.out.with_name(f".{args.out.name}.work")
    shutil.rmtree(work, ignore_errors=True)
    write_tokenizer(work / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(work / "tokenizer")
    captions = CaptionTable(tokenizer)
    text_encoder = build_text_encoder(tokenizer)
    unet = build_unet()
    n_unet = sum(p.numel() for p in unet.parameters())
    n_text = sum(p.numel() for p in text_encoder.parameters())
    log(f"UNet {n_unet / 1e6:.2f}M, text encoder {n_text / 1e6:.2f}M params; {len(captions.texts)} captions", t0)
    scheduler = sd_scheduler()
    unet, text_encoder = train_denoiser(
        unet, text_encoder, scheduler, latent_mean, latent_std, specs, captions, args, t0
    )

    train_seconds = time.time() - t0
    info = {
        "what": "dreamdist toy model: tiny SD-2-architecture text-to-image model trained on toy shapes",
        "trained_by": "scripts/train_toy_model.py",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "train_seconds": round(train_seconds, 1),
        "torch": torch.__version__,
    }
    out = save_pipeline(args.out, vae, text_encoder, unet, work / "tokenizer", info)
    shutil.rmtree(work, ignore_errors=True)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"saved {out} ({size / 1e6:.2f} MB); training took {train_seconds:.0f}s", t0)
    if args.eval:
        rates = evaluate(out, args.eval, args.seed + 1000, args.eval_guidance, args.eval_steps, args.eval_grid)
        info["eval"] = {"per_caption": args.eval, "guidance": args.eval_guidance, "steps": args.eval_steps, **rates}
        (out / "TOY_MODEL.json").write_text(json.dumps(info, indent=2) + "\n")
        log("evaluation done", t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
