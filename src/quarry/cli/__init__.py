"""The ``quarry`` command line."""

from quarry.cli.main import app, main

__all__ = ["app", "main"]
