"""``dreamdist evaluate``: the paper's Table-1 metrics for groups of generated images against one
reference set.

Metrics and their default feature spaces (``EvaluateSettings``):

- ``fid``: Frechet distance between Gaussians fitted to Inception-v3 pool3 features (lower is better).
- ``clip-i``: mean cosine similarity of CLIP image embeddings over all (generated, reference) pairs.
- ``dino``: the same with DINO ViT-S/16 [CLS] features (DreamBooth's DINO metric).
- ``density`` / ``coverage``: Naeem et al. 2020 with k=5, references as the real set, on Inception
  features by default (``dc_features``).
- ``diversity``: how different a group's own images are from each other, the mean over their pairs of
  the cosine distance 1 - cos of their embeddings (higher = more varied), on the CLIP embeddings CLIP-I
  uses by default (``diversity_features``); no references involved. For a ``dreamdist batch`` folder
  (one front still per asset) it is the diversity across the 3D assets.

Each feature space's encoder is loaded once and the references are embedded once, however many
groups are compared. A metric that the image counts do not allow (FID needs 2 images per set,
diversity 2 generated images, density/coverage more than k references) is reported as missing with
the reason, not as an error.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from dreamdist.evaluate import metrics as M
from dreamdist.evaluate.encoders import DEFAULT_CLIP_MODEL, DEFAULT_DINO_MODEL, SPACES, Encoder, load_encoder
from dreamdist.evaluate.imagesets import ImageGroup, generated_groups, reference_paths
from dreamdist.utils.errors import InputError

METRICS = ("fid", "clip-i", "dino", "density", "coverage", "diversity")
LOWER_IS_BETTER = frozenset({"fid"})


@dataclass
class EvaluateSettings:
    metrics: Sequence[str] = METRICS
    clip_model: str = DEFAULT_CLIP_MODEL
    dino_model: str = DEFAULT_DINO_MODEL
    inception_weights: str | None = None
    fid_features: str = "inception"
    dc_features: str = "inception"
    diversity_features: str = "clip"
    k: int = M.DEFAULT_K
    batch_size: int = 32
    device: str = "auto"
    progress: bool = True

    def validate(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise InputError(
                f"--metrics: unknown {', '.join(map(repr, unknown)) or 'empty list'}; choose from {', '.join(METRICS)}"
            )
        for flag, space in (
            ("--fid-features", self.fid_features),
            ("--dc-features", self.dc_features),
            ("--diversity-features", self.diversity_features),
        ):
            if space not in SPACES:
                raise InputError(f"{flag} {space}: choose from {', '.join(SPACES)}")
        if self.k < 1:
            raise InputError(f"--k must be at least 1, not {self.k}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, not {self.batch_size}")

    def space_of(self, metric: str) -> str:
        return {"fid": self.fid_features, "clip-i": "clip", "dino": "dino", "diversity": self.diversity_features}.get(
            metric, self.dc_features
        )

    def spaces(self) -> list[str]:
        """Feature spaces the chosen metrics need, in a fixed order."""
        wanted = {self.space_of(m) for m in self.metrics}
        return [s for s in SPACES if s in wanted]


@dataclass
class EvaluationRow:
    label: str
    n: int
    info: dict[str, Any]
    values: dict[str, float | None]
    notes: dict[str, str] = field(default_factory=dict)


@dataclass
class EvaluationReport:
    references: dict[str, Any]
    encoders: dict[str, str]
    settings: dict[str, Any]
    rows: list[EvaluationRow]
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "references": self.references,
            "encoders": self.encoders,
            "settings": self.settings,
            "rows": [
                {"label": r.label, "images": r.n, **r.info, "metrics": r.values, "notes": r.notes} for r in self.rows
            ],
            "seconds": round(self.seconds, 3),
        }


def _metric_values(
    settings: EvaluateSettings, gen: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]
) -> tuple[dict[str, float | None], dict[str, str]]:
    values: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    dc: tuple[float, float] | None = None
    for metric in settings.metrics:
        g, r = gen[settings.space_of(metric)], ref[settings.space_of(metric)]
        if metric == "fid":
            if len(g) < 2 or len(r) < 2:
                values[metric], notes[metric] = None, "needs at least 2 generated and 2 reference images"
            else:
                values[metric] = M.frechet_distance_of_features(g, r)
        elif metric in ("clip-i", "dino"):
            values[metric] = M.mean_cosine(g, r)
        elif metric == "diversity":
            if len(g) < 2:
                values[metric], notes[metric] = None, "needs at least 2 generated images"
            else:
                values[metric] = M.mean_pairwise_cosine_distance(g)
        else:  # density / coverage, computed together
            if len(r) <= settings.k:
                values[metric] = None
                notes[metric] = f"needs more than k={settings.k} reference images (have {len(r)}); lower --k"
                continue
            if dc is None:
                dc = M.density_coverage(r, g, settings.k)
            values[metric] = dc[0] if metric == "density" else dc[1]
    return values, notes


def evaluate_groups(
    groups: Sequence[ImageGroup],
    references: Sequence[str | os.PathLike],
    settings: EvaluateSettings | None = None,
    *,
    encoders: Mapping[str, Encoder] | None = None,
    reference_label: str | None = None,
) -> EvaluationReport:
    """Score every group of generated images against ``references`` (lists of image paths).

    ``encoders`` maps feature spaces to ready encoders (tests pass tiny ones; missing spaces are
    loaded from the settings)."""
    from dreamdist.core.runtime import pick_device

    settings = settings or EvaluateSettings()
    settings.validate()
    references = [Path(p) for p in references]
    if not references:
        raise InputError("no reference images to compare with")
    for g in groups:
        if not g.paths:
            raise InputError(f"{g.label}: no generated images to evaluate")
    began = time.perf_counter()
    device = pick_device(settings.device)
    loaded: dict[str, Encoder] = dict(encoders or {})
    ref_feats: dict[str, np.ndarray] = {}
    gen_feats: list[dict[str, np.ndarray]] = [{} for _ in groups]
    for space in settings.spaces():
        if space not in loaded:
            loaded[space] = load_encoder(
                space,
                clip_model=settings.clip_model,
                dino_model=settings.dino_model,
                inception_weights=settings.inception_weights,
                device=device,
                batch_size=settings.batch_size,
            )
        enc = loaded[space]
        ref_feats[space] = enc.embed(references, settings.progress, "references")
        for i, g in enumerate(groups):
            gen_feats[i][space] = enc.embed(g.paths, settings.progress, g.label)

    rows = []
    for g, feats in zip(groups, gen_feats):
        values, notes = _metric_values(settings, feats, ref_feats)
        rows.append(EvaluationRow(g.label, len(g.paths), dict(g.info), values, notes))
    spaces = settings.spaces()
    return EvaluationReport(
        references={
            "label": reference_label or (str(references[0].parent) if references else ""),
            "images": len(references),
        },
        encoders={s: getattr(loaded[s], "description", "") or s for s in spaces},
        settings={
            "metrics": list(settings.metrics),
            "k": settings.k,
            "fid_features": settings.fid_features,
            "dc_features": settings.dc_features,
            "diversity_features": settings.diversity_features,
            "device": str(device),
        },
        rows=rows,
        seconds=time.perf_counter() - began,
    )


def evaluate_folders(
    generated: Sequence[str | os.PathLike],
    references: str | os.PathLike,
    settings: EvaluateSettings | None = None,
    **kwargs,
) -> EvaluationReport:
    """``dreamdist evaluate GENERATED... REFERENCES``: every folder is read (and checked) before any
    model is loaded. A batch folder's front stills are cropped into a temporary folder, removed after."""
    settings = settings or EvaluateSettings()
    settings.validate()
    refs = reference_paths(references)
    with tempfile.TemporaryDirectory(prefix="dreamdist-evaluate-") as scratch:
        groups = [
            g for i, folder in enumerate(generated) for g in generated_groups(folder, crop_dir=Path(scratch) / str(i))
        ]
        return evaluate_groups(groups, refs, settings, reference_label=str(references), **kwargs)
