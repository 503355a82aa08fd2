"""Registers a tiny random MVDream model as `tiny-4view` in mvdream.model_zoo (imported by
cpu_launch.py when TINY_MVDREAM is set); `python tiny_mvdream.py` writes its checkpoint."""

import os

import mvdream.model_zoo as mz

HERE = os.path.dirname(os.path.abspath(__file__))
mz.PRETRAINED_MODELS["tiny-4view"] = {
    "config": os.path.join(HERE, "tiny-mvdream.yaml"),
    "repo_id": None,
    "filename": None,
}
_orig = mz.get_config_file
mz.get_config_file = lambda p: p if os.path.isabs(p) else _orig(p)

if __name__ == "__main__":
    import torch
    from mvdream.ldm.util import instantiate_from_config
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    model = instantiate_from_config(OmegaConf.load(os.path.join(HERE, "tiny-mvdream.yaml")).model)
    torch.save(model.state_dict(), os.path.join(HERE, "tiny-mvdream.pt"))
    print("params", sum(p.numel() for p in model.parameters()))
