"""``export_mesh``: a threestudio OBJ export -> GLB (+ LODs) with a report of what was written."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from dreamdist.mesh_export.axes import ORIGINS, THREESTUDIO_UP, axis_transform, origin_shift
from dreamdist.mesh_export.geometry import MIN_FACES, decimate, is_watertight, weld
from dreamdist.mesh_export.glb import build_mesh, glb_bytes
from dreamdist.mesh_export.obj_input import choose_colour, load_obj
from dreamdist.utils.atomic import atomic_path
from dreamdist.utils.errors import InputError


@dataclasses.dataclass
class LodReport:
    path: str
    vertices: int
    faces: int
    bytes: int


@dataclasses.dataclass
class ExportReport:
    """What was written; `format()` is the text `dreamdist export-mesh` prints."""

    source: str
    path: str
    vertices: int
    faces: int
    source_faces: int
    bounds_min: list[float]
    bounds_max: list[float]
    scale: float
    watertight: bool
    texture: str
    lods: list[LodReport]
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def size(self) -> list[float]:
        return [hi - lo for lo, hi in zip(self.bounds_min, self.bounds_max)]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "size": self.size}

    def format(self) -> str:
        fmt = lambda v: "(" + ", ".join(f"{x:.4f}" for x in v) + ")"  # noqa: E731
        lines = [
            f"wrote      {self.path}",
            f"source     {self.source} ({self.source_faces} faces)",
            f"vertices   {self.vertices}",
            f"faces      {self.faces}",
            f"bounds     min {fmt(self.bounds_min)} max {fmt(self.bounds_max)} m (+Y up)",
            f"size       {fmt(self.size)} m, scale x{self.scale:.6g}",
            f"watertight {'yes' if self.watertight else 'no'}",
            f"texture    {self.texture}",
        ]
        lines += [f"warning    {w}" for w in self.warnings]
        if len(self.lods) > 1:
            for i, lod in enumerate(self.lods):
                lines.append(f"LOD{i}       {lod.faces} faces, {lod.vertices} vertices, {lod.bytes} bytes  {lod.path}")
        return "\n".join(lines)


def lod_paths(glb_path: str | Path, lods: int) -> list[Path]:
    """LOD0 is the requested path; LOD i > 0 is NAME_LODi.glb next to it (Unity's naming)."""
    glb_path = Path(glb_path)
    return [glb_path] + [glb_path.with_name(f"{glb_path.stem}_LOD{i}{glb_path.suffix}") for i in range(1, lods)]


def export_mesh(
    obj_path: str | Path,
    glb_path: str | Path,
    up: str = THREESTUDIO_UP,
    height: float | None = None,
    origin: str = "bottom-center",
    max_faces: int | None = None,
    lods: int = 1,
    force: bool = False,
    front: str | None = None,
) -> ExportReport:
    """Convert a threestudio OBJ export to a GLB (+Y up, metres, origin at the bottom centre).

    up: the source's up axis (threestudio: +Z). front: the source's front axis, turned to glTF's +Z
    (threestudio: +X); None turns only the up axis. height: scale uniformly so the asset is this tall
    in metres (None keeps scene units as metres). max_faces: quadric-decimate LOD0 to this budget.
    lods: also write NAME_LOD1.glb ... at halving face budgets. Colour: the MTL's texture, else the
    OBJ's vertex colours (COLOR_0), else a non-white MTL Kd; report.warnings says when one was dropped.
    """
    obj_path, glb_path = Path(obj_path), Path(glb_path)
    if origin not in ORIGINS:
        raise InputError(f"--origin {origin!r}: use one of {', '.join(ORIGINS)}")
    if height is not None and not (math.isfinite(height) and height > 0):
        raise InputError(f"--height {height}: must be a positive number of metres")
    if max_faces is not None and max_faces < MIN_FACES:
        raise InputError(f"--max-faces {max_faces}: must be at least {MIN_FACES}")
    if lods < 1:
        raise InputError(f"--lods {lods}: must be at least 1")
    T = axis_transform(up, front)
    if not obj_path.is_file():
        raise InputError(f"{obj_path}: no such file (threestudio writes TRIAL/save/it*-export/model.obj)")
    if obj_path.suffix.lower() != ".obj":
        raise InputError(f"{obj_path}: expected a Wavefront .obj (threestudio's mesh-exporter output)")
    if glb_path.suffix.lower() != ".glb":
        raise InputError(f"{glb_path}: the output must end in .glb")
    targets = lod_paths(glb_path, lods)
    if not force:
        existing = [str(p) for p in targets if p.exists()]
        if existing:
            raise InputError(f"{', '.join(existing)} already exists; pass --force to overwrite")

    base, mtl = load_obj(obj_path)
    base.apply_transform(T)
    vertices = np.asarray(base.vertices, dtype=np.float64)
    extent_y = float(np.ptp(vertices[:, 1]))
    if height is not None and extent_y <= 0:
        raise InputError(f"{obj_path}: the mesh is flat along the up axis {up}; cannot scale it to --height")
    scale = 1.0 if height is None else height / extent_y
    vertices = vertices * scale
    vertices = vertices + origin_shift(vertices, origin)
    faces = np.asarray(base.faces, dtype=np.int64)

    colour = choose_colour(obj_path, base, mtl)
    uv, rgb = None, colour.vertex
    if colour.image is not None:
        uv = np.asarray(base.visual.uv, dtype=np.float64)
    else:  # UVs with no texture would be unused data
        vertices, faces, rgb = weld(vertices, faces, rgb)

    budget0 = min(len(faces), max_faces) if max_faces else len(faces)
    extras = {"source": obj_path.name, "up": up, "front": front, "scale": scale, "origin": origin, "units": "metres"}
    written: list[LodReport] = []
    first_mesh = None
    for i, target in enumerate(targets):
        budget = max(MIN_FACES, budget0 // (2**i))
        v, f, interp = decimate(vertices, faces, budget)
        mesh, v_rgb = build_mesh(v, f, interp, faces, uv, rgb, colour.image)
        name = target.stem
        data = glb_bytes(mesh, name, colour, v_rgb, {**extras, "lod": i})
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        written.append(LodReport(str(target), len(v), len(f), len(data)))
        if first_mesh is None:
            first_mesh = (v, f)
    v0, f0 = first_mesh
    return ExportReport(
        source=str(obj_path),
        path=str(glb_path),
        vertices=len(v0),
        faces=len(f0),
        source_faces=len(faces),
        bounds_min=[float(x) for x in v0.min(0)],
        bounds_max=[float(x) for x in v0.max(0)],
        scale=float(scale),
        watertight=is_watertight(v0, f0),
        texture=colour.desc,
        lods=written,
        warnings=colour.warnings,
    )


def find_threestudio_export(trial_dir: str | Path) -> Path | None:
    """The newest TRIAL/save/it{N}-export/model.obj (highest N), or None."""
    best: tuple[int, Path] | None = None
    for obj in Path(trial_dir).glob("save/it*-export/*.obj"):
        m = re.match(r"it(\d+)-export$", obj.parent.name)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), obj)
    return None if best is None else best[1]
