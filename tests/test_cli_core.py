"""Core CLI commands, driven in-process through dreamdist.cli.main."""

from __future__ import annotations

import json

from dreamdist.cli import main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("train", "sample", "inspect", "make-tiny-model", "demo", "batch", "export-mesh"):
        assert name in out


def test_make_tiny_model_loads_with_stable_diffusion_pipeline(tmp_path, capsys):
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "m"
    assert main(["make-tiny-model", str(out), "--prediction-type", "epsilon"]) == 0
    pipe = StableDiffusionPipeline.from_pretrained(out)
    assert pipe.scheduler.config.prediction_type == "epsilon"
    assert pipe.text_encoder.config.eos_token_id == pipe.tokenizer.eos_token_id
    pad = pipe.tokenizer.convert_tokens_to_ids("!")
    assert pipe.text_encoder.config.pad_token_id == pipe.tokenizer.pad_token_id == pad
    assert main(["make-tiny-model", str(out)]) == 2  # refuses to clobber
    assert "--force" in capsys.readouterr().err


def test_inspect_reports_metadata_sigma_and_nearest_tokens(tiny_distribution, capsys):
    assert main(["inspect", str(tiny_distribution), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_prompts"] == 4 and report["num_tokens"] == 2 and report["image_count"] == 0  # numbers, not text
    tokens = [p["token"] for p in report["positions"][:4]]
    assert tokens == ["<|startoftext|>", "<learned>", "<learned>", "<|endoftext|>"]
    assert report["positions"][0]["sigma_mean"] == 0.0  # SOS is the same in every prompt
    assert report["positions"][1]["sigma_mean"] > 0
    assert len(report["nearest_tokens"]) == 2 and len(report["nearest_tokens"][0]["tokens"]) == 3
    assert main(["inspect", str(tiny_distribution)]) == 0
    assert "nearest vocabulary tokens" in capsys.readouterr().out


def test_inspect_missing_file_is_one_line_error(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "none.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "none.safetensors: no such distribution file" in err
