"""Figure-6-style interpolation row between two distributions: columns mix A and B by eq. 7 with
weights (1-t, t), t = 0, 1/(N+1), ..., 1 for --steps-between N; each row is one seed, the same in
every column, so only the mix changes along a row.

Output: one PNG per cell with its parameters in PNG text chunks, grid.png and manifest.json; an
--out folder that exists and is not empty is refused (nothing is overwritten); without --out a
fresh samples/A--B folder is picked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dreamdist.cli.sample import add_common_arguments, report, settings_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", type=Path, metavar="DIST_A", help="distribution at the left end (t = 0)")
    parser.add_argument("b", type=Path, metavar="DIST_B", help="distribution at the right end (t = 1)")
    parser.add_argument("--steps-between", type=int, default=5, help="mixes between the two pure ends")
    parser.add_argument("--n", type=int, default=1, help="rows: seeds SEED .. SEED+N-1")
    parser.add_argument("--gamma", type=float, default=1.0, help="diversity scale of every sample")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from dreamdist.sampling import mix_row

    settings = settings_from_args(args, gamma=args.gamma, n=args.n)
    result = mix_row(args.a, args.b, args.out, settings, steps_between=args.steps_between)
    report(result, "images")
    return 0
