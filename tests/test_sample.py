"""2D sampling on the tiny model: seeds, metadata, gamma, mixing, errors, grids (issue 4).

CLIs run in-process through dreamdist.cli.main; what reaches the pipeline is captured with a thin
proxy around the real pipeline (optionally forwarding to it, else answering with blank images)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from dreamdist.cli import main
from dreamdist.core.gaussian import standard_normal
from dreamdist.sampling import (
    Sampler,
    SampleSettings,
    derived_seed,
    latent_noise,
    mix_row,
    regenerate_command,
    render_grid,
    sample,
)
from dreamdist.sampling.pngmeta import read_png_params, read_png_text, save_png
from dreamdist.utils.errors import InputError

STEPS = ["--steps", "2", "--no-progress"]


class CapturingPipe:
    """Records every pipeline call's arguments; forwards to the real pipeline or returns blanks."""

    def __init__(self, pipe, forward: bool = False, fail_on_call: int | None = None) -> None:
        self._pipe = pipe
        self.forward = forward
        self.fail_on_call = fail_on_call
        self.calls: list[dict] = []

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, **kwargs):
        self.calls.append({k: v.detach().clone() if torch.is_tensor(v) else v for k, v in kwargs.items()})
        if self.fail_on_call is not None and len(self.calls) >= self.fail_on_call:
            raise RuntimeError("simulated crash inside the pipeline")
        if self.forward:
            return self._pipe(**kwargs)
        # one object per image, as pipelines give: saving one PIL image on two threads at once mixes their metadata
        blank = [Image.new("RGB", (kwargs["width"], kwargs["height"]), (9, 9, 9)) for _ in kwargs["prompt_embeds"]]
        return SimpleNamespace(images=blank)

    def prompts(self) -> torch.Tensor:
        return torch.cat([c["prompt_embeds"] for c in self.calls])


@pytest.fixture(scope="module")
def tiny_sampler(tiny_model_dir):
    return Sampler.load(tiny_model_dir, "cpu", "fp32")


def capturing(tiny_sampler, tiny_model_dir, **kw) -> tuple[Sampler, CapturingPipe]:
    proxy = CapturingPipe(tiny_sampler.pipe, **kw)
    return Sampler(proxy, model=str(tiny_model_dir)), proxy


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def test_sample_writes_metadata_and_any_image_regenerates_alone(tmp_path, tiny_distribution, tiny_model_dir):
    template = "a photo of {} at night"
    common = ["sample", str(tiny_distribution), "--gamma", "0.7", "--template", template, "--batch-size", "2", *STEPS]
    out = tmp_path / "run"
    assert main([*common, "--n", "4", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.glob("seed*.png"))
    assert names == [f"seed00000{i}.png" for i in range(4)]
    for i, name in enumerate(names):
        params = read_png_params(out / name)
        assert params["seed"] == i and params["index"] == i and params["gamma"] == 0.7
        assert params["template"] == template and params["files"] == [str(tiny_distribution.resolve())]
        assert params["weights"] == [1.0] and params["mix_rule"] == "paper"
        assert params["steps"] == 2 and params["guidance_scale"] == 7.5 and params["model"] == str(tiny_model_dir)
        assert f"--seed {i} --n 1 --batch-size 2" in params["regenerate"]
        text = read_png_text(out / name)  # readable chunks too, one per parameter
        assert text["seed"] == str(i) and text["gamma"] == "0.7" and text["template"] == template
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["seed"] for e in manifest["images"]] == [0, 1, 2, 3] and manifest["grid"] == "grid.png"
    with Image.open(out / "grid.png") as grid:
        assert grid.width >= 2 * 64 and grid.height >= 2 * 64  # 2x2 contact sheet
    # image 2 alone, two ways: --index 2 and --seed 2 --n 1 -> the same pixels
    assert main([*common, "--n", "4", "--index", "2", "--out", str(tmp_path / "idx")]) == 0
    assert main([*common, "--seed", "2", "--n", "1", "--out", str(tmp_path / "one")]) == 0
    original = pixels(out / "seed000002.png")
    assert np.array_equal(pixels(tmp_path / "idx" / "seed000002.png"), original)
    assert np.array_equal(pixels(tmp_path / "one" / "seed000002.png"), original)
    assert not np.array_equal(pixels(out / "seed000001.png"), original)


def test_gamma_zero_every_prompt_is_mu(tmp_path, tiny_distribution, tiny_sampler, tiny_model_dir, monkeypatch):
    from dreamdist.core.encoder import SoftPromptEncoder

    fits = []
    encode_soft = SoftPromptEncoder.encode_soft
    monkeypatch.setattr(SoftPromptEncoder, "encode_soft", lambda self, *a: fits.append(1) or encode_soft(self, *a))
    sampler, proxy = capturing(tiny_sampler, tiny_model_dir)
    template = "a painting of {}"
    sample(
        [tiny_distribution],
        tmp_path / "g0",
        gamma=0.0,
        n=3,
        batch_size=2,
        template=template,
        steps=2,
        sampler=sampler,
        progress=False,
    )
    assert len(fits) == 1  # mu/sigma fitted once per run, not per image or per batch
    mu = sampler.distribution([tiny_distribution]).gaussian(template).mu
    prompts = proxy.prompts()
    assert prompts.shape == (4, *mu.shape)  # 3 images + 1 padding copy, batches of exactly 2
    assert all(torch.equal(p, mu) for p in prompts)
    # gamma 1: distinct samples, each its seed's draw through the core sampling path
    proxy.calls.clear()
    sample(
        [tiny_distribution],
        tmp_path / "g1",
        gamma=1.0,
        n=2,
        batch_size=2,
        template=template,
        steps=2,
        sampler=sampler,
        progress=False,
    )
    dist = sampler.distribution([tiny_distribution])
    assert torch.equal(proxy.prompts(), dist.sample([0, 1], 1.0, template))
    # latent noise: per-image CPU draws, decoupled from the prompt draw of the same seed
    lat = proxy.calls[0]["latents"]
    assert torch.equal(lat[1], latent_noise(lat.shape[1:], 1))
    assert not torch.equal(lat[1].flatten(), standard_normal(mu.shape, 1).flatten()[: lat[1].numel()])
    assert derived_seed(1, "latents") != derived_seed(1, "scheduler")


def test_mixing_same_file_keeps_mu_and_weight_one_reproduces_first(
    tmp_path, tiny_distribution, tiny_distribution_b, tiny_sampler, tiny_model_dir
):
    one = tiny_sampler.distribution([tiny_distribution]).gaussian()
    two = tiny_sampler.distribution([tiny_distribution, tiny_distribution], [0.5, 0.5]).gaussian()
    assert torch.allclose(one.mu, two.mu, atol=1e-6)
    sampler, proxy = capturing(tiny_sampler, tiny_model_dir, forward=True)
    kw = dict(n=2, batch_size=2, steps=2, sampler=sampler, progress=False)
    a = sample([tiny_distribution], tmp_path / "a", **kw)
    alone = proxy.prompts()
    proxy.calls.clear()
    ab = sample([tiny_distribution, tiny_distribution_b], tmp_path / "ab", weights=[1.0, 0.0], **kw)
    assert torch.equal(proxy.prompts(), alone)
    for pa, pab in zip(a.images, ab.images):
        assert np.array_equal(pixels(pa), pixels(pab))
    assert read_png_params(ab.images[0])["weights"] == [1.0, 0.0]


@pytest.mark.parametrize(
    "more_files, options, needle",
    [
        ([], ["--template", "a photo at night"], "exactly one '{}'"),
        ([], ["--template", "{} and {}"], "found 2"),
        ([], ["--template", "a " * 80 + "{}"], "does not fit"),
        (["MISSING"], [], "nope.safetensors: no such distribution file"),
        (["SECOND"], ["--weights", "0.5", "-0.5"], "negative"),
        (["SECOND"], ["--weights", "1"], "one weight per file"),
        (["SECOND"], ["--std-scale", "1", "1", "1"], "2 distribution file(s) but 3 --std-scale values"),
        ([], ["--std-scale", "-1"], "must be a finite number >= 0"),
        ([], ["--model", "OTHER"], "trained on"),
        ([], ["--gamma", "-1"], "gamma must be"),
        ([], ["--height", "30"], "multiple of 8"),
    ],
)
def test_bad_input_is_one_clear_line_and_leaves_no_folder(
    tmp_path, tiny_distribution, tiny_distribution_b, other_model_dir, capsys, more_files, options, needle
):
    subs = {
        "MISSING": str(tmp_path / "nope.safetensors"),
        "SECOND": str(tiny_distribution_b),
        "OTHER": str(other_model_dir),
    }
    more_files = [subs[x] for x in more_files]
    options = [subs.get(x, x) for x in options]
    parent = tmp_path / "outputs"
    out = parent / "deep" / "run"
    argv = ["sample", str(tiny_distribution), *more_files, *options, "--n", "2", "--out", str(out), *STEPS]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dreamdist sample: error:") and err.count("\n") == 0, err
    assert needle in err
    assert leftovers(parent) == [] and not out.exists()


def test_crash_mid_run_leaves_nothing(tmp_path, tiny_distribution, tiny_sampler, tiny_model_dir):
    sampler, proxy = capturing(tiny_sampler, tiny_model_dir, fail_on_call=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sample(
            [tiny_distribution], tmp_path / "new" / "run", n=4, batch_size=2, steps=2, sampler=sampler, progress=False
        )
    assert leftovers(tmp_path) == []


def test_existing_output_is_never_overwritten(tmp_path, tiny_distribution, monkeypatch, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.png").write_bytes(b"precious")
    assert main(["sample", str(tiny_distribution), "--n", "1", "--batch-size", "1", "--out", str(out), *STEPS]) == 2
    assert "not empty" in capsys.readouterr().err
    assert leftovers(out) == ["keep.png"] and (out / "keep.png").read_bytes() == b"precious"
    # without --out a fresh folder is picked every time
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert main(["sample", str(tiny_distribution), "--n", "1", "--batch-size", "1", *STEPS]) == 0
    assert leftovers(tmp_path / "samples") == ["random", "random-2"]
    assert (tmp_path / "samples" / "random-2" / "manifest.json").is_file()


def test_help_says_what_happens_to_existing_files(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    assert "never overwritten" in " ".join(capsys.readouterr().out.split())


def test_help_shows_a_default_only_where_it_says_something(capsys):
    for command in ("sample", "sweep-gamma", "mix", "inspect"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for empty in ("(default: None)", "(default: False)", "(default: )", "(default: [])"):
            assert empty not in text, (command, empty)
        if command != "inspect":
            assert "image i uses SEED+i (default: 0)" in text  # a zero default is still shown
            assert "(default: each file's own training template)" in text


def test_one_settings_object_drives_the_commands(
    tmp_path, tiny_distribution, tiny_distribution_b, tiny_sampler, tiny_model_dir
):
    sampler, proxy = capturing(tiny_sampler, tiny_model_dir)
    settings = SampleSettings(n=3, batch_size=2, steps=2, progress=False, template="a painting of {}", gamma=0.5)
    run = sample([tiny_distribution], tmp_path / "settings", settings, sampler=sampler)
    by_settings = proxy.prompts()
    proxy.calls.clear()
    sample(
        [tiny_distribution],
        tmp_path / "keywords",
        sampler=sampler,
        n=3,
        batch_size=2,
        steps=2,
        progress=False,
        template="a painting of {}",
        gamma=0.5,
    )
    assert torch.equal(proxy.prompts(), by_settings)
    params = read_png_params(run.images[1])
    assert params["seed"] == 1 and params["gamma"] == 0.5 and regenerate_command(params) == params["regenerate"]
    with pytest.raises(TypeError, match="unknown sampling setting.*images"):
        sample([tiny_distribution], tmp_path / "typo", sampler=sampler, images=2)
    with pytest.raises(InputError, match="mix takes one gamma"):
        mix_row(tiny_distribution, tiny_distribution_b, tmp_path / "mix", settings, sampler=sampler, weights=[1, 0])
    assert leftovers(tmp_path) == ["keywords", "settings"]


def test_sweep_gamma_writes_the_figure5_grid(tmp_path, tiny_distribution):
    out = tmp_path / "sweep"
    assert (
        main(
            [
                "sweep-gamma",
                str(tiny_distribution),
                "--gammas",
                "0",
                "1",
                "--n",
                "2",
                "--batch-size",
                "4",
                "--out",
                str(out),
                *STEPS,
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["grid_rows"] == ["gamma 0", "gamma 1"] and manifest["grid_cols"] == ["seed 0", "seed 1"]
    cells = {(e["gamma"], e["seed"]) for e in manifest["images"]}
    assert cells == {(0.0, 0), (0.0, 1), (1.0, 0), (1.0, 1)}  # the same seeds in every row
    assert read_png_params(out / "gamma1-seed000001.png")["gamma"] == 1.0
    # gamma 0 is the mean prompt for every seed; the latents still differ by seed
    assert not np.array_equal(pixels(out / "gamma0-seed000000.png"), pixels(out / "gamma0-seed000001.png"))
    with Image.open(out / "grid.png") as grid:
        assert grid.width > 2 * 64 and grid.height > 2 * 64


def test_mix_writes_the_figure6_row_and_its_ends_are_the_pure_files(tmp_path, tiny_distribution, tiny_distribution_b):
    out = tmp_path / "mix"
    assert (
        main(
            [
                "mix",
                str(tiny_distribution),
                str(tiny_distribution_b),
                "--steps-between",
                "1",
                "--batch-size",
                "3",
                "--out",
                str(out),
                *STEPS,
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["column_weights"] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    assert [e["weights"] for e in manifest["images"]] == manifest["column_weights"]
    assert (out / "grid.png").is_file() and len(list(out.glob("mix*.png"))) == 3
    assert (
        main(
            ["sample", str(tiny_distribution_b), "--n", "1", "--batch-size", "3", "--out", str(tmp_path / "b"), *STEPS]
        )
        == 0
    )
    assert np.array_equal(pixels(out / "mix02-seed000000.png"), pixels(tmp_path / "b" / "seed000000.png"))
    assert not np.array_equal(pixels(out / "mix00-seed000000.png"), pixels(out / "mix02-seed000000.png"))


def test_render_grid_preview_for_training(tmp_path, tiny_distribution, tiny_sampler):
    g = tiny_sampler.distribution([tiny_distribution]).gaussian()
    g = type(g)(g.mu.clone().requires_grad_(True), g.sigma.clone())  # as mid-training: part of a graph
    png = tmp_path / "previews" / "step100.png"
    sheet = render_grid(
        tiny_sampler.pipe, g, seeds=[0, 1, 2], gamma=1.0, steps=2, guidance_scale=7.5, out_png=png, title="step 100"
    )
    assert png.is_file() and sheet.size == Image.open(png).size and sheet.width >= 2 * 64


def test_png_metadata_round_trip(tmp_path):
    params = {"template": "夜の {} à Paris", "seed": 3, "gamma": 0.5, "weights": [0.7, 0.3]}
    path = save_png(Image.new("RGB", (8, 8)), tmp_path / "x.png", params)
    assert read_png_params(path) == params
    assert read_png_text(path)["weights"] == "[0.7, 0.3]"
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    with pytest.raises(InputError, match="no dreamdist parameters"):
        read_png_params(tmp_path / "plain.png")


# --------------------------------------------------------------------------- per-file templates and std scales


def test_std_scale_per_file_is_used_recorded_and_regenerates(tmp_path, two_templates, tiny_sampler, tiny_model_dir):
    a, b = two_templates
    sampler, proxy = capturing(tiny_sampler, tiny_model_dir, forward=True)
    kw = dict(n=2, batch_size=2, steps=2, sampler=sampler, progress=False, weights=[0.6, 0.4])
    run = sample([a, b], tmp_path / "scaled", std_scale=[1.0, 0.5], **kw)
    dist = sampler.distribution([a, b], [0.6, 0.4], std_scale=[1.0, 0.5])
    assert torch.equal(proxy.prompts(), dist.sample([0, 1], 1.0))  # each file in its own template, b's sigma halved
    assert not torch.allclose(proxy.prompts(), sampler.distribution([a, b], [0.6, 0.4]).sample([0, 1], 1.0))
    params = read_png_params(run.images[1])
    assert params["std_scale"] == [1.0, 0.5] and params["weights"] == [0.6, 0.4]
    assert params["template"] is None and params["templates"] == ["a photo of {}", "{} in the snow"]
    argv = shlex.split(params["regenerate"])
    assert argv[argv.index("--std-scale") + 1 : argv.index("--std-scale") + 3] == ["1.0", "0.5"]
    assert "--template" not in argv  # each file in its own training template, as in the run
    manifest = json.loads((run.out_dir / "manifest.json").read_text())
    assert manifest["std_scale"] == [1.0, 0.5] and manifest["templates"] == params["templates"]
    assert main([*argv[1:], "--out", str(tmp_path / "again"), "--no-progress"]) == 0
    assert np.array_equal(pixels(tmp_path / "again" / "seed000001.png"), pixels(run.images[1]))
    # no per-file scaling: recorded as ones, and the regenerate command stays as it was
    plain = sample([a], tmp_path / "plain", **{**kw, "weights": None, "n": 1})
    params = read_png_params(plain.images[0])
    assert params["std_scale"] == [1.0] and params["template"] == "a photo of {}" and "templates" not in params
    assert "--std-scale" not in params["regenerate"] and "--template 'a photo of {}'" in params["regenerate"]


def test_std_scale_is_not_gamma_sweeps_keep_their_rows_and_mix_scales_each_end(tmp_path, two_templates):
    a, b = two_templates
    out = tmp_path / "sweep"
    assert (
        main(
            [
                "sample",
                str(a),
                str(b),
                "--gamma",
                "0",
                "1",
                "--std-scale",
                "1",
                "0.5",
                "--n",
                "1",
                "--batch-size",
                "2",
                "--out",
                str(out),
                *STEPS,
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["grid_rows"] == ["gamma 0", "gamma 1"] and manifest["std_scale"] == [1.0, 0.5]
    assert manifest["grid_cols"] == ["seed 0"]
    mix_out = tmp_path / "mix"
    assert (
        main(
            [
                "mix",
                str(a),
                str(b),
                "--steps-between",
                "0",
                "--std-scale",
                "1",
                "0.5",
                "--batch-size",
                "2",
                "--out",
                str(mix_out),
                *STEPS,
            ]
        )
        == 0
    )
    assert json.loads((mix_out / "manifest.json").read_text())["std_scale"] == [1.0, 0.5]
    assert (
        main(
            [
                "sample",
                str(b),
                "--std-scale",
                "0.5",
                "--n",
                "1",
                "--batch-size",
                "2",
                "--out",
                str(tmp_path / "b"),
                *STEPS,
            ]
        )
        == 0
    )
    # the right end of the row is b alone, in its own template, its sigma halved
    assert np.array_equal(pixels(mix_out / "mix01-seed000000.png"), pixels(tmp_path / "b" / "seed000000.png"))


def test_mix_with_a_mixture_file_records_each_images_component(tmp_path, tiny_mixture, tiny_distribution):
    out = tmp_path / "mix"
    assert (
        main(
            [
                "mix",
                str(tiny_mixture),
                str(tiny_distribution),
                "--steps-between",
                "1",
                "--n",
                "3",
                "--batch-size",
                "3",
                "--out",
                str(out),
                *STEPS,
            ]
        )
        == 0
    )
    from dreamdist.core.mixture import pick_component

    manifest = json.loads((out / "manifest.json").read_text())
    assert [(e["seed"], e["component"]) for e in manifest["images"]] == [
        (s, pick_component([0.25, 0.75], s)) for s in range(3) for _ in range(3)
    ]
    assert (
        main(["sample", str(tiny_mixture), "--n", "3", "--batch-size", "3", "--out", str(tmp_path / "a"), *STEPS]) == 0
    )  # the mix's first column is the mixture file alone, seed for seed
    for s in range(3):
        assert np.array_equal(pixels(out / f"mix00-seed{s:06d}.png"), pixels(tmp_path / "a" / f"seed{s:06d}.png"))
