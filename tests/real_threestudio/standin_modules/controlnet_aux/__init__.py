"""STAND-IN (import-only) for controlnet_aux."""


class CannyDetector:
    def __init__(self, *a, **k):
        raise RuntimeError("controlnet_aux stand-in")


class NormalBaeDetector(CannyDetector):
    @classmethod
    def from_pretrained(cls, *a, **k):
        raise RuntimeError("controlnet_aux stand-in")
