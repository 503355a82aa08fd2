"""Show what a distribution file holds: metadata, K and M, how much each text position varies
(sigma per position under the training template), and the vocabulary token nearest to each mean
learned vector (as the reference code's "interpret"); for a mixture (``train --components``), each
component with its weight and the reference images it explains."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dreamdist.utils.errors import DreamdistError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="distribution .safetensors file")
    parser.add_argument("--model", help="base model (default: the one named in the file)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--top", type=int, default=3, help="nearest tokens listed per learned vector")


def run(args: argparse.Namespace) -> int:
    from dreamdist.cli.inspection import file_summary, inspect_distribution
    from dreamdist.core.distfile import load_distribution

    dist = load_distribution(args.file)
    report = {"file": str(args.file), **file_summary(dist)}
    model = args.model or dist.base_model
    try:
        report.update(inspect_distribution(dist, model, args.top))
    except DreamdistError:
        raise
    except Exception as exc:  # noqa: BLE001 - the metadata is still worth showing offline
        report["model_error"] = f"could not load {model!r} for the feature summary: {exc}"
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key in (
        "file",
        "format_version",
        "base_model",
        "created",
        "num_components",
        "num_prompts",
        "num_tokens",
        "template",
        "image_count",
    ):
        print(f"{key:>14}: {report[key]}")
    print(f"{'training':>14}: {report['training']}")
    print(f"{'fingerprint':>14}: {report['fingerprint']}")
    if "model_error" in report:
        print(report["model_error"])
    for comp in report.get("components", [report]):
        if "component" in comp:
            print(
                f"\ncomponent {comp['component']}: weight {comp['weight']:.3f}, {len(comp['images'])} images: "
                f"{', '.join(comp['images'])}"
            )
        if "positions" in comp:
            _print_component(comp)
    return 0


def _print_component(report: dict) -> None:
    print("\nsigma per position (mean over channels) under the training template:")
    for row in report["positions"]:
        print(f"  {row['position']:>3} {row['token']:<18} sigma {row['sigma_mean']:.4f}  |mu| {row['mu_norm']:.3f}")
    print(f"  padding positions: mean sigma {report['padding_sigma_mean']:.4f}")
    print("\nnearest vocabulary tokens to each mean learned vector (cosine):")
    for row in report["nearest_tokens"]:
        pairs = ", ".join(f"{t!r} {c:.2f}" for t, c in row["tokens"])
        print(f"  vector {row['index']}: {pairs}")
