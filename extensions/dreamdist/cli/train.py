"""Learn a prompt distribution from a folder of reference images (DreamDistribution, Zhao et al. 2023).

K soft prompts of M learned token vectors define a Gaussian in the text encoder's feature space
(mean and std over the K prompts); each step, S samples from it condition the frozen diffusion
model on the same noisy image latent, and the mean diffusion loss over the samples, plus
ORTHO_WEIGHT times the orthogonality loss that keeps the K prompts apart, trains the vectors.
The defaults are the paper's: K=32, M=8, S=4, lambda=5e-3, 1500 steps, constant lr 1e-3, and its
reference script's batch size 4 with AdamW. Only the learned vectors change; the model stays frozen.

Images: jpg/png/webp/bmp, any size or mode (transparency on white, EXIF orientation honoured),
resized and centre-cropped to the model's resolution, with horizontal-flip augmentation. 5-20
images work best. Output, for --out dist.safetensors: the distribution file, dist.ckpt (latest
checkpoint, every --checkpoint-every steps and on Ctrl-C / SIGTERM; continue with --resume),
dist.log.csv (losses per step) and, with --preview-every, dist.previews/step-NNNNNN.png grids.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from dreamdist.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dreamdist.train import ORTHO_KINDS, TrainConfig

    d = TrainConfig()
    parser.add_argument("images", type=Path, metavar="IMAGES_DIR", help="folder of reference images")
    none = argparse.SUPPRESS  # no "(default: None)" in --help where the help text says what happens
    parser.add_argument("--model", required=True, default=none,
                        help="diffusers model folder or hub id: stabilityai/stable-diffusion-2-1 (v-prediction, "
                        "the paper's) or stabilityai/stable-diffusion-2-1-base (epsilon)")
    parser.add_argument("--out", type=Path, required=True, default=none, help="distribution file to write (.safetensors)")

    method = parser.add_argument_group("method (paper defaults)")
    method.add_argument("--num-prompts", type=int, default=d.num_prompts, metavar="K",
                        help="K learnable prompts whose features define the Gaussian (paper: 32)")
    method.add_argument("--num-tokens", type=int, default=d.num_tokens, metavar="M",
                        help="M learned token vectors per prompt (paper: 8; 4 in its quantitative study)")
    method.add_argument("--samples", type=int, default=d.samples, metavar="S",
                        help="S reparameterised prompt samples per image and step, averaged (paper: 4)")
    method.add_argument("--ortho-weight", type=float, default=d.ortho_weight, metavar="LAMBDA",
                        help="weight of the orthogonality loss between the K prompts (paper: 5e-3; 0 = off)")
    method.add_argument("--ortho-kind", choices=ORTHO_KINDS, default=d.ortho_kind,
                        help="abs: mean |cos| of prompt pairs (paper eq. 5); squared: cos^2 (reference code)")
    method.add_argument("--steps", type=int, default=d.steps, help="optimisation steps (paper: 1500)")
    method.add_argument("--lr", type=float, default=d.lr, help="learning rate, constant (paper: 1e-3)")
    method.add_argument("--batch-size", type=int, default=d.batch_size,
                        help="images per step (reference script: 4); the UNet sees BATCH_SIZE x S per step")
    method.add_argument("--weight-decay", type=float, default=d.weight_decay,
                        help="AdamW weight decay (reference script: 1e-2)")
    method.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm,
                        help="clip the gradient norm (reference script: 1.0; 0 = off)")

    text = parser.add_argument_group("prompt template")
    text.add_argument("--template", default=none,
                      help="training template with one {} where the learned vectors go, e.g. 'a photo of {}' "
                      "(default: the learned vectors alone)")
    text.add_argument("--prefix", default=none, help="text before the learned vectors (alternative to --template)")
    text.add_argument("--suffix", default=none, help="text after the learned vectors (alternative to --template)")

    data = parser.add_argument_group("images")
    data.add_argument("--resolution", type=int, default=none,
                      help="training resolution in pixels (default: the model's, 768 for SD 2.1, 512 for 2.1-base)")
    data.add_argument("--no-flip", action="store_true", help="no horizontal-flip augmentation")

    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=d.seed, help="seed of the initial vectors and every random draw")
    run.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1...")
    run.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default=d.precision,
                     help="auto: fp32 on CPU; on CUDA bf16 autocast (fp16 with loss scaling where bf16 is missing)")
    run.add_argument("--gradient-checkpointing", action="store_true",
                     help="recompute the frozen UNet's activations in the backward pass: less GPU memory, slower")
    run.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                     help="write the checkpoint every N steps (also on Ctrl-C / SIGTERM and at the end; 0 = only then)")
    run.add_argument("--checkpoint", type=Path, default=none, help="checkpoint file (default: OUT with .ckpt)")
    run.add_argument("--resume", action="store_true",
                     help="continue from the checkpoint (optimizer and RNG state: ends as if never interrupted)")
    run.add_argument("--force", action="store_true",
                     help="overwrite an existing --out; without --resume, discard an existing checkpoint")
    run.add_argument("--log-csv", type=Path, default=none,
                     help="per-step loss log (default: OUT with .log.csv)")
    run.add_argument("--preview-every", type=int, default=d.preview_every,
                     help="every N steps, render a grid of images from the current distribution (0 = off)")
    run.add_argument("--preview-count", type=int, default=d.preview_count, help="images per preview grid")
    run.add_argument("--preview-steps", type=int, default=d.preview_steps, help="denoising steps of preview images")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace):
    from dreamdist.templates import Template
    from dreamdist.train import TrainConfig

    for name in ("template", "prefix", "suffix", "resolution", "checkpoint", "log_csv"):
        if not hasattr(args, name):
            setattr(args, name, None)
    if args.template is not None and (args.prefix or args.suffix):
        raise InputError("give either --template or --prefix/--suffix, not both")
    template = args.template if args.template is not None else \
        str(Template((args.prefix or "").strip(), (args.suffix or "").strip()))
    return TrainConfig(
        num_prompts=args.num_prompts, num_tokens=args.num_tokens, samples=args.samples,
        ortho_weight=args.ortho_weight, ortho_kind=args.ortho_kind, steps=args.steps, lr=args.lr,
        batch_size=args.batch_size, weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
        template=template, resolution=args.resolution, flip=not args.no_flip, seed=args.seed,
        precision=args.precision, gradient_checkpointing=args.gradient_checkpointing,
        checkpoint_every=args.checkpoint_every, preview_every=args.preview_every,
        preview_count=args.preview_count, preview_steps=args.preview_steps,
    )


def _say(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"dreamdist train: {message}", file=sys.stderr)  # above a running progress bar, not through it


def run(args: argparse.Namespace) -> int:
    from dreamdist.train import TrainingInterrupted, train_distribution

    config = config_from_args(args)

    def show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
        _say(f"warning: {message}")

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show_warning
        try:
            result = train_distribution(
                args.images, args.model, args.out, config, device=args.device, resume=args.resume,
                overwrite=args.force, checkpoint=args.checkpoint, log_csv=args.log_csv,
                progress=not args.no_progress, log=_say,
            )
        except TrainingInterrupted as stop:
            _say(str(stop))
            return 143 if stop.signal_name == "SIGTERM" else 130
    done = f"{result.step - result.resumed_from} steps" + (f" (resumed at {result.resumed_from})" if result.resumed_from else "")
    print(f"wrote {result.out} ({config.num_prompts} prompts x {config.num_tokens} tokens, {result.image_count} images, "
          f"{done}, {result.seconds:.1f}s)")
    if result.diffusion_losses:
        tail = result.diffusion_losses[-min(50, len(result.diffusion_losses)):]
        print(f"final diffusion loss (mean of last {len(tail)} steps): {sum(tail) / len(tail):.4f}")
    extras = [f"log {result.log_csv}" if result.log_csv else "", f"checkpoint {result.checkpoint}" if result.checkpoint else "",
              f"{len(result.previews)} preview grid(s) in {result.previews[0].parent}" if result.previews else ""]
    extras = [e for e in extras if e]
    if extras:
        print("also: " + ", ".join(extras))
    return 0
