"""The method's core: what a learned prompt distribution is, independent of how it was trained or used.

``distfile`` (the .safetensors file: learned vectors + metadata) -> ``encoder`` (soft prompts through the
frozen CLIP text encoder, placed by a ``templates.Template``) -> ``gaussian`` (one Gaussian in text-feature
space) and ``mixture`` (C of them) -> ``distribution`` (files bound to an encoder: the one sampling path for
2D and 3D). ``seeds`` derives the random streams a user-facing seed names; ``runtime`` loads the base model.
"""
