"""OmegaConf resolvers the dreamdist configs use; no threestudio import, so tests can load it alone."""

from __future__ import annotations

from dreamdist.utils.tags import distribution_tag

TAG_RESOLVER = "dreamdist_tag"  # "cats-seed3" in the configs' tag: the rule batch uses to find trials


def register_resolvers() -> None:
    import warnings

    from omegaconf import OmegaConf

    with warnings.catch_warnings():  # omegaconf 2.4 renames it; threestudio pins 2.3
        warnings.simplefilter("ignore")
        OmegaConf.register_new_resolver(TAG_RESOLVER, distribution_tag, replace=True)
