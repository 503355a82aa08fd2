"""The loss curve of a training run, drawn from its CSV log: what users look at first to judge a run
(did the diffusion loss settle, did the orthogonality loss fall).

Drawn with matplotlib's Agg backend (no display needed), written atomically beside the CSV.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from dreamdist.utils.atomic import atomic_path


def loss_curve_path(log_csv: str | os.PathLike) -> Path:
    """``dist.log.csv`` -> ``dist.loss.png``."""
    log_csv = Path(log_csv)
    stem = log_csv.name[: -len(".log.csv")] if log_csv.name.endswith(".log.csv") else log_csv.stem
    return log_csv.with_name(f"{stem}.loss.png")


def read_losses(log_csv: str | os.PathLike) -> dict[str, list[float]]:
    """Columns step, diffusion_loss, ortho_loss of a ``dreamdist train`` log as floats."""
    columns: dict[str, list[float]] = {"step": [], "diffusion_loss": [], "ortho_loss": []}
    with open(log_csv, newline="") as f:
        for row in csv.DictReader(f):
            for key, values in columns.items():
                values.append(float(row[key]))
    return columns


def plot_loss_curve(log_csv: str | os.PathLike, out_png: str | os.PathLike | None = None, title: str = "") -> Path:
    """Diffusion loss (raw and smoothed) and orthogonality loss per step, on two axes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    data = read_losses(log_csv)
    out = Path(out_png) if out_png is not None else loss_curve_path(log_csv)
    steps, diffusion, ortho = data["step"], data["diffusion_loss"], data["ortho_loss"]
    smooth, level = [], None
    for value in diffusion:  # the progress bar's smoothing: what the user watched
        level = value if level is None else 0.9 * level + 0.1 * value
        smooth.append(level)
    fig = Figure(figsize=(7, 3.2), dpi=100)
    left = fig.add_subplot(1, 1, 1)
    left.plot(steps, diffusion, color="tab:blue", alpha=0.3, linewidth=0.8, label="diffusion loss")
    left.plot(steps, smooth, color="tab:blue", linewidth=1.6, label="diffusion loss (smoothed)")
    left.set_xlabel("step")
    left.set_ylabel("diffusion loss", color="tab:blue")
    right = left.twinx()
    right.plot(steps, ortho, color="tab:orange", linewidth=1.2, label="orthogonality loss")
    right.set_ylabel("orthogonality loss", color="tab:orange")
    lines = left.get_lines() + right.get_lines()
    left.legend(lines, [line.get_label() for line in lines], loc="upper right", fontsize=8)
    left.set_title(title or Path(log_csv).name, fontsize=10)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out
