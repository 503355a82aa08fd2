"""Numbers for "is this distribution good, and which settings are better?": the paper's Table-1
metrics (FID, CLIP-I, DINO, density, coverage) for generated images against reference images, and the
diversity within each set of generated images.

- ``metrics``: the formulas on feature matrices, float64 (no model needed).
- ``encoders``: image -> features (Inception-v3 via torch-fidelity, CLIP and DINO via transformers).
- ``imagesets``: folders (``dreamdist sample`` outputs or plain image folders) -> groups of paths;
  ``batchset``: a ``dreamdist batch`` folder -> one group of its assets' front stills.
- ``core``: ``evaluate_groups`` (lists of paths in, a report out) and ``evaluate_folders``.
- ``report``: the terminal table and JSON.
"""

from dreamdist.evaluate.core import (
    METRICS,
    EvaluateSettings,
    EvaluationReport,
    EvaluationRow,
    evaluate_folders,
    evaluate_groups,
)
from dreamdist.evaluate.imagesets import ImageGroup, generated_groups, reference_paths

__all__ = [
    "METRICS",
    "EvaluateSettings",
    "EvaluationReport",
    "EvaluationRow",
    "ImageGroup",
    "evaluate_folders",
    "evaluate_groups",
    "generated_groups",
    "reference_paths",
]
