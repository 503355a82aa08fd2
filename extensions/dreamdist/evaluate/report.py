"""The terminal table and the JSON document of an ``EvaluationReport``."""

from __future__ import annotations

import json
from typing import Any

from dreamdist.evaluate.core import LOWER_IS_BETTER, EvaluationReport

HEADERS = {
    "fid": "FID",
    "clip-i": "CLIP-I",
    "dino": "DINO",
    "density": "density",
    "coverage": "coverage",
    "diversity": "diversity",
}
SPACE_NAMES = {"inception": "Inception-v3", "clip": "CLIP", "dino": "DINO"}


def _header(report: EvaluationReport, metric: str) -> str:
    """FID is the Frechet distance on Inception features; on other features it is FD_CLIP / FD_DINO."""
    space = report.settings["fid_features"]
    if metric == "fid" and space != "inception":
        return f"FD_{SPACE_NAMES.get(space, space).upper()}"
    return HEADERS[metric]


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if metric == "fid" else f"{value:.3f}"


def _source(info: dict[str, Any]) -> str:
    parts = [info.get("folder", "")]
    if info.get("command") == "batch":
        parts.append("dreamdist batch of " + (" + ".join(info.get("distributions") or []) or "?"))
        parts.append(f"front stills (test view 0, colour panel) of seeds {', '.join(map(str, info['seeds']))}")
        if info.get("seeds_not_done"):
            parts.append(f"not done: seeds {', '.join(map(str, info['seeds_not_done']))}")
        if info.get("done_without_renders"):
            parts.append(f"done without renders: seeds {', '.join(map(str, info['done_without_renders']))}")
        return ", ".join(p for p in parts if p)
    if info.get("distributions"):
        parts.append("distribution " + " + ".join(info["distributions"]))
        if info.get("weights") and len(info["weights"]) > 1:
            parts.append("weights " + "/".join(f"{w:g}" for w in info["weights"]))
        if info.get("template"):
            parts.append(f"template {info['template']!r}")
        if info.get("gamma") is not None:
            parts.append(f"gamma {info['gamma']:g}")
    return ", ".join(p for p in parts if p)


def format_table(report: EvaluationReport) -> str:
    metrics = list(report.settings["metrics"])
    lines = [f"references: {report.references['label']} ({report.references['images']} images)"]
    for space, desc in report.encoders.items():
        used = [_header(report, m) for m in metrics if _space(report, m) == space]
        lines.append(f"{'/'.join(used)} on {SPACE_NAMES.get(space, space)}: {desc}")
    lines.append("")
    heads = ["generated", "images"] + [
        _header(report, m) + (" (lower better)" if m in LOWER_IS_BETTER else "") for m in metrics
    ]
    cells = [[r.label, str(r.n)] + [_fmt(m, r.values.get(m)) for m in metrics] for r in report.rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    lines.append("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(heads, widths))))
    for c in cells:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths))))
    lines.append("")
    for r in report.rows:
        lines.append(f"{r.label}: {_source(r.info)}")
        for metric, why in r.notes.items():
            lines.append(f"  {_header(report, metric)} n/a: {why}")
    notes = []
    if "fid" in metrics:
        notes.append(
            f"{_header(report, 'fid')} of small sets is biased upwards and depends on the image counts: "
            "compare rows with the same numbers of images only."
        )
    if "density" in metrics or "coverage" in metrics:
        notes.append(
            f"density/coverage: Naeem et al. 2020, k={report.settings['k']}, references as the real set "
            "(density ~1 and coverage ~1 for images drawn like the references)."
        )
    if "diversity" in metrics:
        space = SPACE_NAMES.get(_space(report, "diversity"), _space(report, "diversity"))
        notes.append(
            f"diversity: mean over the row's own image pairs of the cosine distance (1 - cosine similarity) "
            f"of their {space} embeddings; higher = more varied, no references involved."
        )
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines)


def _space(report: EvaluationReport, metric: str) -> str:
    s = report.settings
    return {
        "fid": s["fid_features"],
        "clip-i": "clip",
        "dino": "dino",
        "diversity": s.get("diversity_features", "clip"),
    }.get(metric, s["dc_features"])


def to_json(report: EvaluationReport) -> str:
    return json.dumps(report.to_dict(), indent=2)
