"""STAND-IN for threestudio.systems (tests only)."""

from . import base  # noqa: F401
