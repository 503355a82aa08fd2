"""Axes and origins: threestudio's frame (Z up, front +X, origin at the scene centre) to glTF's (+Y up,
front +Z) and an origin a game engine can drop on the floor."""

from __future__ import annotations

import numpy as np

from dreamdist.utils.errors import InputError

AXES = {"+X": (1, 0, 0), "-X": (-1, 0, 0), "+Y": (0, 1, 0), "-Y": (0, -1, 0), "+Z": (0, 0, 1), "-Z": (0, 0, -1)}


ORIGINS = ("bottom-center", "center", "keep")
# threestudio: a camera at azimuth 0 sits on +X, and prompt processors call that view "front"
THREESTUDIO_UP, THREESTUDIO_FRONT = "+Z", "+X"


def parse_axis(value: str, what: str = "--up") -> np.ndarray:
    key = value.strip().upper()
    if key in ("X", "Y", "Z"):
        key = "+" + key
    if key not in AXES:
        raise InputError(f"{what} {value!r} is not an axis; use one of {', '.join(AXES)}")
    return np.array(AXES[key], dtype=np.float64)


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


def origin_shift(vertices: np.ndarray, origin: str) -> np.ndarray:
    lo, hi = vertices.min(0), vertices.max(0)
    centre = (lo + hi) / 2
    if origin == "bottom-center":
        return -np.array([centre[0], lo[1], centre[2]])
    if origin == "center":
        return -centre
    return np.zeros(3)
