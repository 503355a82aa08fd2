"""STAND-IN for threestudio's mesh-exporter output -- tests only. This is NOT threestudio.

Writes the files threestudio v0.2.3's `mesh-exporter` (models/exporters/mesh_exporter.py) saves through
`SaverMixin.save_obj` (utils/saving.py) into TRIAL/save/it{N}-export/, byte-for-byte in the same text
format, for each exporter setting (defaults: fmt=obj-mtl, save_uv=true, save_texture=true,
save_normal=false, save_name=model, texture_format=jpg):

  fmt=obj-mtl  always model.mtl ("newmtl default", "Ka 0.0 0.0 0.0", then "map_Kd texture_kd.{fmt}" with
               the baked albedo texture if save_texture, else "Kd 1.0 1.0 1.0"; then "Ks 0.0 0.0 0.0"), and
               model.obj starting "mtllib model.mtl / g object / usemtl default". save_texture without
               save_uv fails an assertion (the real exporter raises AssertionError).
  fmt=obj      model.obj only; save_texture stores the albedo at each vertex as "v x y z r g b"
               (floats in 0..1) -- with "vt" lines as well when save_uv is on (the default).
  save_uv      "vt u 1-v" lines (xatlas: its own vertex list and face indices), faces "f v/vt/".
  save_normal  "vn" lines, faces "f v/vt/vn" (the normal index is the position index).

As in threestudio the positions are welded (marching cubes), so a UV seam lives only in the vt indices,
and every number is a float32 printed by an f-string. The "surface" is an off-centre ellipsoid, Z up,
whose size depends on the seed; its albedo is a four-colour quadrant texture (obj-mtl) or a position
ramp (obj vertex colours).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FORMATS = ("obj-mtl", "obj")


def ellipsoid(seed: int, segments: tuple[int, int] = (48, 24)):
    """(v_pos, t_pos_idx, v_tex, t_tex_idx): a lat-long ellipsoid with welded positions and a UV seam
    (split UVs), like threestudio's isosurface after xatlas unwrapping. v_tex is in xatlas' convention
    (row 0 of the texture image at v = 0); the OBJ writer flips v."""
    nu, nv = segments
    u, v = np.meshgrid(np.linspace(0, 1, nu + 1), np.linspace(0, 1, nv + 1))
    theta, phi = u * 2 * np.pi, v * np.pi
    radii = np.array([0.3, 0.4, 0.6]) * (1 + 0.1 * (seed % 5))
    grid_pos = np.stack(
        [radii[0] * np.sin(phi) * np.cos(theta), radii[1] * np.sin(phi) * np.sin(theta), -radii[2] * np.cos(phi)], -1
    ).reshape(-1, 3) + np.array([0.1, -0.2, 0.3])
    grid_uv = np.stack([u, v], -1).reshape(-1, 2)
    idx = np.arange((nu + 1) * (nv + 1)).reshape(nv + 1, nu + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    grid_faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    # weld: the seam column u=1 is u=0, each pole row is one point
    weld = idx.copy()
    weld[:, -1] = weld[:, 0]
    weld[0, :], weld[-1, :] = idx[0, 0], idx[-1, 0]
    t_pos = weld.reshape(-1)[grid_faces]
    keep = (t_pos[:, 0] != t_pos[:, 1]) & (t_pos[:, 1] != t_pos[:, 2]) & (t_pos[:, 0] != t_pos[:, 2])
    t_pos, t_tex = t_pos[keep], grid_faces[keep]
    used_pos, t_pos = np.unique(t_pos, return_inverse=True)
    used_tex, t_tex = np.unique(t_tex, return_inverse=True)
    return (
        grid_pos[used_pos].astype(np.float32),
        t_pos.reshape(-1, 3),
        grid_uv[used_tex].astype(np.float32),
        t_tex.reshape(-1, 3),
    )


def quadrant_texture(size: int = 64) -> np.ndarray:
    """The baked albedo (RGB, row 0 at xatlas v = 0): four flat colours."""
    img = np.zeros((size, size, 3), np.uint8)
    h = size // 2
    img[:h, :h], img[:h, h:], img[h:, :h], img[h:, h:] = [220, 30, 30], [30, 200, 30], [30, 30, 220], [230, 220, 40]
    return img


def albedo_at(points: np.ndarray, lo: np.ndarray, span: np.ndarray) -> np.ndarray:
    """The stand-in's albedo field: affine in position (so exact on any triangle), a different ramp per
    channel, in 0.05..0.95."""
    t = (points - lo) / np.where(span > 0, span, 1)
    return np.stack([0.1 + 0.85 * t[:, 0], 0.05 + 0.6 * t[:, 2], 0.95 - 0.8 * t[:, 1]], axis=1)


def vertex_albedo(v_pos: np.ndarray) -> np.ndarray:
    """material.export()['albedo'] at the vertices (fmt=obj): float32 in 0..1."""
    return albedo_at(v_pos.astype(np.float64), v_pos.min(0), np.ptp(v_pos, 0)).astype(np.float32)


def vertex_normals(v_pos: np.ndarray, t_pos_idx: np.ndarray) -> np.ndarray:
    tri = v_pos[t_pos_idx].astype(np.float64)
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = np.zeros_like(v_pos, dtype=np.float64)
    for k in range(3):
        np.add.at(n, t_pos_idx[:, k], fn)
    return (n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)).astype(np.float32)


def _obj_text(v_pos, t_pos_idx, v_nrm=None, v_tex=None, t_tex_idx=None, v_rgb=None, matname=None, mtllib=None) -> str:
    """SaverMixin._save_obj's text, line for line."""
    out: list[str] = []
    if matname is not None:
        out += [f"mtllib {mtllib}\n", "g object\n", f"usemtl {matname}\n"]
    for i in range(len(v_pos)):
        line = f"v {v_pos[i][0]} {v_pos[i][1]} {v_pos[i][2]}"
        if v_rgb is not None:
            line += f" {v_rgb[i][0]} {v_rgb[i][1]} {v_rgb[i][2]}"
        out.append(line + "\n")
    if v_nrm is not None:
        out += [f"vn {v[0]} {v[1]} {v[2]}\n" for v in v_nrm]
    if v_tex is not None:
        out += [f"vt {v[0]} {1.0 - v[1]}\n" for v in v_tex]
    for i in range(len(t_pos_idx)):
        line = "f"
        for j in range(3):
            line += f" {t_pos_idx[i][j] + 1}/"
            if v_tex is not None:
                line += f"{t_tex_idx[i][j] + 1}"
            line += "/"
            if v_nrm is not None:
                line += f"{t_pos_idx[i][j] + 1}"
        out.append(line + "\n")
    return "".join(out)


def _save_image(path: Path, rgb: np.ndarray) -> None:
    """cv2.imwrite's defaults: JPEG quality 95."""
    from PIL import Image

    img = Image.fromarray(rgb)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        img.save(path, quality=95)
    else:
        img.save(path)


def write_mesh_export(
    folder: str | Path,
    seed: int = 0,
    fmt: str = "obj-mtl",
    save_uv: bool = True,
    save_texture: bool = True,
    save_normal: bool = False,
    texture_format: str = "jpg",
    texture_size: int = 64,
    save_name: str = "model",
    empty: bool = False,
    segments: tuple[int, int] = (48, 24),
) -> Path:
    """Write what threestudio's mesh-exporter + SaverMixin.save_obj write for these settings; returns
    the OBJ's path."""
    folder = Path(folder)
    if fmt not in FORMATS:
        raise ValueError(f"Unsupported mesh export format: {fmt}")
    if fmt == "obj-mtl" and save_texture:
        assert save_uv, "save_uv must be True when save_texture is True"
    v_pos, t_pos_idx, v_tex, t_tex_idx = ellipsoid(seed, segments)
    if empty:
        t_pos_idx, t_tex_idx = t_pos_idx[:0], t_tex_idx[:0]
    folder.mkdir(parents=True, exist_ok=True)
    filename = folder / f"{save_name}.obj"
    v_nrm = vertex_normals(v_pos, t_pos_idx) if save_normal else None
    if not save_uv:
        v_tex = t_tex_idx = None
    v_rgb = vertex_albedo(v_pos) if fmt == "obj" and save_texture else None
    matname = mtllib = None
    if fmt == "obj-mtl":
        matname, mtllib = "default", f"{save_name}.mtl"
        mtl = f"newmtl {matname}\nKa 0.0 0.0 0.0\n"
        if save_texture:
            mtl += f"map_Kd texture_kd.{texture_format}\n"
            _save_image(folder / f"texture_kd.{texture_format}", quadrant_texture(texture_size))
        else:
            mtl += "Kd 1.0 1.0 1.0\n"
        mtl += "Ks 0.0 0.0 0.0\n"
        (folder / mtllib).write_text(mtl)
    filename.write_text(
        _obj_text(
            v_pos, t_pos_idx, v_nrm=v_nrm, v_tex=v_tex, t_tex_idx=t_tex_idx, v_rgb=v_rgb, matname=matname, mtllib=mtllib
        )
    )
    return filename
