"""`dreamdist export-mesh`: threestudio's mesh-exporter output (written here by the stand-in's copy of
threestudio's OBJ/MTL writer) -> GLB with glTF conventions, checked on the reloaded file."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")

from dreamdist.cli import main  # noqa: E402
from dreamdist.errors import InputError  # noqa: E402
from dreamdist.mesh_export import export_mesh, read_glb_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STANDIN = Path(__file__).parent / "standin_threestudio_launch" / "launch.py"


def _standin():
    spec = importlib.util.spec_from_file_location("standin_threestudio_launch", STANDIN)
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
    blob = data[20 + json_len + 8:]
    embedded = blob[view.get("byteOffset", 0): view.get("byteOffset", 0) + view["byteLength"]]
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


def test_vertex_colour_export(tmp_path):
    obj = standin.write_mesh_export(tmp_path / "vc", seed=1, fmt="obj")
    out = tmp_path / "vc.glb"
    report = export_mesh(obj, out)
    tree = read_glb_json(out)
    prim = tree["meshes"][0]["primitives"][0]
    assert "COLOR_0" in prim["attributes"] and "NORMAL" in prim["attributes"]
    assert tree["materials"][prim["material"]]["pbrMetallicRoughness"]["metallicFactor"] == 0.0
    assert "vertex colours" in report.texture
    got = _reload(out)
    colours = got.visual.vertex_attributes.get("color") if hasattr(got.visual, "vertex_attributes") else None
    colours = got.visual.vertex_colors if colours is None else colours
    np.testing.assert_array_equal(colours, _source(obj).visual.vertex_colors)


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

    import dreamdist.mesh_export as me

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(me, "_glb_bytes", boom)
    with pytest.raises(RuntimeError):
        export_mesh(textured, tmp_path / "new.glb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["it10000-export", "out.glb"]  # no partial file


@pytest.mark.parametrize("case,needle", [
    ("missing-texture", "texture_kd.jpg"),
    ("missing-mtl", "model.mtl"),
    ("empty", "empty"),
    ("missing-input", "no such file"),
    ("bad-up", "--up"),
    ("not-glb", ".glb"),
    ("bad-height", "--height"),
])
def test_bad_inputs_give_one_clear_line(tmp_path, capsys, case, needle):
    obj = standin.write_mesh_export(tmp_path / "e", seed=0, empty=(case == "empty"))
    out, extra = tmp_path / "out.glb", []
    if case == "missing-texture":
        (obj.parent / "texture_kd.jpg").unlink()
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
    candidates = [os.environ.get("DREAMDIST_GLTF_VALIDATOR", ""), REPO / "node_modules" / "gltf-validator",
                  REPO / ".cache" / "node" / "node_modules" / "gltf-validator"]
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
    vc = standin.write_mesh_export(tmp_path / "vc", seed=3, fmt="obj")
    export_mesh(vc, tmp_path / "vc.glb")
    script = tmp_path / "validate.js"
    script.write_text(VALIDATE_JS)
    files = [tmp_path / "t.glb", tmp_path / "t_LOD1.glb", tmp_path / "vc.glb"]
    proc = subprocess.run([node, str(script), str(package), *map(str, files)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["errors"] for r in results] == [0, 0, 0], results
    assert [r["warnings"] for r in results] == [0, 0, 0], results
