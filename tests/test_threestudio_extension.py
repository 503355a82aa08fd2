"""The threestudio extension's glue (custom/threestudio-dreamdist).

Every check runs against tests/standin_threestudio (a stand-in of the threestudio API the extension
touches, written from threestudio v0.2.3's real signatures), and again against a real threestudio
source folder when DREAMDIST_THREESTUDIO_ROOT points to one (skipped otherwise, reason printed with
-ra). The real run also takes one SDS step with threestudio's own `stable-diffusion-guidance` on the
tiny random SD-2 model, consuming our embeddings.

Real-threestudio run on a CPU machine (see custom/threestudio-dreamdist/README.md): threestudio's
GPU-only or absent module-level imports must be importable (stand-in modules on PYTHONPATH);
`get_device()` (hard-coded to CUDA) is patched to CPU here when CUDA is absent.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import subprocess
import sys
import types
import weakref
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
STANDIN = Path(__file__).resolve().parent / "standin_threestudio"
EXTENSION = REPO / "custom" / "threestudio-dreamdist"
EXT_NAME = "threestudio-dreamdist"
REAL_ROOT = os.environ.get("DREAMDIST_THREESTUDIO_ROOT")
THREESTUDIO_RESOLVERS = (
    "calc_exp_lr_decay_rate",
    "add",
    "sub",
    "mul",
    "div",
    "idiv",
    "basename",
    "rmspace",
    "tuple2",
    "gt0",
    "cmaxgt0",
    "not",
    "cmaxgt0orcmaxgt0",
)
VIEW_TEMPLATES = ["{}, side view", "{}, front view", "{}, back view", "{}, overhead view"]


def _purge_threestudio() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in ("threestudio", EXT_NAME, "extern", "launch"):
            del sys.modules[name]
    from omegaconf import OmegaConf

    for name in THREESTUDIO_RESOLVERS:
        if OmegaConf.has_resolver(name):
            OmegaConf.clear_resolver(name)


def _load_extension(root: Path, real: bool):
    """Import the extension the way threestudio's launch.py does (custom/<name>/__init__.py)."""
    if real:
        spec = importlib.util.spec_from_file_location("launch", root / "launch.py")
        launch = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(launch)
        assert launch.load_custom_module(str(EXTENSION)), "launch.py could not import the extension"
        return sys.modules[EXT_NAME]
    spec = importlib.util.spec_from_file_location(EXT_NAME, EXTENSION / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[EXT_NAME] = module
    spec.loader.exec_module(module)
    return module


def test_real_threestudio_checks_enabled():
    """Says, once, whether the checks below also run against a real threestudio."""
    if not REAL_ROOT:
        pytest.skip(
            "real threestudio checks skipped: DREAMDIST_THREESTUDIO_ROOT is not set (point it to a "
            "threestudio checkout whose imports work here; see custom/threestudio-dreamdist/README.md)"
        )
    assert (Path(REAL_ROOT) / "threestudio" / "__init__.py").is_file(), f"{REAL_ROOT} is not a threestudio checkout"


@pytest.fixture(scope="module", params=["standin", "real"] if REAL_ROOT else ["standin"])
def ts(request):
    real = request.param == "real"
    root = Path(REAL_ROOT) if real else STANDIN
    saved_path = list(sys.path)
    _purge_threestudio()
    sys.path.insert(0, str(root))
    try:
        import threestudio
    except ImportError as exc:
        sys.path[:] = saved_path
        _purge_threestudio()
        pytest.skip(
            f"cannot import threestudio from {root}: {exc} (put stand-ins for its GPU-only imports on PYTHONPATH)"
        )
    assert getattr(threestudio, "__standin__", False) is (not real)
    import threestudio.utils.base as ts_base
    import threestudio.utils.misc as ts_misc

    if not torch.cuda.is_available():  # threestudio's get_device() is hard-coded to CUDA
        ts_misc.get_device = ts_base.get_device = lambda: torch.device("cpu")
    ext = _load_extension(root, real)
    from threestudio.models.prompt_processors.base import PromptProcessor, PromptProcessorOutput
    from threestudio.systems.base import BaseSystem
    from threestudio.utils.config import parse_structured

    yield types.SimpleNamespace(
        kind=request.param,
        threestudio=threestudio,
        ext=ext,
        pp=ext.prompt_processor,
        PromptProcessor=PromptProcessor,
        PromptProcessorOutput=PromptProcessorOutput,
        BaseSystem=BaseSystem,
        parse_structured=parse_structured,
        root=root,
    )
    sys.path[:] = saved_path
    _purge_threestudio()


@pytest.fixture(autouse=True)
def _fresh_save_dir_note(request):
    if "ts" in request.fixturenames:
        request.getfixturevalue("ts").pp._SAVE_DIR = None
    yield
    if "ts" in request.fixturenames:
        request.getfixturevalue("ts").pp._SAVE_DIR = None


@pytest.fixture
def make(ts, tiny_model_dir, tiny_distribution, tmp_path):
    """Build our processor from a config dict, as a system does: threestudio.find(type)(cfg)."""

    def build(**overrides):
        cfg = {
            "pretrained_model_name_or_path": str(tiny_model_dir),
            "distribution": str(tiny_distribution),
            "sample_seed": 7,
            "negative_prompt": "blurry",
            "save_dir": str(tmp_path / "save"),
        }
        cfg.update(overrides)
        return ts.threestudio.find("dreamdist-prompt-processor")(cfg)

    return build


@pytest.fixture(scope="module")
def wide_guidance(tmp_path_factory):
    """A guidance model folder whose UNet cross-attends to 48-wide text features (the tiny one: 32)."""
    path = tmp_path_factory.mktemp("wide")
    (path / "unet").mkdir()
    config = {"_class_name": "UNet2DConditionModel", "cross_attention_dim": 48}
    (path / "unet" / "config.json").write_text(json.dumps(config))
    return path


def _refusal(ts, fn):
    with pytest.raises(ts.pp.DreamdistRefusal) as err:
        fn()
    message = str(err.value)
    assert "\n" not in message and message
    assert err.value.code == f"[dreamdist-prompt-processor] {message}"
    from dreamdist.utils.errors import DreamdistError

    assert isinstance(err.value, DreamdistError) and isinstance(err.value, SystemExit)
    return message


# ---------------------------------------------------------------------------------------------
# registration and config
# ---------------------------------------------------------------------------------------------


def test_registered_as_a_prompt_processor(ts):
    cls = ts.threestudio.find("dreamdist-prompt-processor")
    assert issubclass(cls, ts.PromptProcessor)
    assert cls is ts.pp.DreamdistPromptProcessor
    assert ts.threestudio.__version__ >= "0.2.0"
    with pytest.raises(ValueError, match="already exists"):
        ts.threestudio.register("dreamdist-prompt-processor")(object)


def test_config_fields_and_defaults(ts):
    cls = ts.pp.DreamdistPromptProcessor
    cfg = ts.parse_structured(
        cls.Config,
        {"distribution": ["a.safetensors", "b.safetensors"], "distribution_weights": [0.3, 0.7], "sample_seed": 3},
    )
    assert cfg.prompt == "{}" and cfg.std_scale == 1.0 and cfg.mix_rule == "paper"
    assert list(cfg.distribution) == ["a.safetensors", "b.safetensors"] and list(cfg.distribution_weights) == [0.3, 0.7]
    assert cfg.sample_seed == 3 and cfg.reference_images is None
    assert (cfg.train_steps, cfg.num_prompts, cfg.num_tokens) == (1500, 32, 8)
    # the base class's settings are all still there
    base = ts.parse_structured(ts.PromptProcessor.Config, {})
    for name in (
        "negative_prompt",
        "front_threshold",
        "back_threshold",
        "overhead_threshold",
        "use_perp_neg",
        "perp_neg_f_sb",
        "view_dependent_prompt_front",
        "prompt_side",
    ):
        assert name in cfg and name in base
    assert ts.parse_structured(cls.Config, {"distribution": "one.safetensors"}).distribution == "one.safetensors"
    assert list(ts.parse_structured(cls.Config, {"std_scale": [1, 0.5]}).std_scale) == [1, 0.5]  # or a number


def test_training_settings_are_train_config_fields_with_its_defaults(ts):
    """The processor's training settings keep their names; TrainConfig gives their defaults, and the
    extension's README lists each of them."""
    import dataclasses

    from dreamdist.train import TrainConfig

    cfg = ts.parse_structured(ts.pp.DreamdistPromptProcessor.Config, {})
    defaults = TrainConfig()
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    readme = (EXTENSION / "README.md").read_text()
    for key, field in ts.pp.TRAIN_SETTINGS.items():
        assert field in fields and key in cfg, key
        assert getattr(cfg, key) == getattr(defaults, field), key
        assert f"`{key}`" in readme, key


# ---------------------------------------------------------------------------------------------
# configure() flow and the embeddings handed to guidance
# ---------------------------------------------------------------------------------------------


def test_configure_builds_view_dependent_embeddings_from_one_draw(ts, make, tiny_encoder, tiny_distribution):
    proc = make(sample_seed=7, std_scale=1.0)
    d = tiny_encoder.hidden_size
    assert proc.prompt == "{}" and proc.prompts_vd == VIEW_TEMPLATES
    assert [x.name for x in proc.directions] == ["side", "front", "back", "overhead"]
    assert proc.text_embeddings.shape == (1, 77, d) and proc.uncond_text_embeddings.shape == (1, 77, d)
    assert proc.text_embeddings_vd.shape == (4, 77, d) and proc.uncond_text_embeddings_vd.shape == (4, 77, d)
    assert proc.text_embeddings.device.type == torch.device(proc.device).type

    from dreamdist.core.distribution import PromptDistribution

    dist = PromptDistribution.from_files([tiny_distribution], tiny_encoder)
    expected = dist.sample_views(["{}", *VIEW_TEMPLATES], seed=7, gamma=1.0)
    assert torch.allclose(proc.text_embeddings[0].cpu(), expected[0], atol=1e-5)
    assert torch.allclose(proc.text_embeddings_vd.cpu(), expected[1:], atol=1e-5)
    negative = tiny_encoder.encode_text(["blurry"])[0]
    assert torch.allclose(proc.uncond_text_embeddings[0].cpu(), negative, atol=1e-5)
    assert torch.allclose(proc.uncond_text_embeddings_vd.cpu(), negative.expand(4, -1, -1), atol=1e-5)


def test_a_mixture_gives_each_seed_one_component_for_every_view(ts, make, tiny_encoder, tiny_mixture, tmp_path):
    from dreamdist.core.distribution import PromptDistribution
    from dreamdist.core.gaussian import standard_normal

    dist = PromptDistribution.from_files([tiny_mixture], tiny_encoder)
    picks = {seed: dist.mixture().pick(seed) for seed in range(8)}
    assert set(picks.values()) == {0, 1}
    for seed in (min(picks, key=lambda s: (picks[s], s)), max(picks, key=lambda s: (picks[s], -s))):
        proc = make(distribution=str(tiny_mixture), sample_seed=seed, save_dir=str(tmp_path / f"save{seed}"))
        for template, got in zip(["{}", *VIEW_TEMPLATES], [proc.text_embeddings[0], *proc.text_embeddings_vd]):
            part = dist.mixture(template).parts[picks[seed]]
            expected = part.apply(standard_normal(part.shape, seed))
            assert torch.allclose(got.cpu(), expected, atol=1e-5), (seed, template)


def test_get_text_embeddings_cond_first_for_random_views(ts, make):
    proc = make()
    out = proc()
    assert isinstance(out, ts.PromptProcessorOutput)
    g = torch.Generator().manual_seed(0)
    b = 16
    elevation = torch.rand(b, generator=g) * 100 - 10
    azimuth = torch.rand(b, generator=g) * 360 - 180
    distances = torch.rand(b, generator=g) + 1.5
    emb = out.get_text_embeddings(elevation, azimuth, distances, view_dependent_prompting=True)
    assert emb.shape == (2 * b, 77, proc.text_embeddings.shape[-1])
    # the direction of each view, by threestudio's rules (later directions win)
    azi = (azimuth + 180) % 360 - 180
    idx = torch.zeros(b, dtype=torch.long)
    idx[(azi > -45) & (azi < 45)] = 1
    idx[(azi > 135) | (azi < -135)] = 2
    idx[elevation > 60] = 3
    assert len(set(idx.tolist())) >= 3
    assert torch.equal(emb[:b], proc.text_embeddings_vd[idx])
    assert torch.equal(emb[b:], proc.uncond_text_embeddings_vd[idx])
    flat = out.get_text_embeddings(elevation, azimuth, distances, view_dependent_prompting=False)
    assert torch.equal(flat[:b], proc.text_embeddings.expand(b, -1, -1))
    assert torch.equal(flat[b:], proc.uncond_text_embeddings.expand(b, -1, -1))


def test_perp_neg_and_base_class_view_settings_are_kept(ts, make):
    proc = make(
        use_perp_neg=True, view_dependent_prompt_front=True, prompt_side="{} seen from the side", front_threshold=30.0
    )
    assert proc.prompts_vd == [
        "{} seen from the side",
        "front view of {}",
        "backside view of {}",
        "overhead view of {}",
    ]
    out = proc()
    assert out.use_perp_neg
    elevation, azimuth = torch.tensor([10.0, 20.0, 70.0]), torch.tensor([10.0, 120.0, 0.0])
    emb, weights = out.get_text_embeddings_perp_neg(elevation, azimuth, torch.ones(3))
    assert emb.shape == (4 * 3, 77, proc.text_embeddings.shape[-1]) and weights.shape == (3, 2)
    assert torch.isfinite(emb).all()


def test_same_seed_same_tensors_other_seed_differs(ts, make, tmp_path):
    a = make(sample_seed=5, save_dir=str(tmp_path / "a"))
    b = make(sample_seed=5, save_dir=str(tmp_path / "b"))
    c = make(sample_seed=6, save_dir=str(tmp_path / "c"))
    assert torch.equal(a.text_embeddings_vd, b.text_embeddings_vd) and torch.equal(a.text_embeddings, b.text_embeddings)
    assert not torch.allclose(a.text_embeddings_vd, c.text_embeddings_vd)


def test_gamma_zero_gives_each_directions_mean(ts, make, tiny_encoder, tiny_distribution):
    proc = make(std_scale=0.0, prompt="a photo of {} made of gold")
    from dreamdist.core.distribution import PromptDistribution

    dist = PromptDistribution.from_files([tiny_distribution], tiny_encoder)
    assert proc.prompts_vd[0] == "a photo of {} made of gold, side view"
    for feats, template in zip(proc.text_embeddings_vd, proc.prompts_vd):
        assert torch.allclose(feats.cpu(), dist.gaussian(template).mu, atol=1e-5)


def test_mixing_two_distributions(ts, make, tiny_distribution, tiny_distribution_b, tmp_path):
    both = [str(tiny_distribution), str(tiny_distribution_b)]
    single = make(save_dir=str(tmp_path / "single"))
    only_a = make(distribution=both, distribution_weights=[1.0, 0.0], save_dir=str(tmp_path / "only_a"))
    assert torch.allclose(only_a.text_embeddings_vd, single.text_embeddings_vd, atol=1e-5)
    paper = make(distribution=both, distribution_weights=[0.5, 0.5], save_dir=str(tmp_path / "paper"))
    ref = make(distribution=both, distribution_weights=[0.5, 0.5], mix_rule="reference", save_dir=str(tmp_path / "ref"))
    assert not torch.allclose(paper.text_embeddings_vd, ref.text_embeddings_vd)
    assert paper.conditioning.spec.mix_rule == "paper" and len(paper.conditioning.spec.file_hashes) == 2


def test_std_scale_number_is_gamma_list_is_per_file_before_the_mix(
    ts, make, tiny_encoder, tiny_distribution, tiny_distribution_b, tmp_path, monkeypatch
):
    from dreamdist.core.distribution import PromptDistribution

    both = [str(tiny_distribution), str(tiny_distribution_b)]
    mix = dict(distribution=both, distribution_weights=[0.5, 0.5], mix_rule="reference", sample_seed=3)
    listed = make(std_scale=[1.0, 0.5], save_dir=str(tmp_path / "list"), **mix)
    dist = PromptDistribution.from_files(both, tiny_encoder, [0.5, 0.5], "reference", std_scale=[1.0, 0.5])
    expected = dist.sample_views(listed.prompts_vd, seed=3, gamma=1.0)
    assert torch.allclose(listed.text_embeddings_vd.cpu(), expected, atol=1e-5)
    spec = listed.conditioning.spec
    assert spec.gamma == 1.0 and spec.std_scales == (1.0, 0.5)
    # a number keeps its meaning: gamma after the mix, no per-file scales in the spec
    number = make(std_scale=0.5, save_dir=str(tmp_path / "number"), **mix)
    assert number.conditioning.spec.gamma == 0.5 and number.conditioning.spec.std_scales == ()
    unscaled = PromptDistribution.from_files(both, tiny_encoder, [0.5, 0.5], "reference")
    assert torch.allclose(number.text_embeddings_vd.cpu(), unscaled.sample_views(number.prompts_vd, 3, 0.5), atol=1e-5)
    assert not torch.allclose(number.text_embeddings_vd, listed.text_embeddings_vd)
    # the per-file scales name the sample: a resume reuses it, other scales are refused
    _forbid_encoder(monkeypatch)
    again = make(std_scale=[1.0, 0.5], save_dir=str(tmp_path / "list"), **mix)
    assert torch.equal(again.text_embeddings_vd, listed.text_embeddings_vd)
    message = _refusal(ts, lambda: make(std_scale=[0.5, 1.0], save_dir=str(tmp_path / "list"), **mix))
    assert "std_scales (1.0, 0.5) != (0.5, 1.0)" in message or "std_scales (0.5, 1.0) != (1.0, 0.5)" in message


def test_text_encoder_is_released_after_configure(ts, make, monkeypatch):
    from dreamdist.core.encoder import SoftPromptEncoder

    refs = []
    original = SoftPromptEncoder.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        enc = original(cls, *args, **kwargs)
        refs.append(weakref.ref(enc.text_encoder))
        return enc

    monkeypatch.setattr(SoftPromptEncoder, "from_pretrained", classmethod(spy))
    proc = make()
    gc.collect()
    assert len(refs) == 1 and refs[0]() is None
    assert not any(isinstance(v, torch.nn.Module) for v in vars(proc).values())


def test_no_spawned_process_and_no_text_keyed_cache(ts, make, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import torch.multiprocessing as mp

    monkeypatch.setattr(mp, "get_context", lambda *a, **k: pytest.fail("a process was spawned"))
    make()
    assert not (tmp_path / ".threestudio_cache").exists()


# ---------------------------------------------------------------------------------------------
# the sampled conditioning in the trial's save dir; resumed runs
# ---------------------------------------------------------------------------------------------


def _forbid_encoder(monkeypatch):
    from dreamdist.core.encoder import SoftPromptEncoder

    monkeypatch.setattr(
        SoftPromptEncoder,
        "from_pretrained",
        classmethod(lambda *a, **k: pytest.fail("resumed run loaded the text encoder")),
    )


def test_conditioning_saved_and_resumed_run_reproduces_it(ts, make, tmp_path, tiny_distribution, monkeypatch):
    from dreamdist.conditioning3d.views import CONDITIONING_FILE, ViewConditioning
    from dreamdist.core.distfile import file_sha256

    save = tmp_path / "trial" / "save"
    first = make(sample_seed=9, std_scale=0.8, prompt="a photo of {}", save_dir=str(save))
    saved = ViewConditioning.load(save / CONDITIONING_FILE)
    spec = saved.spec
    assert (spec.seed, spec.gamma, spec.template) == (9, 0.8, "a photo of {}")
    assert spec.file_hashes == (file_sha256(tiny_distribution),)
    assert spec.view_names == ("side", "front", "back", "overhead")
    assert torch.equal(saved.text_vd, first.text_embeddings_vd.cpu())
    # --test / --export / --train with resume=...: same trial dir, same settings -> same tensors,
    # taken from the save dir without loading the text encoder
    _forbid_encoder(monkeypatch)
    again = make(sample_seed=9, std_scale=0.8, prompt="a photo of {}", save_dir=str(save))
    for name in ("text_embeddings", "text_embeddings_vd", "uncond_text_embeddings", "uncond_text_embeddings_vd"):
        assert torch.equal(getattr(again, name), getattr(first, name))
    assert again.conditioning_path == save / CONDITIONING_FILE


def test_resume_with_other_settings_is_refused(ts, make, tmp_path):
    save = tmp_path / "save"
    make(sample_seed=1, save_dir=str(save))
    message = _refusal(ts, lambda: make(sample_seed=2, save_dir=str(save)))
    assert "seed 2 != 1" in message or "seed 1 != 2" in message
    assert "new trial" in message


def test_save_dir_from_launch_for_both_system_orders(ts, make, tmp_path):
    """launch.py calls system.set_save_dir(trial/save) after building the system: mvdream-system
    built its processor before (in configure), dreamfusion-system builds it after (on_fit_start)."""
    from dreamdist.conditioning3d.views import CONDITIONING_FILE, ViewConditioning

    save = tmp_path / "trial" / "save"
    # mvdream order: processor first, then set_save_dir -> the processor saves its conditioning
    early = make(save_dir=None)
    out = early()  # the system keeps this output (mvdream-system: self.prompt_utils)
    system = types.SimpleNamespace(prompt_processor=early, _save_dir=None)
    ts.BaseSystem.set_save_dir(system, str(save))
    assert system._save_dir == str(save)
    assert (save / CONDITIONING_FILE).is_file()
    # dreamfusion order: the processor is built after set_save_dir and finds the same conditioning
    late = make(save_dir=None)
    assert late.conditioning_path == save / CONDITIONING_FILE
    assert torch.equal(late.text_embeddings_vd, early.text_embeddings_vd)

    # a resumed mvdream run: the embeddings recomputed in configure are replaced, in place, by the
    # saved ones (bit for bit), also inside the output the system already holds
    saved = ViewConditioning.load(save / CONDITIONING_FILE)
    bumped = ViewConditioning(saved.spec, saved.text + 1, saved.text_vd + 1, saved.uncond, saved.uncond_vd)
    bumped.save(save / CONDITIONING_FILE)
    ts.pp._SAVE_DIR = None
    resumed = make(save_dir=None)
    held = resumed()
    ts.BaseSystem.set_save_dir(types.SimpleNamespace(prompt_processor=resumed, _save_dir=None), str(save))
    assert torch.equal(held.text_embeddings_vd.cpu(), bumped.text_vd)
    assert torch.equal(held.text_embeddings.cpu(), bumped.text[None])
    assert torch.equal(out.text_embeddings_vd, early.text_embeddings_vd)  # the first run untouched


# ---------------------------------------------------------------------------------------------
# refusals: one clear line each
# ---------------------------------------------------------------------------------------------


def test_refusal_in_a_launch_like_process_is_one_line_and_exit_1(tmp_path, tiny_model_dir):
    """What a user sees from launch.py: the message alone on stderr, no traceback, status 1."""
    code = f"""
import importlib.util, sys
sys.path.insert(0, {str(STANDIN)!r})
import threestudio
spec = importlib.util.spec_from_file_location({EXT_NAME!r}, {str(EXTENSION / "__init__.py")!r})
module = importlib.util.module_from_spec(spec); sys.modules[{EXT_NAME!r}] = module; spec.loader.exec_module(module)
threestudio.find("dreamdist-prompt-processor")({{"pretrained_model_name_or_path": {str(tiny_model_dir)!r},
                                               "distribution": {str(tmp_path / "missing.safetensors")!r}}})
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 1
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == [f"[dreamdist-prompt-processor] {tmp_path / 'missing.safetensors'}: no such distribution file"]


def test_refuses_missing_file(ts, make, tmp_path):
    message = _refusal(ts, lambda: make(distribution=str(tmp_path / "nope.safetensors")))
    assert "nope.safetensors" in message and "no such distribution file" in message


def test_refuses_template_without_placeholder(ts, make):
    message = _refusal(ts, lambda: make(prompt="a photo of a cat"))
    assert "'{}'" in message and "a photo of a cat" in message
    _refusal(ts, lambda: make(prompt="{} and {}"))
    message = _refusal(ts, lambda: make(prompt_back="a cat from behind"))
    assert "a cat from behind" in message


def test_refuses_other_text_encoder(ts, make, other_model_dir, tiny_model_dir):
    message = _refusal(ts, lambda: make(pretrained_model_name_or_path=str(other_model_dir)))
    assert str(tiny_model_dir) in message and str(other_model_dir) in message


def test_refuses_text_width_differing_from_guidance(ts, make, wide_guidance, tiny_model_dir):
    message = _refusal(ts, lambda: make(guidance_model_name_or_path=str(wide_guidance)))
    assert "32" in message and "48" in message
    message = _refusal(ts, lambda: make(guidance_model_name_or_path="sd-v2.1-base-4view"))
    assert "1024" in message
    make(guidance_model_name_or_path=str(tiny_model_dir))  # same width: accepted


def test_refuses_missing_or_double_source_and_bad_settings(ts, make, tmp_path):
    assert "distribution=" in _refusal(ts, lambda: make(distribution=None))
    (tmp_path / "imgs").mkdir()
    assert "not both" in _refusal(ts, lambda: make(reference_images=str(tmp_path / "imgs")))
    assert "mix_rule" in _refusal(ts, lambda: make(mix_rule="average"))
    assert "std_scale" in _refusal(ts, lambda: make(std_scale=-1.0))
    both = [str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]
    assert "2 distribution file(s) but 3 std_scale values" in _refusal(
        ts, lambda: make(distribution=both, std_scale=[1.0, 1.0, 0.5])
    )
    assert "std_scale must be a number (gamma" in _refusal(ts, lambda: make(std_scale="wide"))
    assert "std_scale: -1.0 for" in _refusal(ts, lambda: make(std_scale=[-1.0]))


def _reference_folder(path: Path) -> Path:
    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        Image.new("RGB", (32, 32), colour).save(path / f"ref{i}.png")
    return path


def test_reference_images_train_once_then_load_from_cache(ts, make, tmp_path, monkeypatch):
    folder = _reference_folder(tmp_path / "refs")
    cache = tmp_path / "cache"
    settings = dict(
        distribution=None,
        reference_images=str(folder),
        cache_dir=str(cache),
        train_steps=2,
        num_prompts=2,
        num_tokens=1,
        train_samples=1,
        train_batch_size=1,
    )
    first = make(sample_seed=1, save_dir=str(tmp_path / "s1"), **settings)
    entries = list(cache.glob("*.safetensors"))
    assert len(entries) == 1
    entry = entries[0]
    assert entry.with_name(entry.name + ".lock").exists() and entry.with_suffix(".json").is_file()
    from dreamdist.core.distfile import file_sha256, load_distribution

    assert first.conditioning.spec.file_hashes == (file_sha256(entry),)
    assert load_distribution(entry).ctx.shape[:2] == (2, 1)
    # the other runs of the batch load the cached file: no second training
    monkeypatch.setattr(ts.pp, "train_distribution", lambda *a, **k: pytest.fail("trained twice"))
    second = make(sample_seed=2, save_dir=str(tmp_path / "s2"), **settings)
    assert second.conditioning.spec.file_hashes == first.conditioning.spec.file_hashes
    assert not torch.allclose(second.text_embeddings_vd, first.text_embeddings_vd)
    # bad training settings: one line naming this processor's setting
    monkeypatch.undo()
    message = _refusal(ts, lambda: make(**{**settings, "num_prompts": 0}))
    assert "system.prompt_processor.num_prompts" in message and "--num-prompts" not in message
    message = _refusal(ts, lambda: make(**{**settings, "learning_rate": 0.0}))
    assert message.startswith("system.prompt_processor.learning_rate must be a positive number"), message


def test_authors_training_choices_reach_train_config(ts):
    """Crops, flips, Min-SNR, the authors-code ortho loss and the UNet chunking, as this processor's
    users write them, are the TrainConfig settings the trainer gets."""
    cls = ts.pp.DreamdistPromptProcessor
    cfg = ts.parse_structured(
        cls.Config,
        {
            "train_crop": "center",
            "train_flip": True,
            "snr_gamma": 0.0,
            "snr_kind": "authors-code",
            "train_unet_batch": 2,
            "ortho_kind": "squared",
            "train_components": 3,
            "train_assign_every": 20,
        },
    )
    config = cls._train_config(types.SimpleNamespace(cfg=cfg))
    assert (config.crop, config.flip, config.snr_gamma, config.snr_kind, config.unet_batch, config.ortho_kind) == (
        "center",
        True,
        0.0,
        "authors-code",
        2,
        "authors-code",
    )
    assert (config.components, config.assign_every) == (3, 20)
    defaults = cls._train_config(types.SimpleNamespace(cfg=ts.parse_structured(cls.Config, {})))
    assert (defaults.crop, defaults.flip, defaults.snr_gamma, defaults.unet_batch) == ("random", False, 5.0, "auto")


def test_reference_images_training_plans_with_the_memory_free_then(ts, make, tmp_path, monkeypatch):
    """The processor's training goes through the same memory plan, with what the device has free when
    it starts (here: nothing, so one evaluation per chunk with checkpointing, recorded in the file)."""
    import dreamdist.train.trainer as trainer_module
    from dreamdist.core.distfile import load_distribution

    seen = []
    monkeypatch.setattr(trainer_module, "free_memory", lambda device: seen.append(str(device)) or 0)
    folder = _reference_folder(tmp_path / "refs")
    cache = tmp_path / "cache"
    make(
        distribution=None,
        reference_images=str(folder),
        cache_dir=str(cache),
        train_steps=1,
        num_prompts=2,
        num_tokens=1,
        train_samples=2,
        train_batch_size=2,
    )
    assert len(seen) == 1  # read once, when the training starts, for the run's device
    training = load_distribution(next(cache.glob("*.safetensors"))).training
    assert (training["unet_batch"], training["unet_chunks"], training["gradient_checkpointing"]) == (1, 4, True)
    assert training["memory_free_gib"] == 0.0 and training["unet_batch_setting"] == "auto"


# ---------------------------------------------------------------------------------------------
# guidance consumes the embeddings
# ---------------------------------------------------------------------------------------------


def test_tiny_unet_consumes_the_embeddings(ts, make, tiny_model_dir):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_model_dir, subfolder="unet").eval()
    out = make()()
    b = 2
    emb = out.get_text_embeddings(torch.tensor([10.0, 30.0]), torch.tensor([0.0, 180.0]), torch.ones(b))
    with torch.no_grad():
        pred = unet(torch.randn(2 * b, 4, 16, 16), torch.tensor([500] * (2 * b)), encoder_hidden_states=emb).sample
    assert pred.shape == (2 * b, 4, 16, 16) and torch.isfinite(pred).all()


def test_real_threestudio_sds_step_consumes_our_embeddings(ts, make, tiny_model_dir, tmp_path, monkeypatch):
    """threestudio's own stable-diffusion-guidance (SDS) on the tiny SD-2 model: its stock prompt
    processor as the baseline, then ours; one step each with a finite, non-zero gradient."""
    if ts.kind != "real":
        pytest.skip("needs real threestudio (its stable-diffusion-guidance)")
    monkeypatch.chdir(tmp_path)
    guidance = ts.threestudio.find("stable-diffusion-guidance")(
        {
            "pretrained_model_name_or_path": str(tiny_model_dir),
            "half_precision_weights": False,
            "guidance_scale": 100.0,
            "view_dependent_prompting": True,
        }
    )
    stock = ts.threestudio.find("stable-diffusion-prompt-processor")(
        {"pretrained_model_name_or_path": str(tiny_model_dir), "prompt": "a red car", "spawn": False}
    )
    ours = make(guidance_model_name_or_path=str(tiny_model_dir))
    for processor in (stock, ours):
        torch.manual_seed(0)
        # latents straight in (rgb_as_latents, as latent-NeRF configs do): threestudio resizes images to
        # 512 px for an SD VAE that downsamples 8x; the tiny VAE downsamples 2x, which would make the
        # UNet attend over 256x256 latents on CPU
        rgb = torch.rand(2, 16, 16, 4, requires_grad=True)
        out = guidance(
            rgb,
            processor(),
            elevation=torch.tensor([10.0, 20.0]),
            azimuth=torch.tensor([0.0, 170.0]),
            camera_distances=torch.tensor([1.5, 1.5]),
            rgb_as_latents=True,
        )
        out["loss_sds"].backward()
        assert torch.isfinite(out["loss_sds"]) and torch.isfinite(rgb.grad).all()
        assert rgb.grad.abs().sum() > 0
