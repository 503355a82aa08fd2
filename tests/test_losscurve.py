"""The loss-curve PNG drawn from a training log."""

from __future__ import annotations

import numpy as np
from PIL import Image

from dreamdist.train.losscurve import loss_curve_path, plot_loss_curve, read_losses
from dreamdist.train.runlog import CSV_COLUMNS


def _log(path, steps: int):
    rows = [",".join(CSV_COLUMNS)]
    for s in range(1, steps + 1):
        rows.append(f"{s},{1 / s + 0.01},{1 / s},{0.5 / s},0.1,0.001,{s * 0.1:.3f}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_loss_curve_is_a_png_beside_the_csv_with_both_losses(tmp_path):
    log = _log(tmp_path / "dist.log.csv", 40)
    assert read_losses(log)["diffusion_loss"][:2] == [1.0, 0.5]
    out = plot_loss_curve(log)
    assert out == loss_curve_path(log) == tmp_path / "dist.loss.png"
    image = np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)
    assert image.shape == (320, 700, 3)
    blue = (np.abs(image - np.array([31, 119, 180])).sum(-1) < 40).sum()  # matplotlib's tab:blue
    orange = (np.abs(image - np.array([255, 127, 14])).sum(-1) < 40).sum()  # tab:orange
    assert blue > 200 and orange > 200  # both curves are drawn
