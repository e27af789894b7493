from __future__ import annotations

from collections.abc import Iterator

import pytest

from csbs import migrations
from csbs.db.engine import create_engine
from csbs.domain.clock import FrozenClock
from csbs.queue import QueueConfig, TaskStore


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def make_store(db_url: str, clock: FrozenClock) -> Iterator[object]:
    engines = []

    def make(**config: object) -> TaskStore:
        engine = create_engine(db_url)
        engines.append(engine)
        migrations.upgrade(engine)
        return TaskStore(engine, clock, QueueConfig(**config))  # type: ignore[arg-type]

    yield make
    for e in engines:
        e.dispose()
