"""STAND-IN (import-only) for libigl."""


def _no(*a, **k):
    raise RuntimeError("igl stand-in")


fast_winding_number_for_meshes = point_mesh_squared_distance = read_obj = _no
