"""`dreamdist export-mesh`: threestudio's mesh-exporter output (written here by the stand-in of
threestudio's exporter + OBJ/MTL writer, for every fmt / save_uv / save_texture setting) -> GLB with glTF
conventions and the source's colour, checked on the written file."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")

from dreamdist.cli import main  # noqa: E402
from dreamdist.mesh_export import export_mesh, linear_to_srgb, read_glb_json  # noqa: E402
from dreamdist.utils.errors import InputError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STANDIN_DIR = Path(__file__).parent / "standin_threestudio_launch"
STANDIN = STANDIN_DIR / "mesh_exporter.py"


def _standin():
    spec = importlib.util.spec_from_file_location("standin_threestudio_mesh_exporter", STANDIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


standin = _standin()


@pytest.fixture
def textured(tmp_path) -> Path:
    return standin.write_mesh_export(tmp_path / "it10000-export", seed=2)


def _reload(path: Path):
    scene = trimesh.load(path, process=False)
    (mesh,) = scene.geometry.values()
    return mesh


def _source(obj: Path):
    return trimesh.load(obj, force="mesh", process=False)


# ------------------------------------------------------------------------------- conventions


@pytest.mark.parametrize("up", ["+Z", "-Z", "+X", "+Y"])
def test_up_axis_height_and_bottom_centre_origin(textured, tmp_path, up):
    src = np.asarray(_source(textured).vertices)
    report = export_mesh(textured, tmp_path / "out.glb", up=up, height=1.8)
    got = np.asarray(_reload(tmp_path / "out.glb").vertices)
    assert got.shape == src.shape  # no decimation asked: same vertices, same order

    if up == "+Z":  # threestudio's default: the smallest rotation, (x, y, z) -> (x, z, -y)
        s = 1.8 / np.ptp(src[:, 2])
        np.testing.assert_allclose(got[:, 0], (src[:, 0] - (src[:, 0].min() + src[:, 0].max()) / 2) * s, atol=1e-5)
        np.testing.assert_allclose(got[:, 2], -(src[:, 1] - (src[:, 1].min() + src[:, 1].max()) / 2) * s, atol=1e-5)
    axis = {"+Z": src[:, 2], "-Z": -src[:, 2], "+X": src[:, 0], "+Y": src[:, 1]}[up]
    scale = 1.8 / np.ptp(axis)
    # the requested up axis became +Y (sign included), scaled to the height, standing on y = 0
    np.testing.assert_allclose(got[:, 1], (axis - axis.min()) * scale, atol=1e-5)
    assert got[:, 1].min() == pytest.approx(0.0, abs=1e-6)
    assert np.ptp(got[:, 1]) == pytest.approx(1.8, abs=1e-5)
    # bottom centre: the bounding box is centred on x and z
    lo, hi = got.min(0), got.max(0)
    assert (lo[0] + hi[0]) / 2 == pytest.approx(0.0, abs=1e-5)
    assert (lo[2] + hi[2]) / 2 == pytest.approx(0.0, abs=1e-5)
    # a rotation, not a mirror: distances kept (up to scale) and the volume stays positive (outward)
    d_src = np.linalg.norm(src[10] - src[500])
    assert np.linalg.norm(got[10] - got[500]) == pytest.approx(d_src * scale, rel=1e-5)
    merged = _reload(tmp_path / "out.glb")
    merged.merge_vertices(merge_tex=True, merge_norm=True)
    assert merged.is_watertight and merged.volume > 0
    assert report.faces == len(_source(textured).faces)
    assert report.bounds_min[1] == pytest.approx(0.0, abs=1e-6)


def test_front_axis_and_other_origins(textured, tmp_path):
    src = np.asarray(_source(textured).vertices)
    export_mesh(textured, tmp_path / "front.glb", up="+Z", front="+X", origin="center")
    got = np.asarray(_reload(tmp_path / "front.glb").vertices)
    # threestudio's front (+X) now faces glTF's +Z; up (+Z) is +Y; X = Y x Z comes from threestudio's +Y
    for new, old in ((2, src[:, 0]), (1, src[:, 2]), (0, src[:, 1])):
        np.testing.assert_allclose(got[:, new], old - (old.min() + old.max()) / 2, atol=1e-5)

    export_mesh(textured, tmp_path / "keep.glb", up="+Z", origin="keep")
    got = np.asarray(_reload(tmp_path / "keep.glb").vertices)
    np.testing.assert_allclose(got[:, 1], src[:, 2], atol=1e-5)  # no scale, no shift: scene units as metres


def test_texture_survives_byte_for_byte_with_uvs_and_a_matte_material(textured, tmp_path):
    out = tmp_path / "out.glb"
    report = export_mesh(textured, out)
    tree = read_glb_json(out)
    (image,) = tree["images"]
    assert image["mimeType"] == "image/jpeg"
    view = tree["bufferViews"][image["bufferView"]]
    data = out.read_bytes()
    json_len = int.from_bytes(data[12:16], "little")
    blob = data[20 + json_len + 8 :]
    embedded = blob[view.get("byteOffset", 0) : view.get("byteOffset", 0) + view["byteLength"]]
    original = (textured.parent / "texture_kd.jpg").read_bytes()
    assert embedded.rstrip(b"\x00") == original.rstrip(b"\x00")  # the source JPEG, not a re-encode

    (material,) = tree["materials"]
    pbr = material["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0 and "baseColorTexture" in pbr

    src, got = _source(textured), _reload(out)
    assert got.visual.material.baseColorTexture.size == (64, 64)
    np.testing.assert_allclose(got.visual.uv, src.visual.uv, atol=1e-6)
    # the colour each vertex shows is the same after the round trip (float32 UVs: +-1 at texel edges)
    diff = np.abs(got.visual.to_color().vertex_colors.astype(int) - src.visual.to_color().vertex_colors.astype(int))
    assert diff.max() <= 2
    assert "64x64 jpeg" in report.texture


def test_normals_are_present_unit_and_smooth_across_the_uv_seam(textured, tmp_path):
    out = tmp_path / "out.glb"
    export_mesh(textured, out)
    attrs = read_glb_json(out)["meshes"][0]["primitives"][0]["attributes"]
    assert {"POSITION", "NORMAL", "TEXCOORD_0"} <= set(attrs)
    mesh = _reload(out)
    normals = np.asarray(mesh.vertex_normals)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    outward = np.einsum("ij,ij->i", normals, mesh.vertices - mesh.vertices.mean(0))
    assert (outward > 0).all()
    # the seam's two vertex copies (same position, different UV) share one normal
    _, inverse, counts = np.unique(np.round(mesh.vertices, 5), axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    dup = np.flatnonzero(counts[inverse] > 1)
    assert len(dup) > 0
    for group in np.unique(inverse[dup])[:20]:
        members = normals[inverse == group]
        assert np.abs(members - members[0]).max() < 1e-5


def _surface_uvs(src, points: np.ndarray, k: int = 24) -> list[np.ndarray]:
    """The UV(s) the source surface has at each point: the closest source triangle(s) (two at a
    seam, where one position has two UVs), barycentric interpolation."""
    from trimesh.triangles import closest_point, points_to_barycentric

    faces, verts, uv = np.asarray(src.faces), np.asarray(src.vertices), np.asarray(src.visual.uv)
    centroids = verts[faces].mean(1)
    near = np.argpartition(np.linalg.norm(points[:, None] - centroids[None], axis=2), k, axis=1)[:, :k]
    tris = verts[faces[near.reshape(-1)]]
    pts = np.repeat(points, k, axis=0)
    cp = closest_point(tris, pts)
    dist = np.linalg.norm(cp - pts, axis=1).reshape(-1, k)
    bary = points_to_barycentric(tris, cp).reshape(-1, k, 3)
    uvs = np.einsum("nkj,nkjc->nkc", bary, uv[faces[near]])
    return [uvs[i][dist[i] <= dist[i].min() + 1e-6] for i in range(len(points))]


def test_face_budget_and_lods_keep_uvs(textured, tmp_path):
    out = tmp_path / "prop.glb"
    src = _source(textured)
    report = export_mesh(textured, out, max_faces=600, lods=3, height=1.0)
    paths = [out, tmp_path / "prop_LOD1.glb", tmp_path / "prop_LOD2.glb"]
    assert [Path(lod.path) for lod in report.lods] == paths
    sv = np.asarray(src.vertices)
    scale = 1.0 / np.ptp(sv[:, 2])
    # undo the export transform (+Z up -> +Y, scale, bottom centre) to compare with the source
    shift = np.array([(sv[:, 0].min() + sv[:, 0].max()) / 2, (sv[:, 1].min() + sv[:, 1].max()) / 2, sv[:, 2].min()])
    previous = None
    for path, budget in zip(paths, (600, 300, 150)):
        mesh = _reload(path)
        assert 0 < len(mesh.faces) <= budget
        assert previous is None or len(mesh.faces) < previous
        previous = len(mesh.faces)
        assert mesh.visual.material.baseColorTexture.size == (64, 64)
        assert np.ptp(mesh.vertices[:, 1]) == pytest.approx(1.0, rel=0.05)
        g = np.asarray(mesh.vertices)
        back = np.stack([g[:, 0], -g[:, 2], g[:, 1]], 1) / scale + shift
        # every vertex carries the UV the source surface has where that vertex now lies (away from
        # the lat-long poles, where one point has every u: there any UV is "right")
        zc, rz = (sv[:, 2].min() + sv[:, 2].max()) / 2, np.ptp(sv[:, 2]) / 2
        away = np.abs(back[:, 2] - zc) < 0.9 * rz
        assert away.sum() > 50
        expected = _surface_uvs(src, back[away])
        uv = np.asarray(mesh.visual.uv)[away]
        err = np.array([np.abs(e - u).max(1).min() for e, u in zip(expected, uv)])
        assert np.mean(err < 1e-4) >= 0.99, np.sort(err)[-10:]
    assert report.faces <= 600


# ------------------------------------------------------------------------------------ colour


# every (fmt, save_uv, save_texture) threestudio accepts; obj-mtl with save_texture needs save_uv
SETTINGS = [
    ("obj-mtl", True, True),
    ("obj-mtl", True, False),
    ("obj-mtl", False, False),
    ("obj", True, True),
    ("obj", False, True),
    ("obj", True, False),
    ("obj", False, False),
]
HALF_LEVEL = 0.5 / 255  # uint8 rounding of a colour in 0..1


def _glb(path: Path):
    """(tree, accessor(i) -> array, image bytes(i)) read straight from the GLB, without trimesh."""
    data = path.read_bytes()
    n = int.from_bytes(data[12:16], "little")
    tree, binary = json.loads(data[20 : 20 + n]), data[20 + n + 8 :]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
    component = {5121: "<u1", 5123: "<u2", 5125: "<u4", 5126: "<f4"}

    def accessor(i: int) -> np.ndarray:
        a = tree["accessors"][i]
        view = tree["bufferViews"][a["bufferView"]]
        dtype = np.dtype(component[a["componentType"]])
        arr = np.frombuffer(
            binary,
            dtype,
            count=a["count"] * width[a["type"]],
            offset=view.get("byteOffset", 0) + a.get("byteOffset", 0),
        ).reshape(a["count"], -1)
        return arr / np.iinfo(dtype).max if a.get("normalized") else arr.astype(np.float64)

    def image(i: int) -> bytes:
        view = tree["bufferViews"][tree["images"][i]["bufferView"]]
        return binary[view.get("byteOffset", 0) : view.get("byteOffset", 0) + view["byteLength"]]

    return tree, accessor, image


def _sample(image_bytes: bytes, st: np.ndarray) -> np.ndarray:
    """Nearest-texel sRGB colour (0..1) at texture coordinates with t = 0 on the image's top row."""
    import io

    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(image_bytes)).convert("RGB"), dtype=np.float64) / 255
    h, w = img.shape[:2]
    col = np.clip((st[:, 0] * w).astype(int), 0, w - 1)
    row = np.clip((st[:, 1] * h).astype(int), 0, h - 1)
    return img[row, col]


def glb_corner_colours(path: Path) -> tuple[np.ndarray, dict]:
    """The sRGB colour (0..1) the GLB shows at each face corner: baseColorFactor x texture x COLOR_0,
    as glTF defines them (factor and COLOR_0 linear, the texture sRGB); plus the primitive."""
    tree, accessor, image = _glb(path)
    (mesh,) = tree["meshes"]
    (prim,) = mesh["primitives"]
    attrs = prim["attributes"]
    faces = accessor(prim["indices"]).astype(np.int64).reshape(-1, 3)
    pbr = tree["materials"][prim["material"]]["pbrMetallicRoughness"]
    linear = np.ones((len(faces), 3, 3)) * np.asarray(pbr.get("baseColorFactor", [1, 1, 1, 1]))[:3]
    if "COLOR_0" in attrs:
        linear = linear * accessor(attrs["COLOR_0"])[:, :3][faces]
    if "baseColorTexture" in pbr:
        texture = tree["textures"][pbr["baseColorTexture"]["index"]]
        st = accessor(attrs["TEXCOORD_0"])[faces.reshape(-1)]
        srgb = _sample(image(texture["source"]), st).reshape(-1, 3, 3)
        linear = linear * np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    return linear_to_srgb(linear), prim


def obj_corner_colours(obj: Path) -> np.ndarray:
    """The sRGB colour (0..1) at each face corner of a Wavefront OBJ, read from its text (not trimesh):
    the MTL's map_Kd at the corner's vt, else the "v x y z r g b" colour, else the MTL's Kd, else white."""
    v, vt, corners, mtllib = [], [], [], None
    for line in obj.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            v.append([float(x) for x in parts[1:]])
        elif parts[0] == "vt":
            vt.append([float(x) for x in parts[1:3]])
        elif parts[0] == "f":
            corners += [[int(i) - 1 if i else -1 for i in (c.split("/") + ["", ""])[:2]] for c in parts[1:4]]
        elif parts[0] == "mtllib":
            mtllib = parts[1]
    corners = np.asarray(corners, dtype=np.int64).reshape(-1, 2)
    texture, kd = None, None
    if mtllib:
        for line in (obj.parent / mtllib).read_text().splitlines():
            if line.startswith("map_Kd "):
                texture = obj.parent / line.split(None, 1)[1]
            elif line.startswith("Kd "):
                kd = [float(x) for x in line.split()[1:4]]
    v = np.asarray(v)
    if texture is not None and vt:
        uv = np.asarray(vt)[corners[:, 1]]
        return _sample(texture.read_bytes(), np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1)).reshape(-1, 3, 3)
    if v.shape[1] >= 6:
        return v[corners[:, 0], 3:6].reshape(-1, 3, 3)
    return np.ones((len(corners) // 3, 3, 3)) * np.asarray(kd if kd is not None else [1.0, 1.0, 1.0])


@pytest.mark.parametrize("fmt,save_uv,save_texture", SETTINGS)
def test_every_threestudio_export_setting_keeps_its_colour(tmp_path, fmt, save_uv, save_texture):
    obj = standin.write_mesh_export(
        tmp_path / "it100-export", seed=4, fmt=fmt, save_uv=save_uv, save_texture=save_texture
    )
    out = tmp_path / "asset.glb"
    report = export_mesh(obj, out, height=1.0)
    got, prim = glb_corner_colours(out)
    want = obj_corner_colours(obj)
    assert got.shape == want.shape  # no decimation: the same faces, in the same order
    mean_diff = np.abs(got.reshape(-1, 3).mean(0) - want.reshape(-1, 3).mean(0)).max()
    corner_diff = np.abs(got - want).max(-1)
    print(
        f"{fmt} save_uv={save_uv} save_texture={save_texture}: {report.texture}; mean colour "
        f"{np.round(want.reshape(-1, 3).mean(0), 4)} vs {np.round(got.reshape(-1, 3).mean(0), 4)}, "
        f"max |diff| {mean_diff:.2e}; max corner |diff| {corner_diff.max():.2e}"
    )
    assert mean_diff <= HALF_LEVEL
    assert report.warnings == []
    if not save_texture:  # threestudio wrote no colour: white, and the report says so
        assert np.all(want == 1.0) and "none" in report.texture and "COLOR_0" not in prim["attributes"]
        return
    assert not np.allclose(want, 1.0)
    if fmt == "obj-mtl":
        assert "TEXCOORD_0" in prim["attributes"] and "embedded" in report.texture
        # nearest-texel lookups at float32 UVs may land on the neighbour texel right at a quadrant edge
        assert np.mean(corner_diff <= 2 / 255) >= 0.995
    else:
        assert "COLOR_0" in prim["attributes"] and "vertex colours" in report.texture
        assert "TEXCOORD_0" not in prim["attributes"]  # no texture: UVs would be unused data
        # every corner, not only on average (+ 16-bit linear quantisation, at most 12.92 / 65535 / 2)
        assert corner_diff.max() <= HALF_LEVEL + 1e-4
        # glTF's COLOR_0 is linear: threestudio's sRGB albedo was converted, not copied
        tree, accessor, _ = _glb(out)
        stored = accessor(prim["attributes"]["COLOR_0"])[:, :3]
        assert tree["accessors"][prim["attributes"]["COLOR_0"]]["componentType"] == 5123
        assert stored.mean() < linear_to_srgb(stored).mean() - 0.05


def test_vertex_colours_survive_decimation_and_lods(tmp_path):
    # threestudio's fmt=obj default: UVs and a colour on every vertex
    obj = standin.write_mesh_export(tmp_path / "vc", seed=1, fmt="obj")
    src_v = np.array(
        [[float(x) for x in line.split()[1:4]] for line in obj.read_text().splitlines() if line.startswith("v ")]
    )
    lo, span = src_v.min(0), np.ptp(src_v, 0)
    out = tmp_path / "vc.glb"
    # +Y up with the origin kept: the GLB's coordinates are the OBJ's, so colours can be checked in place
    report = export_mesh(obj, out, up="+Y", origin="keep", max_faces=800, lods=3)
    assert report.lods[0].faces <= 800
    for lod, budget in zip(report.lods, (800, 400, 200)):
        tree, accessor, _ = _glb(Path(lod.path))
        (prim,) = tree["meshes"][0]["primitives"]
        assert 0 < tree["accessors"][prim["indices"]]["count"] // 3 <= budget
        pos = accessor(prim["attributes"]["POSITION"])
        colour = linear_to_srgb(accessor(prim["attributes"]["COLOR_0"])[:, :3])
        # the stand-in's albedo is affine in position, so the source surface's colour at a point is
        # albedo_at(point); a decimated vertex sits (nearly) on that surface
        err = np.abs(colour - standin.albedo_at(pos, lo, span)).max(1)
        print(f"LOD faces<={budget}: colour error median {np.median(err):.4f}, 99th pct {np.quantile(err, 0.99):.4f}")
        assert np.quantile(err, 0.99) < 0.03 and np.median(err) < 0.01
    assert "vertex colours" in report.texture


def _add_vertex_colours(obj: Path) -> None:
    lines = obj.read_text().splitlines()
    obj.write_text("".join((line + " 0.25 0.5 0.75" if line.startswith("v ") else line) + "\n" for line in lines))


def _drop_uvs(obj: Path) -> None:
    lines = [line for line in obj.read_text().splitlines() if not line.startswith("vt ")]
    obj.write_text("".join(re.sub(r"(\d+)/\d+/", r"\1//", line) + "\n" for line in lines))


def test_texture_and_vertex_colours_use_the_texture_and_say_so(textured, tmp_path, capsys):
    _add_vertex_colours(textured)
    out = tmp_path / "both.glb"
    assert main(["export-mesh", str(textured), str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(
        r"^warning +model\.obj has both a texture \(texture_kd\.jpg\) and vertex colours; "
        r"the GLB uses the texture$",
        text,
        re.MULTILINE,
    ), text
    assert "vertex colours are not used" in text
    got, prim = glb_corner_colours(out)
    assert "COLOR_0" not in prim["attributes"]  # glTF would multiply it into the texture
    assert np.abs(got.mean((0, 1)) - obj_corner_colours(textured).mean((0, 1))).max() <= HALF_LEVEL


def test_texture_without_uvs_falls_back_to_vertex_colours_or_refuses(textured, tmp_path):
    _drop_uvs(textured)
    with pytest.raises(InputError, match="no UVs"):
        export_mesh(textured, tmp_path / "white.glb")
    assert not (tmp_path / "white.glb").exists()
    _add_vertex_colours(textured)
    report = export_mesh(textured, tmp_path / "vc.glb")
    assert report.warnings == [
        ("texture texture_kd.jpg not used: model.obj has no UVs (vt lines); the GLB uses its vertex colours")
    ]
    got, _ = glb_corner_colours(tmp_path / "vc.glb")
    np.testing.assert_allclose(got.mean((0, 1)), [0.25, 0.5, 0.75], atol=HALF_LEVEL)


def test_plain_mtl_colour_becomes_the_base_colour_factor(tmp_path):
    obj = standin.write_mesh_export(tmp_path / "kd", seed=0, save_texture=False)
    mtl = obj.with_suffix(".mtl")
    mtl.write_text(mtl.read_text().replace("Kd 1.0 1.0 1.0", "Kd 0.8 0.2 0.1"))
    report = export_mesh(obj, tmp_path / "kd.glb")
    tree = read_glb_json(tmp_path / "kd.glb")
    (material,) = tree["materials"]
    assert material["pbrMetallicRoughness"]["baseColorFactor"] == [0.8, 0.2, 0.1, 1.0]
    assert "Kd" in report.texture


# ------------------------------------------------------------------------ the stand-in itself


@pytest.mark.parametrize("fmt,save_uv,save_texture", SETTINGS)
def test_standin_writes_threestudios_files_and_lines(tmp_path, fmt, save_uv, save_texture):
    """What threestudio v0.2.3's mesh-exporter + SaverMixin.save_obj write for each setting."""
    obj = standin.write_mesh_export(tmp_path, seed=0, fmt=fmt, save_uv=save_uv, save_texture=save_texture)
    files = (
        {"model.obj"}
        | ({"model.mtl"} if fmt == "obj-mtl" else set())
        | ({"texture_kd.jpg"} if fmt == "obj-mtl" and save_texture else set())
    )
    assert {p.name for p in tmp_path.iterdir()} == files
    lines = obj.read_text().splitlines()
    head = ["mtllib model.mtl", "g object", "usemtl default"]
    assert (lines[:3] == head) == (fmt == "obj-mtl")
    v = [line for line in lines if line.startswith("v ")]
    vt = [line for line in lines if line.startswith("vt ")]
    f = [line for line in lines if line.startswith("f ")]
    assert {len(line.split()) for line in v} == {7 if fmt == "obj" and save_texture else 4}
    assert bool(vt) == save_uv and (not save_uv or len(vt) > len(v))  # welded v; seams split only the vt
    corner = r"\d+/\d+/" if save_uv else r"\d+//"
    assert all(re.fullmatch(rf"f {corner} {corner} {corner}", line) for line in f)
    if fmt == "obj-mtl":
        kd = "map_Kd texture_kd.jpg" if save_texture else "Kd 1.0 1.0 1.0"
        assert obj.with_suffix(".mtl").read_text() == f"newmtl default\nKa 0.0 0.0 0.0\n{kd}\nKs 0.0 0.0 0.0\n"
    assert not any(line.startswith("vn ") for line in lines)  # save_normal defaults to false


def test_standin_refuses_a_texture_without_uvs_like_threestudio(tmp_path):
    with pytest.raises(AssertionError, match="save_uv must be True when save_texture is True"):
        standin.write_mesh_export(tmp_path, fmt="obj-mtl", save_uv=False, save_texture=True)


def test_standin_launch_passes_exporter_settings_through(tmp_path):
    (tmp_path / "custom").mkdir()
    (tmp_path / "cfg.yaml").write_text(
        "name: t\ntag: x\nuse_timestamp: false\nexp_root_dir: out\n"
        "trainer:\n  max_steps: 7\ncheckpoint:\n  save_last: true\n"
    )
    env = {
        **os.environ,
        "STANDIN_LAUNCH_SECONDS": "0",
        "STANDIN_LAUNCH_TEST_SECONDS": "0",
        "STANDIN_LAUNCH_EXPORT_SECONDS": "0",
    }
    for var in ("STANDIN_LAUNCH_LOG", "STANDIN_LAUNCH_FAIL_SEEDS", "STANDIN_LAUNCH_EMPTY_MESH"):
        env.pop(var, None)
    trial = tmp_path / "out" / "t" / "x"
    for mode, extra in (
        ("--train", []),
        ("--export", [f"resume={trial}/ckpts/last.ckpt", "system.exporter.fmt=obj", "system.exporter.save_uv=false"]),
    ):
        proc = subprocess.run(
            [sys.executable, str(STANDIN_DIR / "launch.py"), "--config", "cfg.yaml", mode, *extra],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    (obj,) = (trial / "save").glob("it*-export/model.obj")
    lines = obj.read_text().splitlines()
    assert not any(line.startswith("vt ") for line in lines) and len(lines[0].split()) == 7


# ----------------------------------------------------------------------------------- errors


def test_refuses_to_overwrite_without_force_and_writes_atomically(textured, tmp_path, monkeypatch):
    out = tmp_path / "out.glb"
    export_mesh(textured, out)
    before = out.read_bytes()
    with pytest.raises(InputError, match="--force"):
        export_mesh(textured, out, height=2.0)
    assert out.read_bytes() == before
    export_mesh(textured, out, height=2.0, force=True)
    assert out.read_bytes() != before

    import dreamdist.mesh_export.export as me

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(me, "glb_bytes", boom)
    with pytest.raises(RuntimeError):
        export_mesh(textured, tmp_path / "new.glb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["it10000-export", "out.glb"]  # no partial file


@pytest.mark.parametrize(
    "case,needle",
    [
        ("missing-texture", "texture_kd.jpg"),
        ("unreadable-texture", "could not be read as an image"),
        ("texture-without-uvs", "no UVs"),
        ("missing-mtl", "model.mtl"),
        ("empty", "empty"),
        ("missing-input", "no such file"),
        ("bad-up", "--up"),
        ("not-glb", ".glb"),
        ("bad-height", "--height"),
    ],
)
def test_bad_inputs_give_one_clear_line(tmp_path, capsys, case, needle):
    obj = standin.write_mesh_export(tmp_path / "e", seed=0, empty=(case == "empty"))
    out, extra = tmp_path / "out.glb", []
    if case == "missing-texture":
        (obj.parent / "texture_kd.jpg").unlink()
    elif case == "unreadable-texture":
        (obj.parent / "texture_kd.jpg").write_bytes(b"not a jpeg")
    elif case == "texture-without-uvs":
        _drop_uvs(obj)
    elif case == "missing-mtl":
        (obj.parent / "model.mtl").unlink()
    elif case == "missing-input":
        obj = tmp_path / "nope.obj"
    elif case == "bad-up":
        extra = ["--up", "up"]
    elif case == "not-glb":
        out = tmp_path / "out.fbx"
    elif case == "bad-height":
        extra = ["--height", "-1"]
    rc = main(["export-mesh", str(obj), str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("dreamdist export-mesh: error:")
    assert needle in err
    assert not out.exists()


def test_cli_prints_report_and_json(textured, tmp_path, capsys):
    assert main(["export-mesh", str(textured), str(tmp_path / "a.glb"), "--height", "1.5", "--max-faces", "800"]) == 0
    text = capsys.readouterr().out
    for word in ("vertices", "faces", "bounds", "watertight", "texture"):
        assert word in text
    assert main(["export-mesh", str(textured), str(tmp_path / "b.glb"), "--json", "--lods", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["watertight"] is True and len(report["lods"]) == 2 and report["size"][1] > 0


# ------------------------------------------------------------------------ Khronos glTF validator


def _validator() -> Path | None:
    """gltf-validator (npm) under a node_modules folder: $DREAMDIST_GLTF_VALIDATOR, the repo's, or npm's global."""
    candidates = [
        os.environ.get("DREAMDIST_GLTF_VALIDATOR", ""),
        REPO / "node_modules" / "gltf-validator",
        REPO / ".cache" / "node" / "node_modules" / "gltf-validator",
    ]
    npm = shutil.which("npm")
    if npm:
        try:
            root = subprocess.run([npm, "root", "-g"], capture_output=True, text=True, timeout=30).stdout.strip()
            candidates.append(Path(root) / "gltf-validator")
        except (OSError, subprocess.SubprocessError):
            pass
    for c in candidates:
        if c and (Path(c) / "package.json").is_file():
            return Path(c)
    return None


VALIDATE_JS = """
const validator = require(process.argv[2]);
const fs = require('fs');
(async () => {
  const out = [];
  for (const file of process.argv.slice(3)) {
    const r = await validator.validateBytes(new Uint8Array(fs.readFileSync(file)));
    out.push({file, errors: r.issues.numErrors, warnings: r.issues.numWarnings,
              messages: r.issues.messages.filter(m => m.severity <= 1).slice(0, 5)});
  }
  console.log(JSON.stringify(out));
})().catch(e => { console.error(String(e)); process.exit(3); });
"""


def test_khronos_gltf_validator_finds_no_errors(textured, tmp_path):
    node, package = shutil.which("node"), _validator()
    if node is None or package is None:
        reason = "node not found" if node is None else "npm package gltf-validator not found under node_modules"
        print(f"SKIP reason: {reason} (install: npm install --no-save --no-package-lock --prefix . gltf-validator)")
        pytest.skip(reason)
    export_mesh(textured, tmp_path / "t.glb", max_faces=500, lods=2, height=1.2)
    files = [tmp_path / "t.glb", tmp_path / "t_LOD1.glb"]
    for fmt, save_uv, save_texture in SETTINGS[1:]:  # the textured default is t.glb
        name = f"{fmt}-uv{int(save_uv)}-tex{int(save_texture)}"
        obj = standin.write_mesh_export(tmp_path / name, seed=3, fmt=fmt, save_uv=save_uv, save_texture=save_texture)
        export_mesh(obj, tmp_path / f"{name}.glb", max_faces=500, lods=2)
        files += [tmp_path / f"{name}.glb", tmp_path / f"{name}_LOD1.glb"]
    script = tmp_path / "validate.js"
    script.write_text(VALIDATE_JS)
    proc = subprocess.run(
        [node, str(script), str(package), *map(str, files)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert len(results) == 14
    assert [r["errors"] for r in results] == [0] * 14, results
    assert [r["warnings"] for r in results] == [0] * 14, results
