"""STAND-IN (import-only) for wandb (loggers.wandb.enable=false in the configs)."""

run = None


class Image:
    def __init__(self, *a, **k):
        raise RuntimeError("wandb stand-in")


def init(*a, **k):
    raise RuntimeError("wandb stand-in")


def log(*a, **k):
    pass
