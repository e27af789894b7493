from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.runtime import Env, make_env
from tests.tasks.conftest import cloud  # noqa: F401  (the lean DELETE path's tests)


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Iterator[Env]:
    e = make_env(tmp_path, db_url)
    try:
        yield e
    finally:
        e.client.close()
        e.runtime.close()
