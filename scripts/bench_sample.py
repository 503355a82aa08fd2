#!/usr/bin/env python
"""Benchmark `dreamdist sample`: images per second and the share of time spent outside the pipeline
call (Gaussian fitting, prompt sampling, latent draws, PNG saving, grid, manifest).

Two random-weight models built with the real classes (nothing is downloaded):
  tiny    the test model (text hidden 32, UNet (32, 64), 32 px)
  medium  text hidden 256 (4 layers), UNet (64, 128, 256), VAE with 8x downscale, 256 px
Each (model, batch size) runs `dreamdist.sampling.sample` end to end into a fresh folder with a
preloaded pipeline (model loading is reported on its own, not in the shares). Target: outside
share under 5% at batch size 4.

    python scripts/bench_sample.py [--device auto] [--steps 25] [--n 16] [--batch-sizes 1 4 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def make_medium_model(path: Path, resolution: int = 256) -> Path:
    """A mid-sized random SD-2-architecture pipeline, same classes as the tiny one."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    from dreamdist.tiny_model import clip_text_encoder, sd_scheduler, write_tokenizer

    if (path / "model_index.json").exists():
        return path
    write_tokenizer(path / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(path / "tokenizer")
    torch.manual_seed(0)
    hidden = 256
    text_encoder = clip_text_encoder(tokenizer, hidden, layers=4, mlp_ratio=4)
    unet = UNet2DConditionModel(
        sample_size=resolution // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(64, 128, 256),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=hidden,
        attention_head_dim=(2, 4, 8),
        use_linear_projection=True,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=resolution,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 64, 128, 128),
        layers_per_block=1,
    )
    scheduler = sd_scheduler()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def random_distribution(path: Path, sampler, model: Path, k: int = 32, m: int = 4) -> Path:
    import torch

    from dreamdist.core.distfile import DistributionFile, Fingerprint, save_distribution

    enc = sampler.encoder
    ctx = torch.randn(k, m, enc.token_dim, generator=torch.Generator().manual_seed(0))
    dist = DistributionFile(
        ctx=ctx,
        base_model=str(model),
        fingerprint=Fingerprint.of(enc.text_encoder),
        template="a photo of {}",
        training={"steps": 0},
    )
    return save_distribution(path, dist)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--n", type=int, default=16, help="images per measured run")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--models", nargs="+", default=["tiny", "medium"], choices=["tiny", "medium"])
    ap.add_argument("--workdir", type=Path, default=None, help="where models and outputs go (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args()

    from dreamdist.utils.quiet import quiet_libraries

    quiet_libraries()
    import torch

    from dreamdist.sampling import Sampler, SampleSettings, sample
    from dreamdist.tiny_model import make_tiny_model

    work = args.workdir or Path(tempfile.mkdtemp(prefix="dreamdist-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        model_dir = work / f"model-{name}"
        if not (model_dir / "model_index.json").exists():
            make_tiny_model(model_dir) if name == "tiny" else make_medium_model(model_dir)
        began = time.perf_counter()
        sampler = Sampler.load(model_dir, args.device, args.precision)
        load_s = time.perf_counter() - began
        dist = random_distribution(work / f"{name}.safetensors", sampler, model_dir)
        h, w = sampler.image_size()
        for bs in args.batch_sizes:
            settings = SampleSettings(
                n=args.n, batch_size=bs, steps=args.steps, progress=False, template="a photo of {} at night"
            )
            warm = work / f"warm-{name}-{bs}"
            sample([dist], warm, replace(settings, n=bs), sampler=sampler)  # warm-up: kernels, allocator, autotune
            out = work / f"out-{name}-{bs}"
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            res = sample([dist], out, settings, sampler=sampler)
            t = res.timing
            outside = t["total_s"] - t["pipeline_s"]
            rows.append(
                {
                    "model": name,
                    "size": f"{h}x{w}",
                    "batch": bs,
                    "images": args.n,
                    "steps": args.steps,
                    "images_per_s": round(args.n / t["total_s"], 2),
                    "total_s": t["total_s"],
                    "pipeline_s": t["pipeline_s"],
                    "outside_s": round(outside, 4),
                    "outside_share": round(outside / t["total_s"], 4),
                    "fit_s": t["fit_s"],
                    "load_s": round(load_s, 2),
                    "device": str(sampler.device),
                    "precision": json.loads((out / "manifest.json").read_text())["precision"],
                }
            )
            shutil.rmtree(warm, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
        del sampler
    dev = rows[0]["device"] if rows else "?"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(
        f"device {dev} ({gpu}), {rows[0]['precision'] if rows else ''}, {args.steps} steps, "
        f"{args.n} images per run, model load excluded"
    )
    print("| model  | size    | batch | images/s | total s | pipeline s | outside s | outside share | fit s |")
    print("|--------|---------|-------|----------|---------|------------|-----------|---------------|-------|")
    for r in rows:
        print(
            f"| {r['model']:<6} | {r['size']:<7} | {r['batch']:>5} | {r['images_per_s']:>8.2f} "
            f"| {r['total_s']:>7.2f} | {r['pipeline_s']:>10.2f} | {r['outside_s']:>9.3f} "
            f"| {r['outside_share']:>12.1%} | {r['fit_s']:>5.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
