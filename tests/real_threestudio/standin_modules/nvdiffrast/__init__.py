"""STAND-IN (import-only) for nvdiffrast."""
