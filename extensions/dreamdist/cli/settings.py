"""Command-line options made from a settings dataclass (``TrainConfig``, ``FinetuneConfig``): each
field's metadata (help, group, metavar, choices, flag spelling) is the one home of its option, and a
finished run is reported the same way by every training command."""

from __future__ import annotations

import argparse
import typing
from dataclasses import Field, fields
from typing import Any


def flag(setting: Field) -> str:
    """The option spelling of a settings field: ``--num-prompts``, or its metadata's ``flag``."""
    return setting.metadata.get("flag", "--" + setting.name.replace("_", "-"))


def flags(config_cls: type) -> dict[str, str]:
    """{field name: its option}, for turning a ``SettingError`` about a field into the user's words."""
    return {setting.name: flag(setting) for setting in fields(config_cls)}


def add_setting(group: argparse._ArgumentGroup, setting: Field, hint: Any) -> None:
    """One option from a field's metadata. A switch that turns a default-on setting off, a
    ``negatable`` switch (``--flip`` / ``--no-flip``) and a default the help text explains leave the
    value out when not given (the config's own default then applies)."""
    meta = setting.metadata
    options: dict[str, Any] = {"dest": setting.name, "help": meta["help"]}
    if hint is bool and meta.get("negatable"):
        options.update(action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
    elif hint is bool:
        options.update(
            action="store_false" if setting.default else "store_true",
            default=argparse.SUPPRESS if setting.default else False,
        )
    else:
        types = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]  # int | None -> int
        options.update(
            type=meta.get("parse", types[0]),
            default=setting.default if meta.get("show_default", True) else argparse.SUPPRESS,
        )
        options.update({key: meta[key] for key in ("metavar", "choices") if key in meta})
    group.add_argument(flag(setting), **options)


def add_settings(
    parser: argparse.ArgumentParser, config_cls: type, groups: dict[str, str]
) -> dict[str, argparse._ArgumentGroup]:
    """Every field of ``config_cls`` as an option in the group its metadata names; returns the groups
    (by key) so a command can add its own options to them."""
    made = {key: parser.add_argument_group(title) for key, title in groups.items()}
    hints = typing.get_type_hints(config_cls)
    for setting in fields(config_cls):
        add_setting(made[setting.metadata["group"]], setting, hints[setting.name])
    return made


def given_settings(args: argparse.Namespace, config_cls: type) -> dict[str, Any]:
    """The fields the command line set (or showed a default for)."""
    return {s.name: getattr(args, s.name) for s in fields(config_cls) if hasattr(args, s.name)}


def print_result(result: Any, what: str) -> None:
    """What a finished run wrote and how its loss ended."""
    done = f"{result.step - result.resumed_from} steps"
    if result.resumed_from:
        done += f" (resumed at {result.resumed_from})"
    print(f"wrote {result.out} ({what}, {result.image_count} images, {done}, {result.seconds:.1f}s)")
    if result.diffusion_losses:
        tail = result.diffusion_losses[-min(50, len(result.diffusion_losses)) :]
        print(f"final diffusion loss (mean of last {len(tail)} steps): {sum(tail) / len(tail):.4f}")
