"""configs/dreamdist-mvdream.yaml and configs/dreamdist-sd.yaml: they parse with OmegaConf as
threestudio's launch.py does (its resolvers + ours), name only `*_type`s that we or threestudio /
threestudio-mvdream register, keep the stock settings, and name the distribution and seed in the tag.

With DREAMDIST_THREESTUDIO_ROOT (a threestudio checkout) the type names are also checked against
its source, and with DREAMDIST_THREESTUDIO_MVDREAM_ROOT (a threestudio-mvdream checkout; default
ROOT/custom/threestudio-mvdream) against threestudio-mvdream's.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from pathlib import Path

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"mvdream": REPO / "configs" / "dreamdist-mvdream.yaml", "sd": REPO / "configs" / "dreamdist-sd.yaml"}

OURS = {"dreamdist-prompt-processor"}
# Names registered with @threestudio.register in threestudio v0.2.3 (file where, for reference).
THREESTUDIO = {
    "random-camera-datamodule",  # threestudio/data/uncond.py
    "dreamfusion-system",  # threestudio/systems/dreamfusion.py
    "implicit-volume",  # threestudio/models/geometry/implicit_volume.py
    "diffuse-with-point-light-material",  # threestudio/models/materials/diffuse_with_point_light_material.py
    "no-material",  # threestudio/models/materials/no_material.py
    "neural-environment-map-background",  # threestudio/models/background/neural_environment_map_background.py
    "nerf-volume-renderer",  # threestudio/models/renderers/nerf_volume_renderer.py
    "stable-diffusion-guidance",  # threestudio/models/guidance/stable_diffusion_guidance.py
}
# ...and by threestudio-mvdream (DSaurus/threestudio-mvdream).
MVDREAM = {
    "mvdream-random-multiview-camera-datamodule",  # data/uncond_multiview.py
    "mvdream-system",  # system/mvdream.py
    "mvdream-neural-environment-map-background",  # background/neural_environment_map_background.py
    "mvdream-multiview-diffusion-guidance",  # guidance/mvdream_guidance.py
}

# threestudio/utils/config.py registers these before any config is parsed.
THREESTUDIO_RESOLVERS = {
    "calc_exp_lr_decay_rate": lambda factor, n: factor ** (1.0 / n),
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "idiv": lambda a, b: a // b,
    "basename": lambda p: os.path.basename(p),
    "rmspace": lambda s, sub: s.replace(" ", sub),
    "tuple2": lambda s: [float(s), float(s)],
    "gt0": lambda s: s > 0,
    "not": lambda s: not s,
}


@pytest.fixture(scope="module", autouse=True)
def resolvers():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fn in THREESTUDIO_RESOLVERS.items():
            OmegaConf.register_new_resolver(name, fn, replace=True)
    # ours, registered by the extension's __init__ (loaded alone here: it needs no threestudio)
    spec = importlib.util.spec_from_file_location(
        "dreamdist_ts_resolvers", REPO / "custom" / "threestudio-dreamdist" / "resolvers.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.register_resolvers()
    yield
    for name in [*THREESTUDIO_RESOLVERS, module.TAG_RESOLVER]:
        if OmegaConf.has_resolver(name):
            OmegaConf.clear_resolver(name)


def load(kind: str, *cli: str) -> DictConfig:
    """As threestudio's load_config: merge the YAML with command-line overrides, then resolve."""
    cfg = OmegaConf.merge(OmegaConf.load(CONFIGS[kind]), OmegaConf.from_cli(list(cli)))
    OmegaConf.resolve(cfg)
    return cfg


# The config keys whose values are names looked up with threestudio.find (BaseLift3DSystem's and
# launch.py's); other *_type keys (geometry.normal_type...) are plain options.
REGISTRY_KEYS = {
    "data_type",
    "system_type",
    "geometry_type",
    "material_type",
    "background_type",
    "renderer_type",
    "guidance_type",
    "prompt_processor_type",
    "exporter_type",
}


def types_named(node, path="") -> dict[str, str]:
    out = {}
    if isinstance(node, DictConfig):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if str(key) in REGISTRY_KEYS and isinstance(value, str):
                out[where] = value
            out.update(types_named(value, where))
    elif isinstance(node, ListConfig):
        for i, value in enumerate(node):
            out.update(types_named(value, f"{path}[{i}]"))
    return out


@pytest.mark.parametrize("kind", ["mvdream", "sd"])
def test_config_parses_and_names_the_distribution_and_seed(kind):
    cfg = load(kind, "system.prompt_processor.distribution=/data/my cats.safetensors", "seed=7")
    pp = cfg.system.prompt_processor
    assert pp.sample_seed == 7 and cfg.seed == 7
    assert cfg.tag == "my_cats-seed7"
    assert cfg.system.prompt_processor_type == "dreamdist-prompt-processor"
    assert pp.prompt == "{}" and pp.std_scale == 1.0 and pp.mix_rule == "paper"
    assert pp.pretrained_model_name_or_path == "stabilityai/stable-diffusion-2-1-base"
    mixed = load(
        kind,
        "system.prompt_processor.distribution=[a.safetensors,b.safetensors]",
        "system.prompt_processor.distribution_weights=[0.3,0.7]",
        "seed=2",
    )
    assert mixed.tag == "a+b-seed2" and list(mixed.system.prompt_processor.distribution_weights) == [0.3, 0.7]
    trained = load(kind, "system.prompt_processor.reference_images=refs/photos", "seed=0")
    assert trained.tag == "ref-photos-seed0"


def test_guidance_width_check_follows_the_guidance_model():
    assert load("mvdream").system.prompt_processor.guidance_model_name_or_path == "sd-v2.1-base-4view"
    sd = load("sd", "system.guidance.pretrained_model_name_or_path=/models/sd21b")
    assert sd.system.prompt_processor.guidance_model_name_or_path == "/models/sd21b"


@pytest.mark.parametrize("kind", ["mvdream", "sd"])
def test_every_type_is_ours_or_registered_upstream(kind):
    named = types_named(load(kind))
    allowed = OURS | THREESTUDIO | (MVDREAM if kind == "mvdream" else set())
    assert named, "no *_type found"
    unknown = {where: name for where, name in named.items() if name not in allowed}
    assert not unknown, f"unregistered types: {unknown}"
    assert named["system.prompt_processor_type"] == "dreamdist-prompt-processor"


def test_mvdream_config_keeps_threestudio_mvdreams_stock_settings():
    cfg = load("mvdream")
    assert cfg.system_type == "mvdream-system" and cfg.data_type == "mvdream-random-multiview-camera-datamodule"
    assert cfg.system.guidance_type == "mvdream-multiview-diffusion-guidance"
    g = cfg.system.guidance
    assert g.model_name == "sd-v2.1-base-4view" and g.guidance_scale == 50.0
    assert g.recon_loss and g.recon_std_rescale == 0.5
    assert "view_dependent_prompting" not in g  # MVDream's default: off
    assert cfg.data.n_view == 4 and list(cfg.data.width) == [64, 256] and list(cfg.data.resolution_milestones) == [5000]
    assert cfg.trainer.max_steps == 10000 and cfg.trainer.precision == "16-mixed"
    assert cfg.system.prompt_processor.front_threshold == 30.0 and cfg.system.prompt_processor.negative_prompt


def test_sd_config_is_dreamfusion_style_sds_on_sd21_base():
    cfg = load("sd")
    assert cfg.system_type == "dreamfusion-system" and cfg.system.guidance_type == "stable-diffusion-guidance"
    g = cfg.system.guidance
    assert g.pretrained_model_name_or_path == "stabilityai/stable-diffusion-2-1-base"
    assert g.guidance_scale == 100.0 and g.weighting_strategy == "sds"
    assert cfg.data_type == "random-camera-datamodule" and cfg.data.batch_size == 1
    assert cfg.checkpoint.every_n_train_steps == cfg.trainer.max_steps == 10000


# --------------------------------------------------------------------------- against real sources

REGISTER = re.compile(r"""@(?:threestudio\.)?register\(\s*["']([^"']+)["']\s*\)""")


def registered_in(root: Path) -> set[str]:
    names = set()
    for path in root.rglob("*.py"):
        names.update(REGISTER.findall(path.read_text(errors="ignore")))
    return names


def config_fields(source: Path, register_name: str) -> set[str]:
    """Field names of the nested ``Config`` dataclass of the class registered as ``register_name``."""
    tree = ast.parse(source.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(register_name in ast.unparse(d) for d in node.decorator_list):
            for inner in node.body:
                if isinstance(inner, ast.ClassDef) and inner.name == "Config":
                    return {s.target.id for s in inner.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError(f"{register_name} not found in {source}")


def test_types_exist_in_real_threestudio():
    root = os.environ.get("DREAMDIST_THREESTUDIO_ROOT")
    if not root:
        pytest.skip("DREAMDIST_THREESTUDIO_ROOT is not set: type names checked against the built-in list only")
    names = registered_in(Path(root) / "threestudio")
    missing = sorted(THREESTUDIO - names)
    assert not missing, f"not registered by {root}: {missing}"
    used = set(types_named(load("sd")).values()) - OURS
    assert used <= names


def test_types_and_guidance_keys_exist_in_real_threestudio_mvdream():
    root = os.environ.get("DREAMDIST_THREESTUDIO_MVDREAM_ROOT")
    if not root and os.environ.get("DREAMDIST_THREESTUDIO_ROOT"):
        root = str(Path(os.environ["DREAMDIST_THREESTUDIO_ROOT"]) / "custom" / "threestudio-mvdream")
    if not root or not Path(root).is_dir():
        pytest.skip(
            "no threestudio-mvdream checkout (DREAMDIST_THREESTUDIO_MVDREAM_ROOT): checked against the "
            "built-in list only"
        )
    names = registered_in(Path(root))
    assert MVDREAM <= names, sorted(MVDREAM - names)
    fields = config_fields(Path(root) / "guidance" / "mvdream_guidance.py", "mvdream-multiview-diffusion-guidance")
    assert set(load("mvdream").system.guidance) <= fields
