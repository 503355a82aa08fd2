"""Figure-5-style grid: the same seeds (columns) across gamma values (rows), gamma scaling the
diversity of the prompt samples (0 = the mean prompt). Same as `dreamdist sample --gamma G1 G2 ...`.

Output: one PNG per cell with its parameters in PNG text chunks, grid.png and manifest.json; an
--out folder that exists and is not empty is refused (nothing is overwritten); without --out a
fresh samples/NAME folder is picked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dreamdist.cli.sample import add_common_arguments, report, settings_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dreamdist.sampling import DEFAULT_GAMMAS

    parser.add_argument("files", nargs="+", type=Path, metavar="DIST", help="distribution .safetensors file(s)")
    parser.add_argument(
        "--gammas",
        "--gamma",
        nargs="+",
        type=float,
        default=list(DEFAULT_GAMMAS),
        dest="gammas",
        help="gamma values, one grid row each",
    )
    parser.add_argument("--n", type=int, default=4, help="seeds per row (SEED .. SEED+N-1)")
    parser.add_argument(
        "--weights", nargs="+", type=float, default=None, help="mixing weights, one per file (default: equal)"
    )
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from dreamdist.sampling import sweep_gamma

    settings = settings_from_args(args, gamma=args.gammas, n=args.n, weights=args.weights)
    result = sweep_gamma(args.files, args.out, settings)
    report(result, "images")
    return 0
