"""STAND-IN for threestudio.models.prompt_processors (tests only)."""

from . import base  # noqa: F401
