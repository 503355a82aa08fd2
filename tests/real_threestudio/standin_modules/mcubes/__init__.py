"""STAND-IN (import-only) for PyMCubes (mesh export only)."""


def marching_cubes(*a, **k):
    raise RuntimeError("mcubes stand-in")
