"""What a run reports while it trains: the per-step CSV log, the progress bar, preview grids, and
where its log messages go.

The CSV log is rewritten on resume to keep only the rows up to the checkpoint, so a resumed run's
log reads like one uninterrupted run. Messages (resuming, a stop request) go through the
``dreamdist.train`` logger; ``messages_to`` hands them to a front end's own output.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

from tqdm.auto import tqdm

from dreamdist.core.mixture import Sampleable
from dreamdist.sampling import render_grid
from dreamdist.train.losscurve import plot_loss_curve
from dreamdist.train.outcome import PreviewWarning
from dreamdist.utils.atomic import atomic_write_text

CSV_COLUMNS = ("step", "loss", "diffusion_loss", "ortho_loss", "grad_norm", "lr", "elapsed_s")
LOGGER_NAME = "dreamdist.train"


def open_step_log(path: Path, columns: tuple[str, ...], start: int) -> io.TextIOBase:
    """The per-step CSV, opened for appending: on resume (``start`` > 0) it keeps only the rows up to
    the checkpoint, so a resumed run's log reads like one uninterrupted run."""
    rows: list[list[str]] = []
    if start and path.is_file():
        with open(path, newline="") as f:
            rows = [row for row in csv.reader(f) if row and row[0].isdigit() and int(row[0]) <= start]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())
    return open(path, "a", newline="")


def noting_warnings(notes: list[str], fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``, passing its warnings on and noting their text in ``notes`` (for the run's result)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = fn(*args)
    for w in caught:
        notes.append(str(w.message))
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return value


class RunLog:
    """The CSV log (one row per step, flushed) and the progress bar of one run."""

    def __init__(self, path: Path | None, start: int, total: int, progress: bool) -> None:
        self.start = start
        self._smooth: float | None = None
        self._file = open_step_log(path, CSV_COLUMNS, start) if path is not None else None
        self._csv = csv.writer(self._file, lineterminator="\n") if self._file is not None else None
        self._bar = tqdm(
            total=total,
            initial=start,
            unit="step",
            desc="training",
            dynamic_ncols=True,
            disable=None if progress else True,
        )

    def record(
        self,
        step: int,
        loss: float,
        diffusion: float,
        ortho: float,
        grad_norm: float,
        lr: float,
        elapsed_s: float,
        run_s: float,
    ) -> None:
        """Step ``step`` is done; ``run_s``: seconds this run has trained (for steps/s)."""
        if self._csv is not None:
            self._csv.writerow(
                [
                    step,
                    f"{loss:.6g}",
                    f"{diffusion:.6g}",
                    f"{ortho:.6g}",
                    f"{grad_norm:.6g}",
                    f"{lr:g}",
                    f"{elapsed_s:.3f}",
                ]
            )
            self._file.flush()
        self._smooth = diffusion if self._smooth is None else 0.9 * self._smooth + 0.1 * diffusion
        rate = (step - self.start) / max(run_s, 1e-9)
        self._bar.set_postfix(
            {"loss": f"{self._smooth:.4f}", "ortho": f"{ortho:.4f}", "steps/s": f"{rate:.3g}"}, refresh=False
        )
        self._bar.update(1)

    def close(self) -> None:
        """Close the bar and the CSV, and draw the loss curve beside it (``dist.loss.png``) from every
        row so far, so an interrupted run has one too. A failed plot warns: it must not lose a run."""
        self._bar.close()
        if self._file is not None:
            self._file.close()
            try:
                plot_loss_curve(self._file.name)
            except Exception as exc:  # noqa: BLE001 - see above
                warnings.warn(f"loss curve not drawn: {type(exc).__name__}: {exc}", PreviewWarning, stacklevel=2)

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def render_preview(
    pipe: Any, gaussian: Sampleable, path: Path, count: int, steps: int, resolution: int, step: int
) -> Path | None:
    """A grid of ``count`` images (seeds 0..count-1) from the current distribution. A failure warns
    and returns None: a preview must never end a long run."""
    try:
        render_grid(
            pipe,
            gaussian,
            list(range(count)),
            1.0,
            steps,
            out_png=path,
            height=resolution,
            width=resolution,
            title=f"step {step}",
        )
    except Exception as exc:  # noqa: BLE001 - see above
        warnings.warn(f"preview at step {step} failed: {type(exc).__name__}: {exc}", PreviewWarning, stacklevel=2)
        return None
    return path


class _Forward(logging.Handler):
    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self._write = write

    def emit(self, record: logging.LogRecord) -> None:
        self._write(record.getMessage())


@contextlib.contextmanager
def messages_to(write: Callable[[str], None]) -> Iterator[None]:
    """While the block runs, hand the training's log messages (INFO and up) to ``write`` only: the
    CLI prints them above its progress bar, the threestudio processor passes them to its log."""
    logger = logging.getLogger(LOGGER_NAME)
    handler = _Forward(write)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
