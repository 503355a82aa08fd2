"""Score generated images against the reference images with the paper's Table-1 metrics:

  FID       Frechet distance of Inception-v3 pool3 features (torch-fidelity's FID network;
            lower is better). Needs: pip install "dreamdist[evaluate]"
  CLIP-I    mean cosine similarity of CLIP image embeddings over all (generated, reference) pairs
            (--clip-model, default openai/clip-vit-base-patch32)
  DINO      the same with DINO ViT-S/16 [CLS] features, as DreamBooth (--dino-model)
  density   Naeem et al. 2020, k=5, on Inception features by default (--dc-features)
  coverage  idem
  diversity mean pairwise cosine distance (1 - cosine similarity) between the generated images' own
            CLIP embeddings (--diversity-features; higher = more varied; no references involved)

The default encoders download their weights on first use (Hugging Face hub cache for CLIP/DINO,
torch-fidelity's cache for Inception); --clip-model / --dino-model also take local folders and
--inception-weights a local file, for offline machines.

GENERATED may be a `dreamdist sample` / `sweep-gamma` / `mix` output folder (its manifest.json names
the distribution, template and gamma; a sweep gives one row per gamma, a mix one row per weight) or
any folder of images, or a `dreamdist batch` output folder (its manifest.jsonl): one row of the front
stills of its finished assets (test view 0, colour panel, as in its gallery.html), so diversity is across
the 3D assets and CLIP-I/DINO their similarity to the references. Several GENERATED folders are
compared in one table against one REFERENCES folder (embedded once). REFERENCES is a folder of
reference images, as for `dreamdist train`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SAID = "%(default).0s"  # see cli/sample.py: keeps "(default: None)" out of help texts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dreamdist.evaluate.core import METRICS
    from dreamdist.evaluate.encoders import DEFAULT_CLIP_MODEL, DEFAULT_DINO_MODEL, SPACES
    from dreamdist.evaluate.metrics import DEFAULT_K

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "generated",
        nargs="+",
        type=Path,
        metavar="GENERATED",
        help="folder(s) of generated images (a `dreamdist sample` or `dreamdist batch` output, or any image folder)",
    )
    parser.add_argument("references", type=Path, metavar="REFERENCES", help="folder of reference images")
    parser.add_argument(
        "--metrics",
        nargs="+",
        choices=METRICS,
        default=list(METRICS),
        metavar="METRIC",
        help=f"which metrics, from: {' '.join(METRICS)} (default: all)" + SAID,
    )
    parser.add_argument(
        "--clip-model",
        default=DEFAULT_CLIP_MODEL,
        metavar="ID_OR_FOLDER",
        help=f"CLIP checkpoint for CLIP-I: hub id or local folder (default: {DEFAULT_CLIP_MODEL})" + SAID,
    )
    parser.add_argument(
        "--dino-model",
        default=DEFAULT_DINO_MODEL,
        metavar="ID_OR_FOLDER",
        help=f"DINO ViT checkpoint for DINO: hub id or local folder (default: {DEFAULT_DINO_MODEL})" + SAID,
    )
    parser.add_argument(
        "--inception-weights",
        default=None,
        type=Path,
        metavar="FILE",
        help="local torch-fidelity Inception-v3 weights file (default: downloaded by "
        "torch-fidelity on first use)" + SAID,
    )
    parser.add_argument(
        "--fid-features",
        choices=SPACES,
        default="inception",
        help="feature space of the Frechet distance (default: inception, i.e. FID; clip/dino "
        "give FD_CLIP/FD_DINO)" + SAID,
    )
    parser.add_argument(
        "--dc-features",
        choices=SPACES,
        default="inception",
        help="feature space of density and coverage (default: inception)" + SAID,
    )
    parser.add_argument(
        "--diversity-features",
        choices=SPACES,
        default="clip",
        help="feature space of diversity (default: clip, the CLIP-I embeddings)" + SAID,
    )
    parser.add_argument(
        "--k",
        type=int,
        default=DEFAULT_K,
        help=f"nearest neighbours for density/coverage (default: {DEFAULT_K}, as the paper)" + SAID,
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, metavar="N", help="images per encoder call (default: 32)" + SAID
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1... (default: auto)" + SAID
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from dreamdist.evaluate.core import EvaluateSettings, evaluate_folders
    from dreamdist.evaluate.report import format_table, to_json

    settings = EvaluateSettings(
        metrics=tuple(dict.fromkeys(args.metrics)),
        clip_model=args.clip_model,
        dino_model=args.dino_model,
        inception_weights=None if args.inception_weights is None else str(args.inception_weights),
        fid_features=args.fid_features,
        dc_features=args.dc_features,
        diversity_features=args.diversity_features,
        k=args.k,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
    )
    report = evaluate_folders(args.generated, args.references, settings)
    print(to_json(report) if args.json else format_table(report))
    sys.stdout.flush()
    return 0
