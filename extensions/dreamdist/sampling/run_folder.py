"""A sampling run's output folder: PNGs with their parameters, ``grid.png`` and ``manifest.json``.

Everything is written into a hidden staging sibling (made with the user's umask, as any folder they
make) and renamed onto the run folder only when complete, so a crash or Ctrl-C never leaves a
half-written run, and an existing non-empty folder is never written into.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping

from PIL import Image

from dreamdist.sampling.grid import fit_tile, labelled_grid, tile_size
from dreamdist.sampling.pngmeta import save_png
from dreamdist.sampling.render import Shot
from dreamdist.utils.errors import InputError
from dreamdist.version import __version__

DEFAULT_ROOT = Path("samples")
GRID_NAME = "grid.png"
MANIFEST_NAME = "manifest.json"


@dataclass
class GridSpec:
    """How a run's grid is laid out: ``rows`` x ``cols`` cells addressed by each shot's row/col."""

    rows: int
    cols: int
    row_labels: list[str] | None = None
    col_labels: list[str] | None = None
    title: str | None = None


@dataclass
class RunResult:
    out_dir: Path
    images: list[Path]
    grid: Path
    manifest: Path
    timing: dict[str, float]


# --------------------------------------------------------------------------- where a run goes


def _is_free(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def resolve_out_dir(out: str | os.PathLike | None, default_name: str, root: Path = DEFAULT_ROOT) -> Path:
    """An explicit ``out`` must not exist or be an empty folder: a non-empty one is refused, never
    overwritten. Without ``out``, a fresh ``root/default_name`` is picked, adding -2, -3... if taken."""
    if out is not None:
        path = Path(out)
        if not _is_free(path):
            raise InputError(
                f"{path} already exists and is not empty; nothing was written or overwritten. "
                "Choose a new --out, or leave --out out to get a fresh samples/NAME-N folder"
            )
        return path
    stem = default_name or "run"
    path = root / stem
    k = 2
    while not _is_free(path):
        path = root / f"{stem}-{k}"
        k += 1
    return path


class Staging:
    """A hidden sibling folder a run is written into, renamed onto ``out`` only when complete; on
    failure it (and the parent folders this run created) are removed."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.created: list[Path] = []
        parent = out.absolute().parent
        missing = []
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for p in reversed(missing):
            p.mkdir()
            self.created.append(p)
        while True:  # not mkdtemp: that folder would be private (0700) and so would the run folder
            self.path = out.absolute().parent / f".{out.name}.{uuid.uuid4().hex[:12]}.partial"
            try:
                self.path.mkdir()  # mode 0777 minus the umask, as any folder the user makes
                break
            except FileExistsError:
                continue

    def commit(self) -> None:
        try:
            if self.out.is_dir() and not any(self.out.iterdir()):
                self.out.rmdir()
            os.rename(self.path, self.out)
        except OSError:
            raise InputError(
                f"{self.out} appeared while sampling, so nothing was overwritten; this run's images are in {self.path}"
            ) from None

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        for p in reversed(self.created):
            try:
                p.rmdir()
            except OSError:
                pass


# --------------------------------------------------------------------------- what a run writes


class RunFolder:
    """Writes one run: ``add`` each image with its parameters (PNGs are saved on background threads
    while the next batch renders), then ``write_grid`` and ``write_manifest``. Used as a context
    manager: leaving it normally publishes the folder, leaving it by any exception (Ctrl-C
    included) removes everything it wrote.

    ``image_hw`` is the images' (height, width); it sizes the grid's tiles.
    """

    def __init__(self, out_dir: Path, grid: GridSpec, image_hw: tuple[int, int], workers: int = 2) -> None:
        self.out_dir = out_dir
        self.grid = grid
        self.tile_wh = tile_size((image_hw[1], image_hw[0]), grid.cols)
        self.workers = workers
        self.entries: list[dict[str, Any]] = []
        self._pending: list[tuple[Shot, Future]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._staging: Staging | None = None

    def __enter__(self) -> RunFolder:
        self._staging = Staging(self.out_dir)
        self._pool = ThreadPoolExecutor(max_workers=self.workers)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._staging is not None and self._pool is not None
        self._pool.shutdown(wait=True)  # no save may still be writing into the folder we remove
        if kind is not None:
            self._staging.abort()
            return
        self._staging.commit()

    @property
    def path(self) -> Path:
        """Where files go until the run is published."""
        assert self._staging is not None, "use RunFolder as a context manager"
        return self._staging.path

    def add(self, shot: Shot, image: Image.Image, params: Mapping[str, Any]) -> None:
        """Save ``image`` as ``shot.name`` with ``params`` in its PNG text chunks; its manifest entry
        keeps the file name, seed, gamma and the shot's own parameters."""
        assert self._pool is not None, "use RunFolder as a context manager"
        self.entries.append({"file": shot.name, **{k: params[k] for k in ("seed", "gamma", *shot.params)}})
        self._pending.append((shot, self._pool.submit(self._save, image, shot.name, params)))

    def _save(self, image: Image.Image, name: str, params: Mapping[str, Any]) -> Image.Image:
        save_png(image, self.path / name, params)
        return fit_tile(image, self.tile_wh)

    def write_grid(self) -> None:
        """Wait for every PNG, then lay their thumbnails out as ``grid.png``."""
        g = self.grid
        thumbs: dict[tuple[int, int], Image.Image] = {}
        captions: list[list[str]] = [[""] * g.cols for _ in range(g.rows)]
        for shot, fut in self._pending:
            thumbs[(shot.row, shot.col)] = fut.result()
            captions[shot.row][shot.col] = shot.caption
        cells = [[thumbs.get((r, c)) for c in range(g.cols)] for r in range(g.rows)]
        sheet = labelled_grid(
            cells,
            g.row_labels,
            g.col_labels,
            captions if any(any(row) for row in captions) else None,
            g.title,
            tile=max(self.tile_wh),
        )
        sheet.save(self.path / GRID_NAME, format="PNG")

    def write_manifest(self, run_params: Mapping[str, Any], timing: Mapping[str, float]) -> None:
        """``manifest.json``: the run's parameters, the grid's layout and one entry per image."""
        manifest = {
            "dreamdist_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **run_params,
            "grid": GRID_NAME,
            "grid_rows": self.grid.row_labels,
            "grid_cols": self.grid.col_labels,
            "images": self.entries,
            "timing": dict(timing),
        }
        # plain write: the staging folder as a whole is what becomes visible atomically
        (self.path / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, default=str) + "\n")

    def result(self, timing: dict[str, float]) -> RunResult:
        """Where the published run's files are."""
        out = self.out_dir
        return RunResult(out, [out / e["file"] for e in self.entries], out / GRID_NAME, out / MANIFEST_NAME, timing)
