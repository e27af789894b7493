"""The command line's tests: some drive it against a running worker (`cloud`)."""

from __future__ import annotations

from tests.tasks.conftest import cloud  # noqa: F401
