"""Writing the GLB: trimesh's glTF exporter with the source texture embedded untouched (trimesh would
re-encode a JPEG at quality 75), COLOR_0 in glTF's linear space at 16 bits, a non-metallic PBR material
(glTF's default metallicFactor 1 renders threestudio's diffuse albedo dark and shiny) and buffer-view
targets set for validators."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from dreamdist.mesh_export.geometry import interpolate, seam_aware_normals
from dreamdist.mesh_export.obj_input import Colour


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded values (what threestudio's albedo and every image holds) to glTF's linear COLOR_0."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def _pbr_material(image):
    from trimesh.visual.material import PBRMaterial

    # threestudio's albedo is diffuse-only: non-metallic, fully rough
    return PBRMaterial(
        name="material",
        baseColorTexture=image,
        baseColorFactor=[255, 255, 255, 255],
        metallicFactor=0.0,
        roughnessFactor=1.0,
    )


def build_mesh(vertices, faces, interp, src_faces, uv, rgb, image):
    """The output mesh and its sRGB vertex colours; UVs and colours are interpolated at decimated
    vertices' source surface points."""
    import trimesh
    from trimesh.visual import TextureVisuals

    visual = None
    if uv is not None:
        visual = TextureVisuals(uv=interpolate(uv, src_faces, interp), material=_pbr_material(image))
    if rgb is not None:
        rgb = np.clip(interpolate(rgb, src_faces, interp), 0.0, 1.0)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, visual=visual, process=False)
    mesh.vertex_normals = seam_aware_normals(vertices, faces)
    return mesh, rgb


def _pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def glb_bytes(mesh, name: str, colour: Colour, rgb: np.ndarray | None, extras: dict) -> bytes:
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
        accessor = {
            "bufferView": list(buffer_items.keys()).index(key),
            "byteOffset": 0,
            "componentType": 5123,
            "normalized": True,
            "count": len(data),
            "type": "VEC4",
        }
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
                    materials.append(
                        {
                            "name": "plain",
                            "pbrMetallicRoughness": {
                                "baseColorFactor": factor,
                                "metallicFactor": 0.0,
                                "roughnessFactor": 1.0,
                            },
                        }
                    )
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

    return export_glb(scene, include_normals=True, buffer_postprocessor=add_buffers, tree_postprocessor=finish_tree)


def read_glb_json(path: str | Path) -> dict:
    """The JSON chunk of a GLB (for reports and tests)."""

    data = Path(path).read_bytes()
    length, _ = struct.unpack_from("<II", data, 12)
    return json.loads(data[20 : 20 + length])
