"""Geometry of the exported surface: normals across UV seams, watertightness, seam welding, and quadric
decimation to a face budget (fast-simplification) that tells where each new vertex lies on the source
surface, so UVs and colours are interpolated there."""

from __future__ import annotations

import numpy as np

from dreamdist.utils.errors import InputError

MIN_FACES = 4


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


def is_watertight(vertices: np.ndarray, faces: np.ndarray) -> bool:
    import trimesh

    merged = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    merged.merge_vertices(merge_tex=True, merge_norm=True)
    return bool(merged.is_watertight)


def weld(vertices: np.ndarray, faces: np.ndarray, rgb: np.ndarray | None):
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
    attempts = [(True, max_faces)] + [(False, max(MIN_FACES, int(max_faces * 0.9**k))) for k in range(6)]
    for preserve_border, target in attempts:
        _, _, collapses = fast_simplification.simplify(
            vertices, faces, target_count=target, return_collapses=True, preserve_border=preserve_border
        )
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


def interpolate(values: np.ndarray, faces: np.ndarray, interp: Interp | None) -> np.ndarray:
    if interp is None:
        return values
    src_face, bary = interp
    return np.einsum("nk,nkc->nc", bary, values[faces[src_face]].astype(np.float64))
