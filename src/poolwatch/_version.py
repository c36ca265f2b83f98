"""The package version (single source, read by the exporter's build_info too)."""

__version__ = "0.1.0"
