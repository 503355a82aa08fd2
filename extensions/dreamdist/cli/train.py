"""Learn a prompt distribution from a folder of reference images (DreamDistribution, Zhao et al. 2023).

K soft prompts of M learned token vectors define a Gaussian in the text encoder's feature space
(mean and std over the K prompts); each step, S samples from it condition the frozen diffusion
model on the same noisy image latent, and the mean diffusion loss over the samples, plus
ORTHO_WEIGHT times the orthogonality loss that keeps the K prompts apart, trains the vectors.
The defaults are the paper's: K=32, M=8, S=4, lambda=5e-3, 1500 steps, constant lr 1e-3, and the
authors' train.py's: batch size 4, AdamW, Min-SNR-gamma 5 loss weighting. Only the learned vectors
change; the model stays frozen.

Images: jpg/png/webp/bmp/gif/tiff, any size or mode (transparency on white, EXIF orientation
honoured), resized to the model's resolution on the short side; each step trains on a random square
crop (--crop center: the centre), without flips unless --flip (as the authors' train.sh). 5-20
images work best. Memory: before loading the model, the peak is estimated and printed next to the
device's free memory; --unet-batch auto (default) splits the step's UNet evaluations into chunks,
and then turns on gradient checkpointing, when that is what fits. Output, for --out dist.safetensors:
the distribution file, dist.ckpt (latest checkpoint, every --checkpoint-every steps and on Ctrl-C /
SIGTERM; continue with --resume), dist.log.csv (losses per step) and, with --preview-every,
dist.previews/step-NNNNNN.png grids; all follow your umask.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from tqdm.auto import tqdm

from dreamdist.cli.settings import add_settings, flags, given_settings, print_result
from dreamdist.core.templates import Template
from dreamdist.train import (
    SettingError,
    SettingWarning,
    TrainConfig,
    TrainingInterrupted,
    messages_to,
    train_distribution,
)
from dreamdist.utils.errors import InputError

# TrainConfig's field groups -> --help sections
GROUPS = {
    "method": "method (paper defaults)",
    "mixture": "reference sets with several modes (beyond the paper)",
    "template": "prompt template",
    "images": "images",
    "run": "run",
}
FLAGS = flags(TrainConfig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", type=Path, metavar="IMAGES_DIR", help="folder of reference images")
    none = argparse.SUPPRESS  # no "(default: None)" in --help where the help text says what happens
    parser.add_argument(
        "--model",
        required=True,
        default=none,
        help="diffusers model folder or hub id: stabilityai/stable-diffusion-2-1 (v-prediction, "
        "the paper's) or stabilityai/stable-diffusion-2-1-base (epsilon)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, default=none, help="distribution file to write (.safetensors)"
    )

    groups = add_settings(parser, TrainConfig, GROUPS)

    text = groups["template"]
    text.add_argument("--prefix", default=none, help="text before the learned vectors (alternative to --template)")
    text.add_argument("--suffix", default=none, help="text after the learned vectors (alternative to --template)")

    run = groups["run"]
    run.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1...")
    run.add_argument("--checkpoint", type=Path, default=none, help="checkpoint file (default: OUT with .ckpt)")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint (optimizer and RNG state: ends as if never interrupted)",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing --out; without --resume, discard an existing checkpoint",
    )
    run.add_argument("--log-csv", type=Path, default=none, help="per-step loss log (default: OUT with .log.csv)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    given = given_settings(args, TrainConfig)
    prefix, suffix = getattr(args, "prefix", None), getattr(args, "suffix", None)
    if "template" in given and (prefix or suffix):
        raise InputError("give either --template or --prefix/--suffix, not both")
    given.setdefault("template", str(Template((prefix or "").strip(), (suffix or "").strip())))
    return TrainConfig(**given)


def _say(message: str) -> None:
    tqdm.write(f"dreamdist train: {message}", file=sys.stderr)  # above a running progress bar, not through it


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001
    if isinstance(message, SettingWarning):
        message = message.named(FLAGS[message.field])
    _say(f"warning: {message}")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        try:
            with messages_to(_say):
                result = train_distribution(
                    args.images,
                    args.model,
                    args.out,
                    config,
                    device=args.device,
                    resume=args.resume,
                    overwrite=args.force,
                    checkpoint=getattr(args, "checkpoint", None),
                    log_csv=getattr(args, "log_csv", None),
                    progress=not args.no_progress,
                )
        except SettingError as exc:
            raise InputError(exc.named(FLAGS[exc.field])) from None
        except TrainingInterrupted as stop:
            _say(str(stop))
            return 143 if stop.signal_name == "SIGTERM" else 130
    mixture = f"{config.components} components x " if config.components > 1 else ""
    print_result(result, f"{mixture}{config.num_prompts} prompts x {config.num_tokens} tokens")
    extras = [
        f"log {result.log_csv}" if result.log_csv else "",
        f"checkpoint {result.checkpoint}" if result.checkpoint else "",
        f"{len(result.previews)} preview grid(s) in {result.previews[0].parent}" if result.previews else "",
    ]
    extras = [e for e in extras if e]
    if extras:
        print("also: " + ", ".join(extras))
    return 0
