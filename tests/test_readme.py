"""The README's CPU commands run as written (extracted from the README so the two cannot drift),
and the main job (`dreamdist demo`) writes every file its index lists."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def sh_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README, flags=re.S)


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}


def _run(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    args = shlex.split(cmd)
    if args[0].startswith(".venv/bin/"):
        args[0] = str(BIN / Path(args[0]).name)
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


def test_readme_has_the_two_setup_commands_and_ci_uses_the_test_one():
    blocks = sh_blocks()
    assert blocks[0].strip() == "bash scripts/setup.sh && .venv/bin/dreamdist demo --out demo-out"
    assert blocks[1].strip() == "bash scripts/setup.sh && .venv/bin/python -m pytest -q"
    assert blocks[1].strip() in (ROOT / ".ci" / "run").read_text()
    lane = re.findall(r"```console\n(.*?)```", README, flags=re.S)[0].strip()
    assert lane == "bash scripts/test_threestudio_stack.sh" and lane in (ROOT / ".ci" / "run").read_text()


def test_demo_and_every_cpu_command_of_the_readme(tmp_path):
    demo = sh_blocks()[0].split("&&")[1].strip() + " --steps 5"  # the README's command, fewer steps
    done = _run(demo, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "demo-out"
    listed = [line.split("\t")[0] for line in (out / "README.txt").read_text().splitlines() if "\t" in line]
    assert len(listed) >= 8 and (out / "index.html").exists()
    for rel in listed:
        path = out / rel
        assert path.exists(), rel
        if path.suffix == ".png":
            Image.open(path).verify()
        if path.is_dir():
            assert any(p.suffix == ".png" for p in path.iterdir())
    assert "proves the pipeline, not the quality" in done.stdout
    assert "stable-diffusion-2-1" in done.stdout and "launch.py" in done.stdout

    for block in sh_blocks()[2:]:
        for cmd in [c for c in block.splitlines() if c.strip()]:
            result = _run(cmd, tmp_path)
            assert result.returncode == 0, f"{cmd}\n{result.stderr[-2000:]}"
    assert len(list((tmp_path / "samples-red").glob("*.png"))) >= 4

    python = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert python, "the README shows Python use"
    for code in python:  # "Use it from Python", on the files the commands above made
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, f"{code}\n{result.stderr[-2000:]}"
    assert (tmp_path / "blue.safetensors").is_file() and result.stdout.startswith("4 Distribution(")
