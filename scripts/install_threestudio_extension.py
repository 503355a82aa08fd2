#!/usr/bin/env python
"""Install the dreamdist extension into a threestudio checkout and its Python environment, or undo it.

    python scripts/install_threestudio_extension.py /path/to/threestudio             # link (default)
    python scripts/install_threestudio_extension.py /path/to/threestudio --dry-run   # only say what it would do
    python scripts/install_threestudio_extension.py /path/to/threestudio --copy      # copy instead of linking
    python scripts/install_threestudio_extension.py /path/to/threestudio --uninstall

Run it with threestudio's Python (the environment active). What it does:
  * custom/threestudio-dreamdist  ->  THREESTUDIO/custom/threestudio-dreamdist (symlink or copy);
    threestudio's launch.py imports every folder in custom/ before it parses the config.
  * configs/dreamdist-mvdream.yaml, configs/dreamdist-sd.yaml  ->  THREESTUDIO/configs/ (same way).
  * Python packages, without ever upgrading, downgrading or replacing one that is installed (threestudio's
    tiny-cuda-nn and nerfacc are compiled against its torch): each of dreamdist's requirements
    (requirements.txt) that is installed must already satisfy it, else the script refuses, naming the
    package, the version found and the version needed, and changes nothing; the missing ones are
    installed with every installed package held at its version (a pip constraints file); then
    dreamdist itself with `pip install --no-deps -e`. Skip all of this with --no-pip.
  * Records what it created and which packages it added in THREESTUDIO/.dreamdist-install.json;
    --uninstall removes exactly that.

It never overwrites a file or folder it did not create, unless --force is given.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "requirements.txt"
EXTENSION = REPO / "custom" / "threestudio-dreamdist"
CONFIGS = [REPO / "configs" / "dreamdist-mvdream.yaml", REPO / "configs" / "dreamdist-sd.yaml"]
MANIFEST = ".dreamdist-install.json"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")
# Installed by the user's own recipe (a CUDA build matching their compiled extensions), never by us.
USER_INSTALLS = {"torch": "install threestudio's torch (a CUDA build) first, following threestudio's README"}


class Refusal(Exception):
    pass


# ------------------------------------------------------------------------------------------ packages


def requirements(path: Path = REQUIREMENTS) -> list[Requirement]:
    """dreamdist's runtime requirements: requirements.txt is their one home (pyproject reads it too)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def installed_packages() -> dict[str, str]:
    """{canonical name: version} of the environment running this script, read afresh."""
    importlib.invalidate_caches()
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), dist.version)
    return found


@dataclass
class PackagePlan:
    satisfied: list[tuple[str, str]] = field(default_factory=list)  # (name, installed version)
    missing: list[Requirement] = field(default_factory=list)
    too_old: list[tuple[str, str, str]] = field(default_factory=list)  # (name, found, needed)


def plan_packages(reqs: list[Requirement], installed: dict[str, str]) -> PackagePlan:
    plan = PackagePlan()
    for req in reqs:
        name = canonicalize_name(req.name)
        found = installed.get(name)
        if found is None:
            plan.missing.append(req)
        elif req.specifier.contains(found, prereleases=True):
            plan.satisfied.append((req.name, found))
        else:
            plan.too_old.append((req.name, found, str(req.specifier)))
    return plan


def check_plan(plan: PackagePlan) -> None:
    """Refuse, in one line and before changing anything, what must not be installed by us."""
    if plan.too_old:
        found = "; ".join(
            f"{name} {have} is installed, dreamdist needs {name}{need}" for name, have, need in plan.too_old
        )
        raise Refusal(
            f"{found}. Nothing was changed: upgrade it yourself if your threestudio environment "
            "allows it (see custom/threestudio-dreamdist/README.md), or install with --no-pip"
        )
    for req in plan.missing:
        hint = USER_INSTALLS.get(canonicalize_name(req.name))
        if hint:
            raise Refusal(f"{req.name} is not installed in {sys.prefix}: {hint}. Nothing was changed")


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def install_packages(plan: PackagePlan) -> list[str]:
    """Install what is missing, holding every installed package at its version; return what was added."""
    before = installed_packages()
    if plan.missing:
        with tempfile.TemporaryDirectory(prefix="dreamdist-install-") as tmp:
            constraints = Path(tmp) / "installed.txt"
            constraints.write_text(
                "".join(f"{name}=={ver}\n" for name, ver in sorted(before.items()) if name != "dreamdist")
            )
            _pip("install", "--disable-pip-version-check", "-c", str(constraints), *map(str, plan.missing))
    _pip("install", "--disable-pip-version-check", "--no-deps", "-e", str(REPO))
    after = installed_packages()
    changed = sorted(
        f"{n} {before[n]} -> {after.get(n)}" for n in before if n != "dreamdist" and after.get(n) != before[n]
    )
    if changed:  # the constraints make this impossible; say so loudly if pip ever does it anyway
        print(f"warning: pip changed installed packages: {', '.join(changed)}", file=sys.stderr)
    return sorted(set(after) - set(before))


# ------------------------------------------------------------------------------------------ files


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
    return {"created": [], "pip_added": []}


def _save_manifest(root: Path, manifest: dict) -> None:
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, root / MANIFEST)


def _check_targets(root: Path, force: bool, recorded: set[str]) -> None:
    for src, dst in _targets(root):
        if not src.exists():
            raise Refusal(f"{src}: missing from this dreamdist checkout")
        if (dst.exists() or dst.is_symlink()) and not (_is_ours(src, dst, recorded) or force):
            raise Refusal(f"{dst} exists and was not installed by this script; move it away or pass --force")


def _place(src: Path, dst: Path, copy: bool) -> None:
    if dst.exists() or dst.is_symlink():
        _remove(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        if src.is_dir():
            shutil.copytree(src, dst, ignore=IGNORE)
        else:
            shutil.copy2(src, dst)
    else:
        dst.symlink_to(src.resolve(), target_is_directory=src.is_dir())


# ------------------------------------------------------------------------------------------ commands


def install(root: Path, copy: bool, force: bool, pip: bool, dry_run: bool) -> None:
    manifest = _load_manifest(root)
    recorded = set(manifest["created"])
    _check_targets(root, force, recorded)
    plan = plan_packages(requirements(), installed_packages()) if pip else None
    if plan is not None:
        check_plan(plan)
    if plan is not None:
        for name, version in plan.satisfied:
            print(f"keeping {name} {version} (installed, satisfies dreamdist)")
    if dry_run:
        for _, dst in _targets(root):
            print(f"would {'copy' if copy else 'link'} {dst}")
        if plan is not None:
            if plan.missing:
                print(
                    f"would pip install {' '.join(map(str, plan.missing))}, every installed package held at its version"
                )
            print(f"would pip install --no-deps -e {REPO}")
        return
    for src, dst in _targets(root):
        _place(src, dst, copy)
        recorded.add(str(dst))
        print(f"{'copied' if copy else 'linked'} {dst}")
    manifest["created"] = sorted(recorded)
    _save_manifest(root, manifest)
    if plan is not None:
        added = install_packages(plan)
        manifest["pip_added"] = sorted(set(manifest.get("pip_added", [])) | set(added))
        _save_manifest(root, manifest)
        print(f"added packages: {', '.join(added) if added else 'none'}; nothing installed was changed")
    print(
        f"done. Run from {root}:\n  python launch.py --config configs/dreamdist-mvdream.yaml --train --gpu 0 "
        "system.prompt_processor.distribution=path/to/dist.safetensors seed=3"
    )


def uninstall(root: Path, pip: bool, dry_run: bool) -> None:
    manifest = _load_manifest(root)
    recorded = set(manifest["created"])
    prefix = "would remove" if dry_run else "removed"
    for src, dst in _targets(root):
        if dst.exists() or dst.is_symlink():
            if _is_ours(src, dst, recorded):
                if not dry_run:
                    _remove(dst)
                print(f"{prefix} {dst}")
            else:
                print(f"kept {dst} (not installed by this script)", file=sys.stderr)
    added = manifest.get("pip_added", []) + (["dreamdist"] if manifest.get("pip_installed") else [])  # pre-0.2 manifest
    if pip and added:
        if dry_run:
            print(f"would pip uninstall {' '.join(added)}")
        else:
            _pip("uninstall", "--disable-pip-version-check", "-y", *added)
    if not dry_run:
        (root / MANIFEST).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("threestudio", type=Path, help="path to a threestudio checkout (has launch.py)")
    parser.add_argument("--copy", action="store_true", help="copy the files instead of linking them")
    parser.add_argument("--uninstall", action="store_true", help="remove what an earlier install created or added")
    parser.add_argument("--dry-run", action="store_true", help="print what would be done and change nothing")
    parser.add_argument("--force", action="store_true", help="replace existing files this script did not create")
    parser.add_argument("--no-pip", action="store_true", help="link/copy only: install or remove no Python package")
    args = parser.parse_args(argv)
    root = args.threestudio.resolve()
    try:
        if not ((root / "launch.py").is_file() and (root / "threestudio" / "__init__.py").is_file()):
            raise Refusal(f"{root}: not a threestudio checkout (no launch.py and threestudio/ package)")
        if args.uninstall:
            uninstall(root, pip=not args.no_pip, dry_run=args.dry_run)
        else:
            install(root, copy=args.copy, force=args.force, pip=not args.no_pip, dry_run=args.dry_run)
    except Refusal as exc:
        print(f"install_threestudio_extension: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"install_threestudio_extension: {' '.join(exc.cmd)} failed (exit {exc.returncode})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
