"""The `csbs` command line: parses arguments and calls the composition root."""

from __future__ import annotations

from typing import TYPE_CHECKING

from csbs.cli.main import main

if TYPE_CHECKING:
    from csbs.cli.main import app

__all__ = ["app", "main"]


def __getattr__(name: str) -> object:
    # `app`, the whole command tree, is built when first asked for (`csbs.cli.main`).
    if name == "app":
        import importlib

        return importlib.import_module("csbs.cli.main").app
    raise AttributeError(name)
