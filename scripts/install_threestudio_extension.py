#!/usr/bin/env python
"""Install the dreamdist extension into a threestudio checkout, or undo it.

    python scripts/install_threestudio_extension.py /path/to/threestudio            # link (default)
    python scripts/install_threestudio_extension.py /path/to/threestudio --copy     # copy instead
    python scripts/install_threestudio_extension.py /path/to/threestudio --uninstall

What it does:
  * custom/threestudio-dreamdist  ->  THREESTUDIO/custom/threestudio-dreamdist (symlink or copy);
    threestudio's launch.py imports every folder in custom/ before it parses the config.
  * configs/dreamdist-mvdream.yaml, configs/dreamdist-sd.yaml  ->  THREESTUDIO/configs/ (same way).
  * `pip install -e` this repo (the dreamdist package) into the Python running this script, which
    should be threestudio's environment (skip with --no-pip).
  * Records what it created in THREESTUDIO/.dreamdist-install.json; --uninstall removes exactly that
    (and `pip uninstall dreamdist` only if this script installed it).

It never overwrites a file or folder it did not create, unless --force is given.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXTENSION = REPO / "custom" / "threestudio-dreamdist"
CONFIGS = [REPO / "configs" / "dreamdist-mvdream.yaml", REPO / "configs" / "dreamdist-sd.yaml"]
MANIFEST = ".dreamdist-install.json"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


class Refusal(Exception):
    pass


def _targets(root: Path) -> list[tuple[Path, Path]]:
    return [(EXTENSION, root / "custom" / EXTENSION.name)] + [(src, root / "configs" / src.name) for src in CONFIGS]


def _is_ours(src: Path, dst: Path, recorded: set[str]) -> bool:
    """dst is a link to src, or a copy this script recorded (or identical to src)."""
    if dst.is_symlink():
        return Path(os.path.realpath(dst)) == src.resolve()
    if str(dst) in recorded:
        return True
    if dst.is_file() and src.is_file():
        return filecmp.cmp(src, dst, shallow=False)
    return False


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _load_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass
    return {"created": [], "pip_installed": False}


def _save_manifest(root: Path, manifest: dict) -> None:
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, root / MANIFEST)


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    print("+", " ".join(cmd))
    subprocess.run(cmd, check=True)


def _dreamdist_installed() -> bool:
    res = subprocess.run([sys.executable, "-c", "import dreamdist"], capture_output=True, cwd=os.sep)
    return res.returncode == 0


def install(root: Path, copy: bool, force: bool, pip: bool) -> None:
    manifest = _load_manifest(root)
    recorded = set(manifest["created"])
    for src, dst in _targets(root):
        if not src.exists():
            raise Refusal(f"{src}: missing from this dreamdist checkout")
        if dst.exists() or dst.is_symlink():
            if not (_is_ours(src, dst, recorded) or force):
                raise Refusal(f"{dst} exists and was not installed by this script; move it away or pass --force")
            _remove(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            if src.is_dir():
                shutil.copytree(src, dst, ignore=IGNORE)
            else:
                shutil.copy2(src, dst)
        else:
            dst.symlink_to(src.resolve(), target_is_directory=src.is_dir())
        recorded.add(str(dst))
        print(f"{'copied' if copy else 'linked'} {dst}")
    manifest["created"] = sorted(recorded)
    if pip:
        already = _dreamdist_installed()
        _pip("install", "-e", str(REPO))
        manifest["pip_installed"] = manifest.get("pip_installed", False) or not already
    _save_manifest(root, manifest)
    print(
        f"done. Run from {root}:\n  python launch.py --config configs/dreamdist-mvdream.yaml --train --gpu 0 "
        "system.prompt_processor.distribution=path/to/dist.safetensors seed=3"
    )


def uninstall(root: Path, pip: bool) -> None:
    manifest = _load_manifest(root)
    recorded = set(manifest["created"])
    for src, dst in _targets(root):
        if dst.exists() or dst.is_symlink():
            if _is_ours(src, dst, recorded):
                _remove(dst)
                print(f"removed {dst}")
            else:
                print(f"kept {dst} (not installed by this script)", file=sys.stderr)
    if pip and manifest.get("pip_installed"):
        _pip("uninstall", "-y", "dreamdist")
    (root / MANIFEST).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("threestudio", type=Path, help="path to a threestudio checkout (has launch.py)")
    parser.add_argument("--copy", action="store_true", help="copy the files instead of linking them")
    parser.add_argument("--uninstall", action="store_true", help="remove what an earlier install created")
    parser.add_argument("--force", action="store_true", help="replace existing files this script did not create")
    parser.add_argument("--no-pip", action="store_true", help="do not pip (un)install the dreamdist package")
    args = parser.parse_args(argv)
    root = args.threestudio.resolve()
    try:
        if not ((root / "launch.py").is_file() and (root / "threestudio" / "__init__.py").is_file()):
            raise Refusal(f"{root}: not a threestudio checkout (no launch.py and threestudio/ package)")
        if args.uninstall:
            uninstall(root, pip=not args.no_pip)
        else:
            install(root, copy=args.copy, force=args.force, pip=not args.no_pip)
    except Refusal as exc:
        print(f"install_threestudio_extension: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"install_threestudio_extension: {' '.join(exc.cmd)} failed (exit {exc.returncode})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
