"""The command line's tests: some drive it against a running worker (`cloud`)."""

from __future__ import annotations

from tests.tasks.conftest import cloud, slow_sweep_cloud  # noqa: F401
