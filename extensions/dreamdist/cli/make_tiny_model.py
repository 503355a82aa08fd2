"""Write a tiny random-weight Stable-Diffusion-2-architecture model (diffusers format).

It loads with StableDiffusionPipeline.from_pretrained(DIR) in seconds on a CPU and stands in for
stabilityai/stable-diffusion-2-1 (v-prediction) or -2-1-base (epsilon) in tests and demos. Its
images are noise by design: it proves the pipeline, not the quality.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dreamdist.utils.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="folder to write the model into")
    parser.add_argument(
        "--prediction-type",
        choices=("v_prediction", "epsilon"),
        default="v_prediction",
        help="v_prediction mimics SD 2.1, epsilon SD 2.1-base",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--force", action="store_true", help="replace an existing folder")


def run(args: argparse.Namespace) -> int:
    from dreamdist.tiny_model import make_tiny_model

    if args.out.exists() and any(args.out.iterdir()) and not args.force:
        raise InputError(f"{args.out} exists and is not empty; pass --force to replace it")
    path = make_tiny_model(args.out, prediction_type=args.prediction_type, seed=args.seed)
    print(f"wrote tiny {args.prediction_type} model to {path}")
    return 0
