"""The `csbs` command line: parses arguments and calls the composition root."""

from __future__ import annotations

from csbs.cli.main import app, main

__all__ = ["app", "main"]
