"""Sample images from one or more learned prompt distributions.

Image i uses seed SEED+i for its prompt sample and its noise, so `--index 7` (or `--seed 7 --n 1`)
rebuilds image 7 of a run bit for bit with the same --batch-size, device and precision. Several
files are mixed by the paper's eq. 7 (--weights, --mix-rule), each re-fitted in --template (text-guided
editing: "a photo of {} at night") or, without it, in its own training template; --std-scale scales
each file's sigma before the mix. Several --gamma values give the Figure-5 grid (gamma scales the
mixed sigma).

Output: one PNG per image (its parameters, and the command that rebuilds it, in PNG text chunks),
grid.png and manifest.json. Existing files are never overwritten: an --out folder that exists and
is not empty is refused; without --out a fresh samples/NAME folder is picked (samples/NAME-2, -3...
if taken). Nothing is written until every input checks out, and a failed run leaves no folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dreamdist.sampling import RunResult, SampleSettings


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `sample`, `sweep-gamma` and `mix`: the fields of ``SampleSettings`` they
    have in common. Defaults described in words have no "(default: ...)" (see cli.HelpFormatter)."""
    from dreamdist.core.gaussian import MIX_RULES
    from dreamdist.core.runtime import PRECISIONS

    parser.add_argument(
        "--template",
        help="prompt template with exactly one {} where the learned vectors go, "
        "e.g. 'a photo of {} at night'; every file is re-encoded in it "
        "(default: each file's own training template)",
    )
    parser.add_argument(
        "--mix-rule",
        choices=MIX_RULES,
        default="paper",
        help="eq. 7 sigma rule: paper = sum sqrt(a_i) sigma_i; "
        "reference = sqrt(sum (a_i sigma_i)^2) as the authors' generate.py",
    )
    parser.add_argument(
        "--std-scale",
        nargs="+",
        type=float,
        default=None,
        metavar="S",
        help="per-file diversity: file i's sigma_i becomes S_i * sigma_i before the mix (the "
        "authors' generate.py --std_scale); one value per file in the files' order, or one "
        "for all (default: 1). --gamma scales the mixed sigma after it",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of image 0; image i uses SEED+i")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps")
    parser.add_argument("--guidance-scale", type=float, default=7.5, help="classifier-free guidance scale")
    parser.add_argument("--negative", default="", help="negative prompt, plain text (default: none)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="images per pipeline call; every call runs exactly this many (a short last batch "
        "is padded), so bit-identical regeneration needs the same batch size",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder; refused if it exists and is not empty (nothing is ever "
        "overwritten). Default: a fresh samples/NAME folder, -2, -3... appended if taken",
    )
    parser.add_argument(
        "--model",
        help="diffusers model folder or hub id (default: the base model named in "
        "the first file; must have the same text encoder)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1...")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="auto: fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--height", type=int, default=None, help="image height, multiple of 8 (default: the model's)")
    parser.add_argument("--width", type=int, default=None, help="image width, multiple of 8 (default: the model's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def settings_from_args(args: argparse.Namespace, **fields: Any) -> SampleSettings:
    """The one ``SampleSettings`` of a sampling command: the common options plus the command's own
    ``fields`` (gamma, n, weights...)."""
    from dreamdist.sampling import SampleSettings

    return SampleSettings(
        template=args.template,
        mix_rule=args.mix_rule,
        std_scale=args.std_scale,
        seed=args.seed,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        negative=args.negative,
        batch_size=args.batch_size,
        model=args.model,
        device=args.device,
        precision=args.precision,
        height=args.height,
        width=args.width,
        progress=not args.no_progress,
        **fields,
    )


def report(result: RunResult, what: str) -> None:
    n = len(result.images)
    print(
        f"wrote {n} {what if n != 1 else what.rstrip('s')}, {result.grid.name} and {result.manifest.name} "
        f"to {result.out_dir}"
    )
    t = result.timing
    if t.get("total_s"):
        outside = t["total_s"] - t["pipeline_s"]
        print(
            f"time: {t['total_s']:.1f}s after model load ({t['load_s']:.1f}s), "
            f"{outside / t['total_s']:.1%} outside the pipeline"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="DIST", help="distribution .safetensors file(s)")
    parser.add_argument(
        "--weights",
        nargs="+",
        type=float,
        default=None,
        help="one mixing weight per file, >= 0 (normalised to sum 1; default: equal)",
    )
    parser.add_argument(
        "--gamma",
        nargs="+",
        type=float,
        default=[1.0],
        help="diversity scale of the (mixed) distribution (0 = the mean prompt); several "
        "values give a sweep grid, one row each (per-file scales: --std-scale)",
    )
    parser.add_argument("--n", type=int, default=16, help="number of images (indices 0..N-1)")
    parser.add_argument(
        "--index",
        nargs="+",
        type=int,
        default=None,
        help="only these image indices of the run (seeds SEED+I), e.g. to rebuild one image",
    )
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from dreamdist.sampling import sample

    settings = settings_from_args(args, gamma=args.gamma, n=args.n, indices=args.index, weights=args.weights)
    result = sample(args.files, args.out, settings)
    report(result, "images")
    return 0
