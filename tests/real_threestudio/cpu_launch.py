"""Run threestudio's own launch.py on CPU, unchanged, from the outside.

usage: python cpu_launch.py THREESTUDIO_ROOT [launch.py args...]

launch.py hard-codes Trainer(accelerator="gpu", devices=-1) and threestudio's get_device() returns
cuda:<rank>. This wrapper (1) swaps get_device's code for `torch.device("cpu")` (every module that
imported it shares the one function object), (2) wraps pytorch_lightning.Trainer so accelerator
becomes "cpu", devices 1, and a "16-mixed" precision becomes "32" (16-bit AMP needs CUDA in PL 2.0),
then executes launch.py with runpy as __main__, in THREESTUDIO_ROOT (launch.py reads ./custom)."""

import os
import runpy
import sys

root = os.path.abspath(sys.argv[1])
os.chdir(root)
sys.path.insert(0, root)
sys.argv = [os.path.join(root, "launch.py")] + sys.argv[2:]

import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("TS_THREADS", "2")))

import pytorch_lightning as pl  # noqa: E402

import threestudio.utils.misc as misc  # noqa: E402  (imports all of threestudio, as launch.py will)


def _cpu():
    return torch.device("cpu")


misc.get_device.__code__ = _cpu.__code__

_Trainer = pl.Trainer


class CPUTrainer(_Trainer):
    def __init__(self, *args, **kwargs):
        kwargs["accelerator"] = "cpu"
        kwargs["devices"] = 1
        if str(kwargs.get("precision", "32")) in ("16-mixed", "16", "bf16-mixed"):
            print(f"[cpu_launch] precision {kwargs['precision']} -> 32 (CPU)")
            kwargs["precision"] = "32"
        super().__init__(*args, **kwargs)


pl.Trainer = CPUTrainer

if os.environ.get("TINY_MVDREAM"):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import tiny_mvdream  # noqa: F401  registers model_name=tiny-4view

print(f"[cpu_launch] running {sys.argv[0]} {' '.join(sys.argv[1:])} on CPU")
runpy.run_path(sys.argv[0], run_name="__main__")
