"""STAND-IN (import-only) for envlight."""


class EnvLight:
    def __init__(self, *a, **k):
        raise RuntimeError("envlight stand-in")
