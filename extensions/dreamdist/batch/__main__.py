"""`python -m dreamdist.batch ...` runs the same code as `dreamdist batch ...` but skips the CLI's
quieting of transformers/diffusers (which imports them: seconds of start-up the batch runner does not
need). Handy in cluster job scripts; the tests use it to start a real runner process cheaply."""

from __future__ import annotations

import sys

from dreamdist.cli import batch as command
from dreamdist.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command(command, "python -m dreamdist.batch", sys.argv[1:]))
