"""STAND-IN for threestudio.utils (tests only)."""
