"""The package version, in one place (imported by the package and the User-Agent)."""

__version__ = "0.1.0"
