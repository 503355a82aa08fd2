"""`dreamdist evaluate` (issue 14): the metric formulas against independent transcriptions and closed
forms, the encoders on tiny random-weight CLIP / DINO models built from configs (no downloads), sample
folders read through their manifest, and the command in-process with its one-line errors."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dreamdist.cli import main
from dreamdist.evaluate import EvaluateSettings, ImageGroup, evaluate_groups, generated_groups
from dreamdist.evaluate import metrics as M
from dreamdist.evaluate.encoders import HubImageEncoder, InceptionEncoder
from dreamdist.evaluate.report import format_table
from dreamdist.utils.errors import InputError

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tiny_encoder_dirs(tmp_path_factory) -> dict[str, Path]:
    """A tiny CLIP vision tower with projection and a tiny DINO-style ViT, random weights, saved with
    their image processors and loaded back through from_pretrained like the hub checkpoints."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    root = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(0)
    common = dict(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    CLIPVisionModelWithProjection(CLIPVisionConfig(projection_dim=16, **common)).save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    ViTModel(ViTConfig(**common), add_pooling_layer=False).save_pretrained(root / "dino")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "dino")
    return {"clip": root / "clip", "dino": root / "dino"}


@pytest.fixture(scope="session")
def toy_folders(tmp_path_factory) -> dict[str, Path]:
    """Reference and generated folders of toy images (different seeds)."""
    from dreamdist.toy.shapes import random_specs, save_reference_set

    root = tmp_path_factory.mktemp("eval-images")
    save_reference_set(root / "refs", random_specs(8, 0), seed=1)
    save_reference_set(root / "gen", random_specs(6, 5), seed=2)
    return {"refs": root / "refs", "gen": root / "gen"}


def tiny_flags(dirs) -> list[str]:
    return ["--clip-model", str(dirs["clip"]), "--dino-model", str(dirs["dino"]), "--no-progress"]


# --------------------------------------------------------------------------- Frechet distance


def test_frechet_distance_matches_the_closed_form_for_commuting_covariances():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    # diagonal covariances: tr((S1 S2)^1/2) = sum sqrt(a_i b_i), so FD = |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2
    expected = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    assert M.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    # rotating both Gaussians by the same orthogonal matrix changes nothing
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    rotated = M.frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_the_2x2_closed_form_for_non_commuting_covariances():
    # For a 2x2 matrix with eigenvalues l1, l2 >= 0: tr(sqrt) = sqrt(l1) + sqrt(l2) = sqrt(tr + 2 sqrt(det)).
    s1 = np.array([[2.0, 0.9], [0.9, 1.0]])
    s2 = np.array([[0.5, -0.3], [-0.3, 1.5]])
    p = s1 @ s2
    assert not np.allclose(p, p.T)  # they do not commute
    tr_sqrt = math.sqrt(np.trace(p) + 2 * math.sqrt(np.linalg.det(p)))
    mu1, mu2 = np.array([1.0, -2.0]), np.array([0.5, 0.25])
    expected = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)
    assert M.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-12)
    assert M.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_is_float64_exact_where_float32_is_not():
    # features with a large common offset: float32 loses the small differences, float64 keeps them
    mu1 = np.full(4, 1e4)
    mu2 = mu1 + 1e-3
    s = np.eye(4) * 1e-4
    expected = 4 * 1e-6
    assert M.frechet_distance(mu1, s, mu2, s) == pytest.approx(expected, rel=1e-6)
    # covariance terms of 4e6 that cancel down to 4e-6 (float32 keeps ~7 digits: pure noise there)
    a, b = np.full(4, 1e6), np.full(4, (1e3 + 1e-3) ** 2)
    zero = np.zeros(4)
    assert M.frechet_distance(zero, np.diag(a), zero, np.diag(b)) == pytest.approx(4e-6, rel=1e-3)
    assert M.frechet_distance(
        zero.astype(np.float32), np.diag(a).astype(np.float32), zero, np.diag(b).astype(np.float32)
    ) == pytest.approx(0.0, abs=1.0)  # accepts float32 input


def test_frechet_distance_of_samples_converges_to_the_gaussians_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.0, -1.0])
    a, b = np.array([1.0, 0.5, 2.0]), np.array([2.0, 0.5, 0.25])
    x = rng.normal(size=(40000, 3)) * np.sqrt(a) + mu1
    y = rng.normal(size=(40000, 3)) * np.sqrt(b) + mu2
    expected = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    assert M.frechet_distance_of_features(x, y) == pytest.approx(expected, rel=0.05)
    stats = M.gaussian_stats(x[:50])
    np.testing.assert_allclose(stats.mu, x[:50].mean(0))
    np.testing.assert_allclose(stats.sigma, np.cov(x[:50].T))  # unbiased, as pytorch-fid / torch-fidelity


def test_frechet_distance_handles_rank_deficient_covariances():
    rng = np.random.default_rng(2)
    few, other = rng.normal(size=(4, 16)), rng.normal(size=(5, 16)) + 1.0  # far fewer samples than dimensions
    value = M.frechet_distance_of_features(few, other)
    assert np.isfinite(value) and value > 0
    assert M.frechet_distance_of_features(few, few) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        M.gaussian_stats(few[:1])


# --------------------------------------------------------------------------- CLIP-I / DINO


def test_mean_cosine_by_hand():
    g = np.array([[1.0, 0.0], [0.0, 2.0]])
    r = np.array([[3.0, 3.0], [5.0, 0.0]])
    # cosines: (g1, r1) 1/sqrt2, (g1, r2) 1, (g2, r1) 1/sqrt2, (g2, r2) 0
    assert M.mean_cosine(g, r) == pytest.approx((1 + math.sqrt(2)) / 4, rel=1e-12)
    assert M.mean_cosine(r, r) == pytest.approx((1 + 1 + 2 / math.sqrt(2)) / 4)


# --------------------------------------------------------------------------- diversity


def naive_diversity(x: np.ndarray) -> float:
    """Mean over unordered pairs i < j of 1 - cos(x_i, x_j), transcribed with plain loops."""
    pairs = [(i, j) for i in range(len(x)) for j in range(i + 1, len(x))]
    cos = [float(x[i] @ x[j]) / (np.linalg.norm(x[i]) * np.linalg.norm(x[j])) for i, j in pairs]
    return sum(1 - c for c in cos) / len(pairs)


def test_diversity_is_the_mean_pairwise_cosine_distance():
    x = np.array([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0]])
    # pairs: (1,2) cos 0 -> 1; (1,3) cos 1/sqrt2; (2,3) cos 1/sqrt2 -> mean (3 - sqrt2) / 3
    assert M.mean_pairwise_cosine_distance(x) == pytest.approx((3 - math.sqrt(2)) / 3, rel=1e-12)
    assert M.mean_pairwise_cosine_distance(np.array([[1.0, 2.0], [-1.0, -2.0]])) == pytest.approx(2.0)
    assert M.mean_pairwise_cosine_distance(np.array([[1.0, 2.0], [3.0, 6.0]])) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(4)
    y = rng.normal(size=(9, 5))
    assert M.mean_pairwise_cosine_distance(y) == pytest.approx(naive_diversity(y), abs=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        M.mean_pairwise_cosine_distance(y[:1])


# --------------------------------------------------------------------------- density / coverage


def naive_density_coverage(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Naeem et al. 2020, eq. for density and coverage, transcribed with plain loops."""
    n, m = len(real), len(fake)
    radius = []
    for i in range(n):
        others = sorted(float(np.linalg.norm(real[i] - real[j])) for j in range(n) if j != i)
        radius.append(others[k - 1])  # k-th nearest neighbour, excluding the point itself
    inside = [[float(np.linalg.norm(fake[j] - real[i])) < radius[i] for j in range(m)] for i in range(n)]
    density = sum(inside[i][j] for i in range(n) for j in range(m)) / (k * m)
    coverage = sum(any(inside[i]) for i in range(n)) / n
    return density, coverage


@pytest.mark.parametrize("seed,k", [(0, 5), (1, 1), (2, 3), (3, 5)])
def test_density_coverage_match_a_direct_transcription(seed, k):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(23, 4))
    fake = rng.normal(size=(17, 4)) * rng.uniform(0.5, 2) + rng.uniform(-1, 1)
    assert M.density_coverage(real, fake, k) == pytest.approx(naive_density_coverage(real, fake, k), abs=1e-12)


def test_density_coverage_hand_checked_case():
    real = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    # k=1 radii: 1, 1, 1, 1, 7
    np.testing.assert_allclose(M.knn_radii(real, 1), [1, 1, 1, 1, 7])
    fake = np.array([[0.5], [10.5], [20.0]])
    # 0.5 is inside the balls of 0 and 1; 10.5 inside the ball of 10; 20 in none -> density 3 / (1 * 3)
    # covered real points: 0, 1, 10 -> coverage 3 / 5
    assert M.density_coverage(real, fake, 1) == pytest.approx((1.0, 0.6))
    # on the boundary is outside (strict inequality, as the authors' prdc)
    assert M.density_coverage(real, np.array([[17.0]]), 1) == (0.0, 0.0)  # exactly r=7 from 10
    # the same set: every real point covers itself
    assert M.density_coverage(real, real, 1)[1] == 1.0
    with pytest.raises(ValueError, match="more than k=5"):
        M.density_coverage(real, fake, 5)


# --------------------------------------------------------------------------- encoders


def test_clip_and_dino_encoders_return_the_models_own_features(tiny_encoder_dirs, toy_folders):
    from transformers import AutoImageProcessor, CLIPVisionModelWithProjection, ViTModel

    paths = sorted(toy_folders["refs"].glob("*.png"))
    images = [Image.open(p).convert("RGB") for p in paths]
    with torch.no_grad():
        clip = CLIPVisionModelWithProjection.from_pretrained(tiny_encoder_dirs["clip"])
        pix = AutoImageProcessor.from_pretrained(tiny_encoder_dirs["clip"])(images=images, return_tensors="pt")
        want_clip = clip(**pix).image_embeds.double().numpy()
        dino = ViTModel.from_pretrained(tiny_encoder_dirs["dino"], add_pooling_layer=False)
        pix = AutoImageProcessor.from_pretrained(tiny_encoder_dirs["dino"])(images=images, return_tensors="pt")
        want_dino = dino(**pix).last_hidden_state[:, 0].double().numpy()
    got_clip = HubImageEncoder("clip", tiny_encoder_dirs["clip"], batch_size=3).embed(paths, progress=False)
    got_dino = HubImageEncoder("dino", tiny_encoder_dirs["dino"], batch_size=5).embed(paths, progress=False)
    assert got_clip.dtype == np.float64 and got_clip.shape == (8, 16)
    np.testing.assert_allclose(got_clip, want_clip, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_dino, want_dino, rtol=1e-5, atol=1e-6)


class FakeInception(torch.nn.Module):
    """Stands in for torch-fidelity's FeatureExtractorInceptionV3 (same constructor and call
    convention: uint8 (N, 3, H, W) in, a tuple of (N, 2048) features out)."""

    calls: list[tuple] = []

    def __init__(self, name, features_list, feature_extractor_weights_path=None):
        super().__init__()
        assert name == "inception-v3-compat" and features_list == ["2048"]
        self.weights = feature_extractor_weights_path

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        FakeInception.calls.append(tuple(x.shape))
        mean = x.double().mean(dim=(2, 3))
        return (torch.cat([mean, torch.full((len(x), 1), float(x.shape[-1]), dtype=torch.float64)], 1),)


def test_inception_encoder_feeds_uint8_images_in_same_size_batches(tmp_path):
    sizes = [(40, 30), (40, 30), (64, 64), (40, 30), (40, 30), (40, 30)]
    paths = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", size, (i * 10, 0, 255)).save(path)
        paths.append(path)
    FakeInception.calls = []
    enc = InceptionEncoder(None, batch_size=2, extractor_class=FakeInception)
    feats = enc.embed(paths, progress=False)
    assert FakeInception.calls == [(2, 3, 30, 40), (1, 3, 64, 64), (2, 3, 30, 40), (1, 3, 30, 40)]
    np.testing.assert_allclose(feats[:, 0], [i * 10 for i in range(6)])  # in the order of the paths
    with pytest.raises(InputError, match="--inception-weights"):
        InceptionEncoder(tmp_path / "missing.pth", extractor_class=FakeInception)


@pytest.mark.skipif(importlib.util.find_spec("torch_fidelity") is not None, reason="torch-fidelity is installed")
def test_fid_without_torch_fidelity_names_the_extra(toy_folders, capsys):
    assert (
        main(["evaluate", str(toy_folders["gen"]), str(toy_folders["refs"]), "--metrics", "fid", "--no-progress"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install "dreamdist[evaluate]"' in err


# --------------------------------------------------------------------------- evaluate API and command


def test_evaluate_groups_equals_the_formulas_on_the_encoders_features(tiny_encoder_dirs, toy_folders):
    refs = sorted(toy_folders["refs"].glob("*.png"))
    gen = sorted(toy_folders["gen"].glob("*.png"))
    clip = HubImageEncoder("clip", tiny_encoder_dirs["clip"])
    dino = HubImageEncoder("dino", tiny_encoder_dirs["dino"])
    inception = InceptionEncoder(None, extractor_class=FakeInception)
    settings = EvaluateSettings(progress=False, k=3)
    groups = [ImageGroup("all", gen), ImageGroup("first four", gen[:4])]
    report = evaluate_groups(groups, refs, settings, encoders={"clip": clip, "dino": dino, "inception": inception})
    f = {
        name: (e.embed(refs, False), e.embed(gen, False))
        for name, e in (("clip", clip), ("dino", dino), ("inception", inception))
    }
    row = report.rows[0].values
    assert row["fid"] == pytest.approx(M.frechet_distance_of_features(f["inception"][1], f["inception"][0]))
    assert row["clip-i"] == pytest.approx(M.mean_cosine(f["clip"][1], f["clip"][0]))
    assert row["dino"] == pytest.approx(M.mean_cosine(f["dino"][1], f["dino"][0]))
    assert (row["density"], row["coverage"]) == pytest.approx(
        naive_density_coverage(f["inception"][0], f["inception"][1], 3)
    )
    assert report.rows[1].n == 4
    assert report.rows[1].values["clip-i"] == pytest.approx(M.mean_cosine(f["clip"][1][:4], f["clip"][0]))
    table = format_table(report)
    assert "FID (lower better)" in table and "first four" in table


def test_evaluate_command_json_and_table(tiny_encoder_dirs, toy_folders, capsys):
    argv = [
        "evaluate",
        str(toy_folders["gen"]),
        str(toy_folders["refs"]),
        *tiny_flags(tiny_encoder_dirs),
        "--fid-features",
        "clip",
        "--dc-features",
        "dino",
    ]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["references"]["images"] == 8
    [row] = out["rows"]
    assert row["images"] == 6 and set(row["metrics"]) == {"fid", "clip-i", "dino", "density", "coverage", "diversity"}
    assert all(isinstance(v, float) for v in row["metrics"].values())
    assert -1 <= row["metrics"]["clip-i"] <= 1 and 0 <= row["metrics"]["coverage"] <= 1
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "FD_CLIP (lower better)" in table and "CLIP-I" in table and "coverage" in table
    assert "diversity" in table and "cosine distance" in table
    assert "references: " in table and "(8 images)" in table


def test_too_few_references_for_density_is_reported_not_fatal(tiny_encoder_dirs, toy_folders, capsys):
    argv = [
        "evaluate",
        str(toy_folders["gen"]),
        str(toy_folders["refs"]),
        *tiny_flags(tiny_encoder_dirs),
        "--metrics",
        "clip-i",
        "density",
        "coverage",
        "--dc-features",
        "clip",
        "--k",
        "8",
        "--json",
    ]
    assert main(argv) == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert row["metrics"]["density"] is None and "more than k=8" in row["notes"]["density"]
    assert row["metrics"]["clip-i"] is not None


def test_evaluate_reads_a_sweep_gamma_folder_one_row_per_gamma(
    tmp_path, tiny_model_dir, tiny_distribution, tiny_encoder_dirs, toy_folders, capsys
):
    from dreamdist.sampling import sweep_gamma

    out = tmp_path / "sweep"
    sweep_gamma([tiny_distribution], out, gammas=[0.0, 1.5], n=3, steps=2, progress=False, device="cpu")
    groups = generated_groups(out)
    assert [g.label for g in groups] == ["random gamma 0", "random gamma 1.5"]
    assert all(len(g.paths) == 3 and not any(p.name == "grid.png" for p in g.paths) for g in groups)
    assert groups[1].info["gamma"] == 1.5 and groups[1].info["distributions"] == ["random"]
    argv = [
        "evaluate",
        str(out),
        str(toy_folders["gen"]),
        str(toy_folders["refs"]),
        *tiny_flags(tiny_encoder_dirs),
        "--metrics",
        "clip-i",
        "dino",
    ]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "random gamma 0 " in table and "random gamma 1.5" in table and "distribution random" in table
    assert f"template {groups[0].info['template']!r}" in table


def test_mix_manifest_gives_one_group_per_weight(tmp_path):
    folder = tmp_path / "mix"
    folder.mkdir()
    entries = []
    for c, w in enumerate((0.0, 0.5, 1.0)):
        for s in range(2):
            name = f"mix{c:02d}-seed{s:06d}.png"
            Image.new("RGB", (8, 8)).save(folder / name)
            entries.append({"file": name, "seed": s, "gamma": 1.0, "index": s, "weights": [1 - w, w], "column": c})
    Image.new("RGB", (8, 8)).save(folder / "grid.png")
    (folder / "manifest.json").write_text(
        json.dumps(
            {"command": "mix", "files": ["/x/a.safetensors", "/x/b.safetensors"], "template": "{}", "images": entries}
        )
    )
    groups = generated_groups(folder)
    assert [g.label for g in groups] == ["a+b 1.00 / 0.00", "a+b 0.50 / 0.50", "a+b 0.00 / 1.00"]
    assert [len(g.paths) for g in groups] == [2, 2, 2]
    (folder / entries[0]["file"]).unlink()
    with pytest.raises(InputError, match="missing"):
        generated_groups(folder)


def test_plain_folder_uses_the_project_listing_rule(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    for name in ("b.png", "a.jpg", ".hidden.png"):
        Image.new("RGB", (8, 8)).save(folder / name)
    (folder / "sub").mkdir()
    [group] = generated_groups(folder)
    assert [p.name for p in group.paths] == ["a.jpg", "b.png"] and group.label == "plain"


@pytest.mark.parametrize("case", ["missing", "empty", "file", "bad-manifest", "stray-file"])
def test_bad_folders_are_one_line_errors(case, tmp_path, toy_folders, tiny_encoder_dirs, capsys):
    gen = tmp_path / "gen"
    if case != "missing":
        gen.mkdir() if case != "file" else gen.write_text("x")
    if case == "bad-manifest":
        (gen / "manifest.json").write_text("{not json")
    if case == "stray-file":
        Image.new("RGB", (8, 8)).save(gen / "a.png")
        (gen / "notes.txt").write_text("x")
    rc = main(["evaluate", str(gen), str(toy_folders["refs"]), *tiny_flags(tiny_encoder_dirs), "--metrics", "clip-i"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("dreamdist evaluate: error: ")
    assert str(gen) in err
    # the reference folder is checked the same way
    rc = main(["evaluate", str(toy_folders["gen"]), str(tmp_path / "nothing"), "--metrics", "clip-i", "--no-progress"])
    assert rc == 2 and "nothing: no such folder" in capsys.readouterr().err


def test_unloadable_model_is_a_one_line_error(toy_folders, tmp_path, capsys):
    rc = main(
        [
            "evaluate",
            str(toy_folders["gen"]),
            str(toy_folders["refs"]),
            "--metrics",
            "dino",
            "--dino-model",
            str(tmp_path / "no-model"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--dino-model" in err


def test_help_names_the_default_encoders_and_downloads(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    for word in (
        "openai/clip-vit-base-patch32",
        "facebook/dino-vits16",
        "Inception-v3",
        "download",
        'pip install "dreamdist[evaluate]"',
        "k=5",
        "manifest.json",
    ):
        assert word in text


# --------------------------------------------------------------------------- dreamdist batch folders


@pytest.fixture(scope="module")
def batch_out(tmp_path_factory):
    """A real small batch against the stand-in launch.py (as tests/test_batch_gallery.py): seeds 0-2,
    seed 1 fails in training, 3 test views per seed."""
    from test_batch_gallery import args as batch_args
    from test_batch_gallery import make_env

    with pytest.MonkeyPatch.context() as mp:
        env = make_env(tmp_path_factory.mktemp("batch-eval"), mp)
        mp.setenv("STANDIN_LAUNCH_FAIL_SEEDS", "1")
        code = main(
            batch_args(
                env, "--seeds", "0-2", "--gpus", "0", "--retries", "0", "trainer.max_steps=10", "data.n_test_views=3"
            )
        )
    assert code == 1  # seed 1 failed
    return env.out


def test_batch_folder_is_one_row_of_front_stills(batch_out, tiny_encoder_dirs, toy_folders, capsys):
    from dreamdist.batch.gallery import find_test_renders
    from dreamdist.batch.manifest import Manifest

    [group] = generated_groups(batch_out, crop_dir=batch_out.parent / "crops")
    assert group.label == "cats batch" and group.info["seeds"] == [0, 2] and group.info["seeds_not_done"] == [1]
    latest = Manifest(batch_out / "manifest.jsonl").latest()
    for seed, crop, still in zip((0, 2), group.paths, group.info["stills"]):
        assert Path(still) == find_test_renders(Path(latest[seed]["trial_dir"]))[0]  # the gallery's still
        assert Path(still).name == "0.png"  # test view 0: the front
        full = np.asarray(Image.open(still).convert("RGB"))
        h, w, _ = full.shape
        assert w == 3 * h  # comp_rgb | comp_normal | opacity
        np.testing.assert_array_equal(np.asarray(Image.open(crop).convert("RGB")), full[:, :h])  # the colour panel

    argv = [
        "evaluate",
        str(batch_out),
        str(toy_folders["gen"]),
        str(toy_folders["refs"]),
        *tiny_flags(tiny_encoder_dirs),
        "--fid-features",
        "clip",
        "--dc-features",
        "clip",
    ]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    batch, folder = out["rows"]
    assert batch["label"] == "cats batch" and batch["images"] == 2 and batch["command"] == "batch"
    assert batch["seeds"] == [0, 2] and folder["images"] == 6
    clip = HubImageEncoder("clip", tiny_encoder_dirs["clip"])
    feats, refs = clip.embed(group.paths, False), clip.embed(sorted(toy_folders["refs"].glob("*.png")), False)
    assert batch["metrics"]["diversity"] == pytest.approx(naive_diversity(feats), abs=1e-6)
    assert batch["metrics"]["clip-i"] == pytest.approx(M.mean_cosine(feats, refs), abs=1e-6)
    assert isinstance(batch["metrics"]["dino"], float) and isinstance(folder["metrics"]["diversity"], float)
    assert out["settings"]["diversity_features"] == "clip"

    assert main([*argv, "--metrics", "clip-i", "dino", "diversity"]) == 0
    table = capsys.readouterr().out
    assert "cats batch" in table and "diversity" in table
    assert "front stills (test view 0, colour panel) of seeds 0, 2" in table and "not done: seeds 1" in table


def test_one_image_has_no_diversity(tiny_encoder_dirs, toy_folders):
    one = [sorted(toy_folders["gen"].glob("*.png"))[0]]
    report = evaluate_groups(
        [ImageGroup("one", one)],
        sorted(toy_folders["refs"].glob("*.png")),
        EvaluateSettings(metrics=("clip-i", "diversity"), progress=False),
        encoders={"clip": HubImageEncoder("clip", tiny_encoder_dirs["clip"])},
    )
    row = report.rows[0]
    assert row.values["diversity"] is None and "at least 2" in row.notes["diversity"]
    assert row.values["clip-i"] is not None


def test_batch_folder_with_no_finished_seed_is_one_line(tmp_path, toy_folders, tiny_encoder_dirs, capsys):
    out = tmp_path / "batch"
    out.mkdir()
    records = [
        {"event": "batch", "seeds": "0-1", "settings": {"distributions": ["/x/cats.safetensors"]}},
        {"seed": 0, "status": "running", "attempt": 1},
        {"seed": 1, "status": "failed", "attempt": 1},
    ]
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rc = main(["evaluate", str(out), str(toy_folders["refs"]), *tiny_flags(tiny_encoder_dirs), "--metrics", "clip-i"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("dreamdist evaluate: error: ")
    assert str(out) in err and "no finished seed" in err and "1 failed, 1 running" in err
