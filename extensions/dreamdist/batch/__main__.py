"""`python -m dreamdist.batch ...` runs the same code as `dreamdist batch ...` but skips the CLI's
quieting of transformers/diffusers (which imports them: seconds of start-up the batch runner does not
need). Handy in cluster job scripts; the tests use it to start a real runner process cheaply."""

from __future__ import annotations

import argparse
import sys

from dreamdist.cli import batch as command
from dreamdist.errors import DreamdistError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dreamdist.batch", description=command.__doc__)
    command.add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return int(command.run(args) or 0)
    except DreamdistError as exc:
        print(f"dreamdist batch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dreamdist batch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
