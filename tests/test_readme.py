"""The README's CPU commands run as written (extracted from the README so the two cannot drift),
and the main job (`dreamdist demo`) writes every file its index lists."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from browser import browser_missing, open_page
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


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The README's main command, run once (fewer steps): (the folder it ran in, its result)."""
    cwd = tmp_path_factory.mktemp("readme")
    done = _run(sh_blocks()[0].split("&&")[1].strip() + " --steps 5", cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    return cwd, done


def test_demo_writes_every_file_its_index_lists(demo):
    cwd, done = demo
    out = cwd / "demo-out"
    listed = [line.split("\t")[0] for line in (out / "README.txt").read_text().splitlines() if "\t" in line]
    assert len(listed) >= 10 and (out / "index.html").exists()
    for rel in listed:
        path = out / rel
        assert path.exists(), rel
        if path.suffix == ".png":
            Image.open(path).verify()
        if path.is_dir():
            assert any(p.suffix == ".png" for p in path.iterdir())
    assert {"red.loss.png", "blue.loss.png"} <= set(listed)
    assert "proves the pipeline, not the quality" in done.stdout
    assert "stable-diffusion-2-1" in done.stdout and "launch.py" in done.stdout


@pytest.mark.skipif(bool(browser_missing()), reason=str(browser_missing()))
def test_demo_index_shows_references_loss_curves_and_samples_in_a_browser(demo, tmp_path):
    out = demo[0] / "demo-out"
    page = open_page(out / "index.html", screenshot=tmp_path / "index.png")
    assert page.outside(out) == [] and page.broken_images == []
    assert page.console_errors == [] and page.page_errors == []
    shown = {Path(unquote(urlparse(i["src"]).path)).relative_to(out).as_posix() for i in page.images}
    references = {p.relative_to(out).as_posix() for p in (out / "references").rglob("*.png")}
    assert references and references <= shown  # thumbnails, not only links
    assert {"red.loss.png", "blue.loss.png", "gamma-sweep/grid.png", "edited/grid.png", "mix/grid.png"} <= shown


def test_every_cpu_command_and_python_example_of_the_readme(demo):
    cwd = demo[0]
    for block in sh_blocks()[2:]:
        for cmd in [c for c in block.splitlines() if c.strip()]:
            result = _run(cmd, cwd)
            assert result.returncode == 0, f"{cmd}\n{result.stderr[-2000:]}"
    assert len(list((cwd / "samples-red").glob("*.png"))) >= 4

    python = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert python, "the README shows Python use"
    for code in python:  # "Use it from Python", on the files the commands above made
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"{code}\n{result.stderr[-2000:]}"
    assert (cwd / "blue.safetensors").is_file() and result.stdout.startswith("4 Distribution(")
