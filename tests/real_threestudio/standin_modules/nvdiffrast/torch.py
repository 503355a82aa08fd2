"""STAND-IN (import-only) for nvdiffrast.torch: CUDA/GL-only. Any use raises."""


def _no(*a, **k):
    raise RuntimeError("nvdiffrast stand-in: not available on this machine")


class RasterizeCudaContext:
    def __init__(self, *a, **k):
        _no()


class RasterizeGLContext:
    def __init__(self, *a, **k):
        _no()


rasterize = interpolate = texture = antialias = _no
