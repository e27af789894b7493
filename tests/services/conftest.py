"""Fixtures of the service tests: a runtime on each engine, and one on PostgreSQL only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.runtime import Env, make_env


def _env(tmp_path: Path, url: str) -> Iterator[Env]:
    e = make_env(tmp_path, url)
    yield e
    e.client.close()
    e.runtime.close()


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Iterator[Env]:
    yield from _env(tmp_path, db_url)


@pytest.fixture
def pg_env(tmp_path: Path, pg_url: str) -> Iterator[Env]:
    yield from _env(tmp_path, pg_url)
