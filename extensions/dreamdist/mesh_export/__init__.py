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

from dreamdist.mesh_export.axes import THREESTUDIO_FRONT, THREESTUDIO_UP, axis_transform, parse_axis
from dreamdist.mesh_export.export import ExportReport, LodReport, export_mesh, find_threestudio_export, lod_paths
from dreamdist.mesh_export.geometry import decimate, seam_aware_normals
from dreamdist.mesh_export.glb import linear_to_srgb, read_glb_json, srgb_to_linear

__all__ = [
    "export_mesh",
    "ExportReport",
    "LodReport",
    "axis_transform",
    "decimate",
    "find_threestudio_export",
    "lod_paths",
    "linear_to_srgb",
    "parse_axis",
    "read_glb_json",
    "seam_aware_normals",
    "srgb_to_linear",
    "THREESTUDIO_UP",
    "THREESTUDIO_FRONT",
]
