"""The package version, in a leaf module: every layer may record it without importing the package root."""

__version__ = "0.1.0"
