"""STAND-IN (import-only) for xatlas (mesh export only)."""


def __getattr__(name):
    raise RuntimeError("xatlas stand-in")
