"""scripts/install_threestudio_extension.py: links the extension into a threestudio checkout and adds only
missing packages, never changing an installed one. pip itself is replaced by a recorder here; the real
pip run into threestudio's pinned stack is scripts/test_threestudio_stack.sh (CI's second lane)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "install_threestudio_extension.py"
# A threestudio v0.2.3 environment as its requirements make it (what matters to dreamdist's floors).
THREESTUDIO_ENV = {
    "torch": "2.0.1+cu118",
    "transformers": "4.28.1",
    "diffusers": "0.19.3",
    "safetensors": "0.3.3",
    "packaging": "23.1",
    "pillow": "10.0.1",
    "numpy": "1.24.4",
    "tqdm": "4.66.1",
    "omegaconf": "2.3.0",
    "filelock": "3.12.2",
    "matplotlib": "3.7.2",
    "lightning": "2.0.0",
    "huggingface-hub": "0.16.4",
    "tinycudann": "1.7",
}


def _load(monkeypatch):
    spec = importlib.util.spec_from_file_location("install_threestudio_extension", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def installer(monkeypatch):
    """The script as a module, with pip recorded instead of run and a chosen set of installed packages."""
    module = _load(monkeypatch)
    module.env = dict(THREESTUDIO_ENV)
    module.pip_calls = []

    def fake_pip(*args: str) -> None:
        call = list(args)
        if "-c" in args:  # keep what the constraints file said (it is deleted afterwards)
            call.append(Path(args[args.index("-c") + 1]).read_text())
        module.pip_calls.append(call)
        if args[0] == "install":
            module.env.update({Requirement(a).name: "9.9" for a in args[1:] if a[0].isalpha() and "/" not in a})
            module.env.setdefault("dreamdist", "0.1.0")
        else:
            for name in args[1:]:
                module.env.pop(name, None)

    monkeypatch.setattr(module, "_pip", fake_pip)
    monkeypatch.setattr(module, "installed_packages", lambda: dict(module.env))
    return module


def _fake_checkout(path: Path) -> Path:
    (path / "threestudio").mkdir(parents=True)
    (path / "threestudio" / "__init__.py").write_text('__version__ = "0.2.3"\n')
    (path / "launch.py").write_text("# launch\n")
    (path / "configs").mkdir()
    (path / "custom").mkdir()
    return path


def test_requirements_are_read_from_requirements_txt_and_match_the_package_metadata(monkeypatch):
    from importlib.metadata import requires

    module = _load(monkeypatch)
    ours = {str(r) for r in module.requirements()}
    installed = {str(Requirement(r)) for r in requires("dreamdist") if "extra ==" not in r}
    assert ours == installed  # pyproject's dependencies are requirements.txt (one home)
    floors = {r.name: str(r.specifier) for r in module.requirements()}
    assert floors["torch"] == ">=2.0" and floors["transformers"] == ">=4.28.1" and floors["diffusers"] == ">=0.19.3"


def test_plan_keeps_what_satisfies_adds_what_is_missing_and_names_what_is_too_old(installer):
    reqs = [Requirement(r) for r in ("torch>=2.0", "transformers>=4.28.1", "safetensors>=0.4", "trimesh>=4.0")]
    plan = installer.plan_packages(reqs, installer.env)
    assert plan.satisfied == [("torch", "2.0.1+cu118"), ("transformers", "4.28.1")]  # a CUDA local version counts
    assert [str(r) for r in plan.missing] == ["trimesh>=4.0"]
    assert plan.too_old == [("safetensors", "0.3.3", ">=0.4")]


def test_install_adds_only_missing_packages_with_every_installed_one_held(installer, tmp_path, capsys):
    installer.env["safetensors"] = "0.4.5"
    root = _fake_checkout(tmp_path / "threestudio")
    before = dict(installer.env)
    assert installer.main([str(root)]) == 0
    out = capsys.readouterr().out
    first, second = installer.pip_calls
    assert first[0] == "install" and "-c" in first
    assert first[first.index("-c") + 2 : -1] == ["trimesh>=4.0", "fast-simplification>=0.1.7"]
    held = set(first[-1].splitlines())
    assert held == {f"{name}=={version}" for name, version in before.items()}  # all of them, torch included
    assert second == ["install", "--disable-pip-version-check", "--no-deps", "-e", str(REPO)]
    assert all(installer.env[name] == version for name, version in before.items())
    assert "keeping torch 2.0.1+cu118" in out and "added packages: dreamdist, fast-simplification, trimesh" in out
    assert (root / "custom" / "threestudio-dreamdist").is_symlink()

    installer.pip_calls.clear()
    assert installer.main([str(root), "--uninstall"]) == 0
    assert installer.pip_calls == [
        ["uninstall", "--disable-pip-version-check", "-y", "dreamdist", "fast-simplification", "trimesh"]
    ]
    assert installer.env == before
    assert sorted(p.name for p in root.iterdir()) == ["configs", "custom", "launch.py", "threestudio"]
    assert list((root / "custom").iterdir()) == []


def test_too_old_package_is_refused_in_one_line_and_nothing_changes(installer, tmp_path, capsys):
    root = _fake_checkout(tmp_path / "threestudio")
    assert installer.main([str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "safetensors 0.3.3 is installed, dreamdist needs safetensors>=0.4" in err
    assert "Nothing was changed" in err
    assert installer.pip_calls == [] and list((root / "custom").iterdir()) == []
    assert not (root / installer.MANIFEST).exists()


def test_missing_torch_is_refused_not_installed(installer, tmp_path, capsys):
    installer.env["safetensors"] = "0.4.5"
    del installer.env["torch"]
    root = _fake_checkout(tmp_path / "threestudio")
    assert installer.main([str(root)]) == 2
    err = capsys.readouterr().err
    assert "torch is not installed" in err and "threestudio's torch" in err and installer.pip_calls == []


def test_dry_run_prints_the_plan_and_changes_nothing(installer, tmp_path, capsys):
    installer.env["safetensors"] = "0.4.5"
    root = _fake_checkout(tmp_path / "threestudio")
    assert installer.main([str(root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would link" in out and "would pip install trimesh>=4.0 fast-simplification>=0.1.7" in out
    assert "would pip install --no-deps -e" in out and "keeping diffusers 0.19.3" in out
    assert installer.pip_calls == [] and list((root / "custom").iterdir()) == []
    assert list((root / "configs").iterdir()) == []


def _run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args), "--no-pip"], capture_output=True, text=True)


@pytest.mark.parametrize("mode", ["link", "copy"])
def test_install_script_installs_and_uninstalls(tmp_path, mode):
    ts_root = _fake_checkout(tmp_path / "threestudio")
    (ts_root / "configs" / "dreamfusion-sd.yaml").write_text("stock: true\n")
    res = _run_script(ts_root, *(["--copy"] if mode == "copy" else []))
    assert res.returncode == 0, res.stderr
    ext = ts_root / "custom" / "threestudio-dreamdist"
    assert (ext / "__init__.py").is_file() and (ext / "prompt_processor.py").is_file()
    assert ext.is_symlink() == (mode == "link")
    for name in ("dreamdist-mvdream.yaml", "dreamdist-sd.yaml"):
        assert (ts_root / "configs" / name).read_text() == (REPO / "configs" / name).read_text()
    assert _run_script(ts_root, *(["--copy"] if mode == "copy" else [])).returncode == 0  # idempotent
    res = _run_script(ts_root, "--uninstall")
    assert res.returncode == 0, res.stderr
    assert not ext.exists() and not ext.is_symlink()
    assert not (ts_root / "configs" / "dreamdist-sd.yaml").exists()
    assert (ts_root / "configs" / "dreamfusion-sd.yaml").read_text() == "stock: true\n"  # others' files kept
    assert sorted(p.name for p in ts_root.iterdir()) == ["configs", "custom", "launch.py", "threestudio"]


def test_install_script_refusals(tmp_path):
    res = _run_script(tmp_path)
    assert res.returncode == 2 and "not a threestudio checkout" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    ts_root = _fake_checkout(tmp_path / "threestudio")
    (ts_root / "custom" / "threestudio-dreamdist").mkdir()
    (ts_root / "custom" / "threestudio-dreamdist" / "mine.py").write_text("x = 1\n")
    res = _run_script(ts_root)
    assert res.returncode == 2 and "--force" in res.stderr
    assert (ts_root / "custom" / "threestudio-dreamdist" / "mine.py").exists()
