"""Reading threestudio's OBJ export and choosing where the GLB's colour comes from: the MTL's baked
texture, the OBJ's per-vertex albedo ("v x y z r g b"), or a plain Kd colour -- never a white material
when the input had colour."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np

from dreamdist.utils.errors import InputError


@dataclasses.dataclass
class Mtl:
    texture: Path | None = None  # the diffuse texture (map_Kd), checked to exist
    kd: tuple[float, float, float] | None = None  # the diffuse colour (Kd); used only without a texture


def read_mtl(obj_path: Path) -> Mtl:
    """The diffuse texture / colour of the OBJ's MTL, read here so a missing file is one clear error
    instead of trimesh's silent white mesh, and so a plain Kd colour is not lost either."""
    mtl_names: list[str] = []
    with open(obj_path, "r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("mtllib"):
                mtl_names.append(line.split(None, 1)[1].strip())
    found = Mtl()
    for name in mtl_names:
        mtl = obj_path.parent / name
        if not mtl.is_file():
            raise InputError(
                f"{obj_path}: its material file {name!r} is missing (expected {mtl}); "
                "copy the whole it*-export folder (model.obj, model.mtl, texture_kd.*)"
            )
        for line in mtl.read_text(encoding="utf-8", errors="replace").splitlines():
            m = re.match(r"\s*map_Kd\s+(?:-\S+\s+\S+\s+)*(.+)$", line)
            if m:
                tex = mtl.parent / m.group(1).strip()
                if not tex.is_file():
                    raise InputError(
                        f"{mtl}: texture {m.group(1).strip()!r} is missing (expected {tex}); "
                        "copy it next to the OBJ, or export with vertex colours "
                        "(system.exporter.fmt=obj)"
                    )
                found.texture = found.texture or tex
            m = re.match(r"\s*Kd\s+(\S+)\s+(\S+)\s+(\S+)", line)
            if m and found.kd is None:
                try:
                    found.kd = tuple(min(max(float(x), 0.0), 1.0) for x in m.groups())  # type: ignore[assignment]
                except ValueError:
                    pass
    return found


def vertex_colours(mesh) -> np.ndarray | None:
    """The OBJ's per-vertex colours ("v x y z r g b") as sRGB floats in 0..1, or None. trimesh keeps
    them as visual.vertex_colors (uint8) when the OBJ has no UVs, but in vertex_attributes['color']
    (floats) next to a texture visual when it has UVs -- threestudio's fmt=obj default."""
    if mesh.visual.kind == "vertex":
        return np.asarray(mesh.visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
    for attrs in (mesh.vertex_attributes, getattr(mesh.visual, "vertex_attributes", None) or {}):
        colours = attrs.get("color")
        if colours is None or len(colours) != len(mesh.vertices) or np.ndim(colours) != 2:
            continue
        colours = np.asarray(colours)
        values = colours[:, :3].astype(np.float64)
        if colours.dtype.kind in "iu" or values.max(initial=0) > 1.0:
            values = values / 255.0
        return np.clip(values, 0.0, 1.0)
    return None


def load_obj(obj_path: Path):
    import trimesh

    mtl = read_mtl(obj_path)
    try:
        mesh = trimesh.load(obj_path, force="mesh", process=False)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad input file
        raise InputError(f"{obj_path}: could not read the mesh ({type(exc).__name__}: {exc})") from exc
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0 or len(mesh.vertices) == 0:
        raise InputError(
            f"{obj_path}: the mesh is empty (no faces); threestudio found no surface - check "
            "the training run, or lower system.geometry.isosurface_threshold before exporting"
        )
    mesh.remove_unreferenced_vertices()
    return mesh, mtl


@dataclasses.dataclass
class Colour:
    """Where the GLB's colour comes from: at most one source, since glTF multiplies COLOR_0 into the
    base colour texture (using both would darken the asset)."""

    image: Any = None  # the base colour texture (PIL image), mapped by the OBJ's UVs
    texture_bytes: bytes | None = None  # its file, embedded as-is (None: let trimesh encode a PNG)
    texture_mime: str | None = None
    vertex: np.ndarray | None = None  # sRGB colour per loaded vertex, 0..1
    factor: tuple[float, float, float] | None = None  # a plain MTL Kd colour
    desc: str = "none (plain white material)"
    warnings: list[str] = dataclasses.field(default_factory=list)


def choose_colour(obj_path: Path, base, mtl: Mtl) -> Colour:
    """Pick the GLB's colour from what the OBJ has; refuse rather than write white when colour exists
    but cannot be carried over."""
    uv = getattr(base.visual, "uv", None)
    has_uv = uv is not None and len(uv) == len(base.vertices)
    vertex = vertex_colours(base)
    colour = Colour()
    if mtl.texture is not None and not has_uv:
        if vertex is None:
            raise InputError(
                f"{obj_path}: its material's texture {mtl.texture.name!r} cannot be mapped: the OBJ "
                "has no UVs (vt lines); re-export with system.exporter.save_uv=true"
            )
        colour.warnings.append(
            f"texture {mtl.texture.name} not used: {obj_path.name} has no UVs (vt lines); "
            "the GLB uses its vertex colours"
        )
    elif mtl.texture is not None:
        material = getattr(base.visual, "material", None)
        image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
        if image is None:  # trimesh could not decode it: try once more, else refuse (never white)
            from PIL import Image

            try:
                image = Image.open(mtl.texture)
                image.load()
            except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad input file
                raise InputError(
                    f"{mtl.texture}: could not be read as an image ({type(exc).__name__}); "
                    "export the texture as jpg or png (system.exporter.texture_format)"
                ) from exc
        fmt = (image.format or "").upper()
        colour.image = image
        colour.texture_mime = {"JPEG": "image/jpeg", "PNG": "image/png"}.get(fmt)
        if colour.texture_mime is not None:  # other formats: let trimesh convert to PNG
            colour.texture_bytes = mtl.texture.read_bytes()
        colour.desc = f"{image.size[0]}x{image.size[1]} {fmt.lower() or 'image'} ({mtl.texture.name}), embedded"
        if vertex is not None:
            colour.desc += "; the OBJ's vertex colours are not used"
            colour.warnings.append(
                f"{obj_path.name} has both a texture ({mtl.texture.name}) and vertex colours; the GLB uses the texture"
            )
        return colour
    if vertex is not None:
        colour.vertex = vertex
        colour.desc = "vertex colours (COLOR_0: sRGB -> linear, 16-bit)"
    elif mtl.kd is not None and mtl.kd != (1.0, 1.0, 1.0):
        colour.factor = mtl.kd
        colour.desc = "material colour Kd {:.4g} {:.4g} {:.4g} (baseColorFactor)".format(*mtl.kd)
    return colour
