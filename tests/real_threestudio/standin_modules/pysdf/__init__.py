"""STAND-IN (import-only) for pysdf."""


class SDF:
    def __init__(self, *a, **k):
        raise RuntimeError("pysdf stand-in")
