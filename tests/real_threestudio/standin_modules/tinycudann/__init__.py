"""STAND-IN (import-only) for tiny-cuda-nn: CUDA-only. Any use raises."""

import torch

_MSG = "tinycudann stand-in: CUDA-only module, use otype ProgressiveBandFrequency / VanillaMLP on CPU"


class _Unavailable(torch.nn.Module):
    def __init__(self, *a, **k):
        raise RuntimeError(_MSG)


class Encoding(_Unavailable):
    pass


class Network(_Unavailable):
    pass


class NetworkWithInputEncoding(_Unavailable):
    pass


def free_temporary_memory():
    pass
