"""kdcli's version, in the one place pyproject.toml reads it from; this module imports nothing."""

__version__ = "0.2.0"
