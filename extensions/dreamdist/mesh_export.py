"""threestudio mesh export (OBJ + MTL + texture, or OBJ with vertex colours) -> game-ready GLB.

threestudio's mesh-exporter writes one of: OBJ + MTL + baked texture (fmt=obj-mtl, the default), an OBJ
with per-vertex albedo and xatlas UVs (fmt=obj), or per-vertex albedo only (fmt=obj, save_uv=false).
The colour is kept in every case: the texture is embedded; vertex colours become COLOR_0, converted
from the sRGB values threestudio writes to the linear values glTF defines (engines read COLOR_0 as
linear: copied sRGB values would render washed out), stored as 16-bit so dark tones do not band. We
never write a plain white material when the input had colour: that is refused or warned about in one
line.

Game engines (Unity, Unreal, Godot, Blender's glTF importer) expect glTF's conventions: +Y up,
metres, front facing +Z, and an origin they can drop on the floor. threestudio writes its meshes
Z-up in scene units with the object's front (azimuth 0) towards +X and the origin at the scene
centre, so we rotate, optionally scale to a height, and move the origin to the bottom centre.

Also here: quadric decimation to a face budget (fast-simplification) that keeps UVs and vertex
colours, LOD chains, vertex normals computed across UV seams (so seams don't show in shading), the
original texture bytes embedded untouched (trimesh would re-encode a JPEG at quality 75), a non-metallic PBR material
(glTF's default metallicFactor is 1, which renders threestudio's diffuse albedo dark and shiny),
and atomic writes.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dreamdist.atomic import atomic_path
from dreamdist.errors import InputError

AXES = {"+X": (1, 0, 0), "-X": (-1, 0, 0), "+Y": (0, 1, 0), "-Y": (0, -1, 0), "+Z": (0, 0, 1), "-Z": (0, 0, -1)}
ORIGINS = ("bottom-center", "center", "keep")
MIN_FACES = 4
# threestudio: a camera at azimuth 0 sits on +X, and prompt processors call that view "front"
THREESTUDIO_UP, THREESTUDIO_FRONT = "+Z", "+X"


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


# ----------------------------------------------------------------------------------------- inputs


def parse_axis(value: str, what: str = "--up") -> np.ndarray:
    key = value.strip().upper()
    if key in ("X", "Y", "Z"):
        key = "+" + key
    if key not in AXES:
        raise InputError(f"{what} {value!r} is not an axis; use one of {', '.join(AXES)}")
    return np.array(AXES[key], dtype=np.float64)


def lod_paths(glb_path: str | Path, lods: int) -> list[Path]:
    """LOD0 is the requested path; LOD i > 0 is NAME_LODi.glb next to it (Unity's naming)."""
    glb_path = Path(glb_path)
    return [glb_path] + [glb_path.with_name(f"{glb_path.stem}_LOD{i}{glb_path.suffix}") for i in range(1, lods)]


@dataclasses.dataclass
class _Mtl:
    texture: Path | None = None  # the diffuse texture (map_Kd), checked to exist
    kd: tuple[float, float, float] | None = None  # the diffuse colour (Kd); used only without a texture


def _read_mtl(obj_path: Path) -> _Mtl:
    """The diffuse texture / colour of the OBJ's MTL, read here so a missing file is one clear error
    instead of trimesh's silent white mesh, and so a plain Kd colour is not lost either."""
    mtl_names: list[str] = []
    with open(obj_path, "r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("mtllib"):
                mtl_names.append(line.split(None, 1)[1].strip())
    found = _Mtl()
    for name in mtl_names:
        mtl = obj_path.parent / name
        if not mtl.is_file():
            raise InputError(f"{obj_path}: its material file {name!r} is missing (expected {mtl}); "
                             "copy the whole it*-export folder (model.obj, model.mtl, texture_kd.*)")
        for line in mtl.read_text(encoding="utf-8", errors="replace").splitlines():
            m = re.match(r"\s*map_Kd\s+(?:-\S+\s+\S+\s+)*(.+)$", line)
            if m:
                tex = mtl.parent / m.group(1).strip()
                if not tex.is_file():
                    raise InputError(f"{mtl}: texture {m.group(1).strip()!r} is missing (expected {tex}); "
                                     "copy it next to the OBJ, or export with vertex colours "
                                     "(system.exporter.fmt=obj)")
                found.texture = found.texture or tex
            m = re.match(r"\s*Kd\s+(\S+)\s+(\S+)\s+(\S+)", line)
            if m and found.kd is None:
                try:
                    found.kd = tuple(min(max(float(x), 0.0), 1.0) for x in m.groups())  # type: ignore[assignment]
                except ValueError:
                    pass
    return found


def _vertex_colours(mesh) -> np.ndarray | None:
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


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded values (what threestudio's albedo and every image holds) to glTF's linear COLOR_0."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def _load(obj_path: Path):
    import trimesh

    mtl = _read_mtl(obj_path)
    try:
        mesh = trimesh.load(obj_path, force="mesh", process=False)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad input file
        raise InputError(f"{obj_path}: could not read the mesh ({type(exc).__name__}: {exc})") from exc
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0 or len(mesh.vertices) == 0:
        raise InputError(f"{obj_path}: the mesh is empty (no faces); threestudio found no surface - check "
                         "the training run, or lower system.geometry.isosurface_threshold before exporting")
    mesh.remove_unreferenced_vertices()
    return mesh, mtl


# ------------------------------------------------------------------------------------- transforms


def axis_transform(up: str, front: str | None = None) -> np.ndarray:
    """4x4 rotation taking `up` to +Y and, if given, `front` to +Z (glTF's forward).

    Without `front` it is the smallest rotation doing so (about the axis up x Y; 180 degrees about X
    for -Y), so e.g. +Z up maps (x, y, z) -> (x, z, -y): the other horizontal axis is left alone.
    """
    u = parse_axis(up, "--up")
    y = np.array([0.0, 1.0, 0.0])
    T = np.eye(4)
    if front is None:
        axis = np.cross(u, y)
        if np.linalg.norm(axis) < 1e-12:
            axis = np.array([1.0, 0.0, 0.0])  # u = +Y: angle 0 (identity); u = -Y: 180 degrees about X
        axis = axis / np.linalg.norm(axis)
        angle = float(np.arccos(np.clip(u @ y, -1.0, 1.0)))
        K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        R = np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * (K @ K)  # Rodrigues
        T[:3, :3] = np.round(R, 12) + 0.0
        return T
    f = parse_axis(front, "--front")
    if abs(float(u @ f)) > 0.5:
        raise InputError(f"--front {front} must be perpendicular to --up {up}")
    # rows: where new X, Y, Z come from; X = Y x Z keeps the rotation proper (det +1)
    T[:3, :3] = np.stack([np.cross(u, f), u, f])
    return T


def _origin_shift(vertices: np.ndarray, origin: str) -> np.ndarray:
    lo, hi = vertices.min(0), vertices.max(0)
    centre = (lo + hi) / 2
    if origin == "bottom-center":
        return -np.array([centre[0], lo[1], centre[2]])
    if origin == "center":
        return -centre
    return np.zeros(3)


def seam_aware_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit vertex normals (area-weighted) of the surface with UV-seam copies merged, so both copies
    of a seam vertex get the same normal and the seam does not show under lighting."""
    _, inverse = np.unique(np.round(vertices, 7), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    tri = vertices[faces]
    face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    summed = np.zeros((inverse.max() + 1, 3))
    for k in range(3):
        np.add.at(summed, inverse[faces[:, k]], face_normals)
    normals = summed[inverse]
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 0, normals / np.where(length > 0, length, 1), [0.0, 1.0, 0.0])
    return normals


def _watertight(vertices: np.ndarray, faces: np.ndarray) -> bool:
    import trimesh

    merged = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    merged.merge_vertices(merge_tex=True, merge_norm=True)
    return bool(merged.is_watertight)


# ------------------------------------------------------------------------------------- decimation


Interp = tuple[np.ndarray, np.ndarray]  # (source face per vertex, barycentric weights per vertex)


def decimate(vertices: np.ndarray, faces: np.ndarray, max_faces: int) -> tuple[np.ndarray, np.ndarray, Interp | None]:
    """Quadric decimation to at most `max_faces`; returns (vertices, faces, interp), where interp
    tells where on the source surface each new vertex lies (None: nothing changed), so UVs and
    colours are interpolated there.

    UV seams are split vertices, i.e. open borders to the simplifier, so a collapse never merges two
    UV charts. A collapsed vertex moves to its quadric optimum; its UV is read off the nearest point
    of the source faces around the vertices that collapsed into it, all in the same chart.
    """
    import fast_simplification

    if len(faces) <= max_faces:
        return vertices, faces, None
    # First keep borders (UV seams) fixed so the two sides of a seam cannot drift apart and open a
    # crack; meshes with many UV charts may need seam vertices collapsed to reach the budget.
    attempts = [(True, max_faces)] + [(False, max(MIN_FACES, int(max_faces * 0.9 ** k))) for k in range(6)]
    for preserve_border, target in attempts:
        _, _, collapses = fast_simplification.simplify(vertices, faces, target_count=target,
                                                       return_collapses=True, preserve_border=preserve_border)
        new_v, new_f, mapping = fast_simplification.replay_simplification(vertices, faces, collapses)
        new_f = np.asarray(new_f, dtype=np.int64).reshape(-1, 3)
        if 0 < len(new_f) <= max_faces:
            break
    else:
        raise InputError(f"could not decimate to {max_faces} faces (got {len(new_f)}); raise --max-faces")
    new_v = np.asarray(new_v, dtype=np.float64)
    mapping = np.asarray(mapping, dtype=np.int64)
    # drop degenerate faces and vertices nothing references any more
    keep = (new_f[:, 0] != new_f[:, 1]) & (new_f[:, 1] != new_f[:, 2]) & (new_f[:, 0] != new_f[:, 2])
    new_f = new_f[keep]
    used = np.unique(new_f)
    remap = np.full(len(new_v), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    new_v, new_f = new_v[used], remap[new_f]
    group = np.where(mapping >= 0, remap[np.maximum(mapping, 0)], -1)  # source vertex -> new vertex
    return new_v, new_f, _locate(vertices, faces, new_v, group)


def _locate(vertices: np.ndarray, faces: np.ndarray, new_v: np.ndarray, group: np.ndarray) -> Interp:
    """For each new vertex j: the closest point to new_v[j] on the source faces touching a source
    vertex that collapsed into j, as (face index, barycentric weights)."""
    from trimesh.triangles import closest_point, points_to_barycentric

    face_idx = np.repeat(np.arange(len(faces)), 3)
    target = group[faces].reshape(-1)
    ok = target >= 0
    pairs = np.unique(np.stack([face_idx[ok], target[ok]], 1), axis=0)
    tris = vertices[faces[pairs[:, 0]]]
    pts = new_v[pairs[:, 1]]
    closest = closest_point(tris, pts)
    dist = np.linalg.norm(closest - pts, axis=1)
    order = np.lexsort((dist, pairs[:, 1]))
    first = np.r_[True, pairs[order[1:], 1] != pairs[order[:-1], 1]]
    best = order[first]
    src_face = np.zeros(len(new_v), dtype=np.int64)
    bary = np.zeros((len(new_v), 3))
    src_face[pairs[best, 1]] = pairs[best, 0]
    b = points_to_barycentric(tris[best], closest[best])
    b = np.clip(np.nan_to_num(b, nan=1 / 3), 0, 1)
    bary[pairs[best, 1]] = b / b.sum(1, keepdims=True)
    return src_face, bary


def _interpolate(values: np.ndarray, faces: np.ndarray, interp: Interp | None) -> np.ndarray:
    if interp is None:
        return values
    src_face, bary = interp
    return np.einsum("nk,nkc->nc", bary, values[faces[src_face]].astype(np.float64))


# ------------------------------------------------------------------------------------------ write


def _pbr_material(image):
    from trimesh.visual.material import PBRMaterial

    # threestudio's albedo is diffuse-only: non-metallic, fully rough
    return PBRMaterial(name="material", baseColorTexture=image, baseColorFactor=[255, 255, 255, 255],
                       metallicFactor=0.0, roughnessFactor=1.0)


@dataclasses.dataclass
class _Colour:
    """Where the GLB's colour comes from: at most one source, since glTF multiplies COLOR_0 into the
    base colour texture (using both would darken the asset)."""

    image: Any = None  # the base colour texture (PIL image), mapped by the OBJ's UVs
    texture_bytes: bytes | None = None  # its file, embedded as-is (None: let trimesh encode a PNG)
    texture_mime: str | None = None
    vertex: np.ndarray | None = None  # sRGB colour per loaded vertex, 0..1
    factor: tuple[float, float, float] | None = None  # a plain MTL Kd colour
    desc: str = "none (plain white material)"
    warnings: list[str] = dataclasses.field(default_factory=list)


def _choose_colour(obj_path: Path, base, mtl: _Mtl) -> _Colour:
    """Pick the GLB's colour from what the OBJ has; refuse rather than write white when colour exists
    but cannot be carried over."""
    uv = getattr(base.visual, "uv", None)
    has_uv = uv is not None and len(uv) == len(base.vertices)
    vertex = _vertex_colours(base)
    colour = _Colour()
    if mtl.texture is not None and not has_uv:
        if vertex is None:
            raise InputError(f"{obj_path}: its material's texture {mtl.texture.name!r} cannot be mapped: the OBJ "
                             "has no UVs (vt lines); re-export with system.exporter.save_uv=true")
        colour.warnings.append(f"texture {mtl.texture.name} not used: {obj_path.name} has no UVs (vt lines); "
                               "the GLB uses its vertex colours")
    elif mtl.texture is not None:
        material = getattr(base.visual, "material", None)
        image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
        if image is None:  # trimesh could not decode it: try once more, else refuse (never white)
            from PIL import Image

            try:
                image = Image.open(mtl.texture)
                image.load()
            except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad input file
                raise InputError(f"{mtl.texture}: could not be read as an image ({type(exc).__name__}); "
                                 "export the texture as jpg or png (system.exporter.texture_format)") from exc
        fmt = (image.format or "").upper()
        colour.image = image
        colour.texture_mime = {"JPEG": "image/jpeg", "PNG": "image/png"}.get(fmt)
        if colour.texture_mime is not None:  # other formats: let trimesh convert to PNG
            colour.texture_bytes = mtl.texture.read_bytes()
        colour.desc = f"{image.size[0]}x{image.size[1]} {fmt.lower() or 'image'} ({mtl.texture.name}), embedded"
        if vertex is not None:
            colour.desc += "; the OBJ's vertex colours are not used"
            colour.warnings.append(f"{obj_path.name} has both a texture ({mtl.texture.name}) and vertex colours; "
                                   "the GLB uses the texture")
        return colour
    if vertex is not None:
        colour.vertex = vertex
        colour.desc = "vertex colours (COLOR_0: sRGB -> linear, 16-bit)"
    elif mtl.kd is not None and mtl.kd != (1.0, 1.0, 1.0):
        colour.factor = mtl.kd
        colour.desc = "material colour Kd {:.4g} {:.4g} {:.4g} (baseColorFactor)".format(*mtl.kd)
    return colour


def _weld(vertices: np.ndarray, faces: np.ndarray, rgb: np.ndarray | None):
    """Merge the vertex copies the OBJ loader split at UV seams (same position, same colour), in file
    order: without a texture the UVs are not written, and a welded surface decimates across seams."""
    key = vertices if rgb is None else np.concatenate([vertices, rgb], axis=1)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    if len(first) == len(vertices):
        return vertices, faces, rgb
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    keep = first[order]
    return vertices[keep], rank[inverse.reshape(-1)][faces], None if rgb is None else rgb[keep]


def _build_mesh(vertices, faces, interp, src_faces, uv, rgb, image):
    """The output mesh and its sRGB vertex colours; UVs and colours are interpolated at decimated
    vertices' source surface points."""
    import trimesh
    from trimesh.visual import TextureVisuals

    visual = None
    if uv is not None:
        visual = TextureVisuals(uv=_interpolate(uv, src_faces, interp), material=_pbr_material(image))
    if rgb is not None:
        rgb = np.clip(_interpolate(rgb, src_faces, interp), 0.0, 1.0)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, visual=visual, process=False)
    mesh.vertex_normals = seam_aware_normals(vertices, faces)
    return mesh, rgb


def _pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def _glb_bytes(mesh, name: str, colour: _Colour, rgb: np.ndarray | None, extras: dict) -> bytes:
    import trimesh
    from trimesh.exchange.gltf import export_glb

    scene = trimesh.Scene()
    scene.add_geometry(mesh, geom_name=name, node_name=name)

    def add_buffers(buffer_items, tree) -> None:
        # embed the source texture file as-is instead of trimesh's re-encoded copy
        if colour.texture_bytes is not None and tree.get("images"):
            image = tree["images"][0]
            keys = list(buffer_items.keys())
            buffer_items[keys[image["bufferView"]]] = _pad4(colour.texture_bytes)
            image["mimeType"] = colour.texture_mime
        if rgb is None:
            return
        # COLOR_0 is linear in glTF; 16-bit so the sRGB -> linear step keeps dark tones (VEC4: glTF wants
        # vertex attributes 4-byte aligned)
        linear = np.round(srgb_to_linear(rgb) * 65535)
        data = np.concatenate([linear, np.full((len(linear), 1), 65535.0)], axis=1).astype("<u2")
        key = "dreamdist:COLOR_0"
        buffer_items[key] = _pad4(data.tobytes())
        accessor = {"bufferView": list(buffer_items.keys()).index(key), "byteOffset": 0, "componentType": 5123,
                    "normalized": True, "count": len(data), "type": "VEC4"}
        accessors = tree["accessors"]
        if isinstance(accessors, dict):
            accessors[key] = accessor
        else:
            accessors.append(accessor)
        for m in tree.get("meshes", []):
            for prim in m.get("primitives", []):
                prim["attributes"]["COLOR_0"] = len(accessors) - 1

    def finish_tree(tree) -> None:
        tree.setdefault("asset", {})["generator"] = f"dreamdist (trimesh {trimesh.__version__})"
        tree["asset"]["extras"] = extras
        factor = [*colour.factor, 1.0] if colour.factor is not None else [1.0, 1.0, 1.0, 1.0]
        materials = tree.setdefault("materials", [])
        for material in materials:
            material.setdefault("pbrMetallicRoughness", {})["baseColorFactor"] = factor
        # a primitive with no material gets glTF's default (metallicFactor 1): give untextured
        # (e.g. vertex-coloured) meshes a plain non-metallic one instead
        for m in tree.get("meshes", []):
            for prim in m.get("primitives", []):
                if "material" not in prim:
                    materials.append({"name": "plain", "pbrMetallicRoughness": {
                        "baseColorFactor": factor, "metallicFactor": 0.0, "roughnessFactor": 1.0}})
                    prim["material"] = len(materials) - 1
        if not materials:
            tree.pop("materials")
        # tell loaders which views hold vertex data and which hold indices (validator hint)
        views, accessors = tree.get("bufferViews", []), tree.get("accessors", [])
        for m in tree.get("meshes", []):
            for prim in m.get("primitives", []):
                for acc in prim.get("attributes", {}).values():
                    views[accessors[acc]["bufferView"]]["target"] = 34962  # ARRAY_BUFFER
                if "indices" in prim:
                    views[accessors[prim["indices"]]["bufferView"]]["target"] = 34963  # ELEMENT_ARRAY_BUFFER

    return export_glb(scene, include_normals=True, buffer_postprocessor=add_buffers,
                      tree_postprocessor=finish_tree)


def export_mesh(obj_path: str | Path, glb_path: str | Path, up: str = THREESTUDIO_UP, height: float | None = None,
                origin: str = "bottom-center", max_faces: int | None = None, lods: int = 1, force: bool = False,
                front: str | None = None) -> ExportReport:
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

    base, mtl = _load(obj_path)
    base.apply_transform(T)
    vertices = np.asarray(base.vertices, dtype=np.float64)
    extent_y = float(np.ptp(vertices[:, 1]))
    if height is not None and extent_y <= 0:
        raise InputError(f"{obj_path}: the mesh is flat along the up axis {up}; cannot scale it to --height")
    scale = 1.0 if height is None else height / extent_y
    vertices = vertices * scale
    vertices = vertices + _origin_shift(vertices, origin)
    faces = np.asarray(base.faces, dtype=np.int64)

    colour = _choose_colour(obj_path, base, mtl)
    uv, rgb = None, colour.vertex
    if colour.image is not None:
        uv = np.asarray(base.visual.uv, dtype=np.float64)
    else:  # UVs with no texture would be unused data
        vertices, faces, rgb = _weld(vertices, faces, rgb)

    budget0 = min(len(faces), max_faces) if max_faces else len(faces)
    extras = {"source": obj_path.name, "up": up, "front": front, "scale": scale, "origin": origin,
              "units": "metres"}
    written: list[LodReport] = []
    first_mesh = None
    for i, target in enumerate(targets):
        budget = max(MIN_FACES, budget0 // (2 ** i))
        v, f, interp = decimate(vertices, faces, budget)
        mesh, v_rgb = _build_mesh(v, f, interp, faces, uv, rgb, colour.image)
        name = target.stem
        data = _glb_bytes(mesh, name, colour, v_rgb, {**extras, "lod": i})
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        written.append(LodReport(str(target), len(v), len(f), len(data)))
        if first_mesh is None:
            first_mesh = (v, f)
    v0, f0 = first_mesh
    return ExportReport(
        source=str(obj_path), path=str(glb_path), vertices=len(v0), faces=len(f0), source_faces=len(faces),
        bounds_min=[float(x) for x in v0.min(0)], bounds_max=[float(x) for x in v0.max(0)], scale=float(scale),
        watertight=_watertight(v0, f0), texture=colour.desc, lods=written, warnings=colour.warnings,
    )


def find_threestudio_export(trial_dir: str | Path) -> Path | None:
    """The newest TRIAL/save/it{N}-export/model.obj (highest N), or None."""
    best: tuple[int, Path] | None = None
    for obj in Path(trial_dir).glob("save/it*-export/*.obj"):
        m = re.match(r"it(\d+)-export$", obj.parent.name)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), obj)
    return None if best is None else best[1]


def read_glb_json(path: str | Path) -> dict:
    """The JSON chunk of a GLB (for reports and tests)."""
    import json
    import struct

    data = Path(path).read_bytes()
    length, _ = struct.unpack_from("<II", data, 12)
    return json.loads(data[20:20 + length])


__all__: Sequence[str] = ["export_mesh", "ExportReport", "LodReport", "axis_transform", "decimate",
                          "find_threestudio_export", "lod_paths", "read_glb_json", "THREESTUDIO_UP",
                          "THREESTUDIO_FRONT"]
