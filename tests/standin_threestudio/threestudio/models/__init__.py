"""STAND-IN for threestudio.models (tests only)."""

from . import prompt_processors  # noqa: F401
