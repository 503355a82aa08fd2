"""Stage 2: fine-tune the diffusion model's UNet on the reference images, conditioned on a learned
prompt distribution that stays frozen (Zeng, Suganuma & Okatani's two-stage recipe, with the
distribution's samples as the condition instead of one learned token).

Each step noises each reference image once and conditions the UNet on S fresh samples of the
distribution, so the model learns the look across the whole distribution, not one prompt. Defaults
are the paper's stage 2: the full UNet, lr 5e-6, 800 steps, a checkpoint every 200, no prior
preservation. --method lora trains LoRA adapters instead (needs peft: pip install 'dreamdist[lora]';
lr ~1e-4 suits it); --class-prompt turns on DreamBooth's prior-preservation loss on class images the
base model draws once (cached in OUT.class-images/).

Output: OUT/, a diffusers pipeline folder whose unet/ is the fine-tuned one and whose other parts are
links to the base model's folders (no copies); `dreamdist sample DIST --model OUT`, sweep-gamma, mix,
StableDiffusionPipeline.from_pretrained(OUT) and threestudio's stable-diffusion-guidance
(pretrained_model_name_or_path) load it. Written atomically at the end. Also OUT.ckpt (continue with
--resume) and OUT.log.csv (losses per step).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm.auto import tqdm

from dreamdist.cli.settings import add_settings, flags, given_settings, print_result
from dreamdist.finetune.config import FinetuneConfig
from dreamdist.utils.errors import InputError

GROUPS = {
    "method": "method (Zeng et al.'s stage 2 defaults)",
    "lora": "LoRA (--method lora)",
    "prior preservation (DreamBooth)": "prior preservation (DreamBooth; off by default)",
    "images": "images",
    "run": "run",
}
FLAGS = flags(FinetuneConfig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    none = argparse.SUPPRESS
    parser.add_argument("distribution", type=Path, metavar="DIST", help="the stage-1 distribution file (only read)")
    parser.add_argument("images", type=Path, metavar="IMAGES_DIR", help="folder of reference images (stage 1's)")
    parser.add_argument(
        "--out", type=Path, required=True, default=none, help="folder to write the fine-tuned diffusers pipeline to"
    )
    parser.add_argument(
        "--model",
        default=none,
        help="diffusers model folder or hub id (default: the base model named in DIST; must have its text encoder)",
    )
    groups = add_settings(parser, FinetuneConfig, GROUPS)
    groups["prior preservation (DreamBooth)"].add_argument(
        "--class-dir", type=Path, default=none, help="class-image cache folder (default: OUT.class-images)"
    )
    run = groups["run"]
    run.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1...")
    run.add_argument("--checkpoint", type=Path, default=none, help="checkpoint file (default: OUT.ckpt)")
    run.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint (ends as if never interrupted)"
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --out; without --resume, discard an existing checkpoint",
    )
    run.add_argument("--log-csv", type=Path, default=none, help="per-step loss log (default: OUT.log.csv)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    return FinetuneConfig(**given_settings(args, FinetuneConfig))


def _say(message: str) -> None:
    tqdm.write(f"dreamdist finetune: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from dreamdist.finetune import finetune
    from dreamdist.train import SettingError, TrainingInterrupted, messages_to

    config = config_from_args(args)
    try:
        with messages_to(_say):
            result = finetune(
                args.distribution,
                args.images,
                args.out,
                config,
                model=getattr(args, "model", None),
                device=args.device,
                resume=args.resume,
                overwrite=args.force,
                checkpoint=getattr(args, "checkpoint", None),
                log_csv=getattr(args, "log_csv", None),
                class_dir=getattr(args, "class_dir", None),
                progress=not args.no_progress,
            )
    except SettingError as exc:
        raise InputError(exc.named(FLAGS[exc.field])) from None
    except TrainingInterrupted as stop:
        _say(str(stop))
        return 143 if stop.signal_name == "SIGTERM" else 130
    print_result(result, f"{config.method} UNet")
    if result.class_images_made:
        print(f"drew {result.class_images_made} class image(s) in {result.class_image_s:.1f}s")
    print(f"use it: dreamdist sample {args.distribution} --model {result.out}")
    return 0
