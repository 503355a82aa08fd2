"""Convert threestudio's mesh export (TRIAL/save/itN-export/model.obj with model.mtl and
texture_kd.jpg, or, with system.exporter.fmt=obj, an OBJ with vertex colours with or without UVs) into a
GLB that Unity, Unreal, Godot and Blender load as-is: +Y up, metres, origin at the bottom centre, the
texture embedded or the vertex colours as COLOR_0, normals present. Optionally decimate to a face budget
and write LODs. Colour that cannot be carried over is refused or warned about, never turned white."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dreamdist.cli import ExampleHelpFormatter

    parser.formatter_class = ExampleHelpFormatter
    parser.add_argument(
        "input", type=Path, help="threestudio's model.obj (its .mtl and texture next to it, or vertex colours in it)"
    )
    parser.add_argument("output", type=Path, help="GLB to write (LODs go next to it as NAME_LOD1.glb ...)")
    parser.add_argument("--up", default="+Z", help="the input's up axis, turned to glTF's +Y (threestudio: +Z)")
    parser.add_argument(
        "--front",
        default=None,
        help="the input's front axis, turned to glTF's +Z (threestudio's front view looks "
        "from +X); default: only the up axis is turned",
    )
    parser.add_argument(
        "--height",
        type=float,
        default=None,
        help="scale uniformly to this height in metres (default: 1 scene unit = 1 m)",
    )
    parser.add_argument(
        "--origin",
        default="bottom-center",
        choices=["bottom-center", "center", "keep"],
        help="where the GLB's origin goes: bottom centre of the bounding box (stands on the "
        "floor), its centre, or where the input had it",
    )
    parser.add_argument(
        "--max-faces",
        type=int,
        default=None,
        help="decimate (quadric, UVs and vertex colours kept) to at most this many triangles",
    )
    parser.add_argument(
        "--lods", type=int, default=1, help="write LOD0..LOD{N-1}, each with half the previous face budget"
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def run(args: argparse.Namespace) -> int:
    from dreamdist.mesh_export import export_mesh

    report = export_mesh(
        args.input,
        args.output,
        up=args.up,
        front=args.front,
        height=args.height,
        origin=args.origin,
        max_faces=args.max_faces,
        lods=args.lods,
        force=args.force,
    )
    if args.json:  # the text report has them as "warning" lines
        for warning in report.warnings:
            print(f"dreamdist export-mesh: warning: {warning}", file=sys.stderr)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0
