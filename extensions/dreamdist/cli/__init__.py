"""`dreamdist` command line: one sub-command per module in this package.

Each command module defines ``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported
only when their command runs, so ``dreamdist --help`` answers without importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType
from typing import Sequence

from dreamdist.utils.errors import DreamdistError

# name -> (module under dreamdist.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "end-to-end demo on the embedded tiny model (no downloads, CPU, minutes)"),
    "train": ("train", "learn a prompt distribution from a folder of reference images"),
    "sample": ("sample", "sample images from one or more distributions (gamma, templates, mixing)"),
    "finetune": ("finetune", "stage 2: fine-tune the UNet on the references, conditioned on a frozen distribution"),
    "sweep-gamma": ("sweep_gamma", "Figure-5-style grid: the same seeds across gamma values"),
    "mix": ("mix", "Figure-6-style interpolation row between two distributions"),
    "inspect": ("inspect", "show a distribution file's metadata, sigma summary and nearest tokens"),
    "evaluate": ("evaluate", "score generated images against references: FID, CLIP-I, DINO, density, coverage"),
    "make-tiny-model": ("make_tiny_model", "write a tiny random-weight SD-2-architecture model"),
    "batch": ("batch", "train many 3D assets (one per seed) with threestudio, resumable"),
    "export-mesh": ("export_mesh", "convert a threestudio OBJ export to a game-ready GLB"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every command's --help: "(default: X)" only where X says something. Not for None, False or an
    empty value (the help text says in words what happens then), nor for required options."""

    def _get_help_string(self, action: argparse.Action) -> str:
        d = action.default
        if action.required or d is None or d is False or (isinstance(d, (str, list, tuple)) and not d):
            return action.help or ""
        return super()._get_help_string(action)


class ExampleHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """HelpFormatter that also keeps the description's example commands as written."""


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<16} {help_}" for name, (_, help_) in COMMANDS.items())
    return argparse.ArgumentParser(
        prog="dreamdist",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Learn a prompt distribution from reference images and sample new 2D images "
        "and 3D assets in their style.",
        epilog=f"commands:\n{lines}\n\nRun `dreamdist COMMAND --help` for a command's options.",
        usage="dreamdist [-h] [--version] COMMAND [options]",
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    if argv[0] == "--version":
        from dreamdist.version import __version__

        print(f"dreamdist {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        top.error(f"unknown command {name!r}; choose from: {', '.join(COMMANDS)}")
    module_name, help_ = COMMANDS[name]
    from dreamdist.utils.quiet import quiet_libraries

    quiet_libraries()
    return run_command(importlib.import_module(f"dreamdist.cli.{module_name}"), f"dreamdist {name}", argv[1:], help_)


def run_command(module: ModuleType, prog: str, argv: Sequence[str], help_: str = "") -> int:
    """Parse ``argv`` with the command module's options and run it: bad input is one line on stderr
    and exit status 2, Ctrl-C is 130. Shared by ``dreamdist COMMAND`` and ``python -m dreamdist.batch``."""
    parser = argparse.ArgumentParser(
        prog=prog, description=(module.__doc__ or help_).strip(), formatter_class=HelpFormatter
    )
    module.add_arguments(parser)
    args = parser.parse_args(list(argv))
    try:
        return int(module.run(args) or 0)
    except DreamdistError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
