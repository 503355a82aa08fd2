"""STAND-IN for threestudio.utils.ops (the decay functions perp-neg uses)."""

import torch


def shifted_expotional_decay(a, b, c, r):
    return a * torch.exp(-b * r) + c


def shifted_cosine_decay(a, b, c, r):
    return a * torch.cos(b * r + c) + a
