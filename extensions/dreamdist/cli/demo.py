"""Run the whole pipeline on the embedded model, on a CPU with no downloads, in a few minutes:
draw two reference sets, train a distribution on each, then sample a gamma sweep, a text-edited set
and a two-distribution mix. Everything goes under --out with an index (README.txt, index.html).
The embedded model is tiny, so images are rough by design: this proves the pipeline, not quality."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("demo-out"),
        help="output folder; if it exists, demo-out-1, -2... is used instead (never clobbered)",
    )
    parser.add_argument("--steps", type=int, default=60, help="training steps per distribution")
    parser.add_argument("--keep", action="store_true", help="also keep the training checkpoints")
    parser.add_argument("--model", help="diffusers model folder (default: the shipped toy model)")


def run(args: argparse.Namespace) -> int:
    from dreamdist.demo import NEXT_STEPS, NOTE, run_demo

    result = run_demo(args.out, steps=args.steps, keep=args.keep, model=args.model)
    print(f"\ndemo written to {result.out}/ (open index.html or README.txt)")
    for path, what in result.entries:
        print(f"  {path:<34} {what}")
    print(f"\n{NOTE}\n\n{NEXT_STEPS}")
    return 0
