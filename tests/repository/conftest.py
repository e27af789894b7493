"""Fixtures for the repository tests: its tables on both engines, local and S3 stores."""

from __future__ import annotations

import os
import pathlib
import random
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from csbs.blobstore import BlobStore, LocalStore
from csbs.db.engine import create_engine
from csbs.domain.clock import FrozenClock
from csbs.repository import Repository, RepositorySettings, schema
from tests.blobstore.conftest import moto_endpoint, s3_store_factory

__all__ = ["moto_endpoint", "s3_store_factory"]

SMALL_CHUNK = 64 * 1024  # bytes; keeps images small while exercising many chunks
MASTER_KEY = bytes(range(32))

RepoFactory = Callable[..., Repository]


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """An engine on a fresh database holding the repository's tables."""
    made = create_engine(db_url)
    schema.metadata.create_all(made)
    yield made
    made.dispose()


@pytest.fixture(params=["local", "s3"])
def blob_store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[BlobStore]:
    """An empty local or S3 (moto) store."""
    if request.param == "local":
        made: BlobStore = LocalStore(tmp_path / "blobs")
    else:
        made = request.getfixturevalue("s3_store_factory")()
    yield made
    made.close()


@pytest.fixture
def local_store(tmp_path: pathlib.Path) -> BlobStore:
    return LocalStore(tmp_path / "blobs")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def make_repo(engine: sa.Engine, clock: FrozenClock) -> RepoFactory:
    """Build a Repository on the test engine; keyword arguments go to RepositorySettings."""

    def make(store: BlobStore, **settings: object) -> Repository:
        options: dict[str, object] = {
            "chunk_size": SMALL_CHUNK,
            "threads": 2,
            "io_threads": 4,
            "sweep_grace_seconds": 60.0,
            **settings,
        }
        return Repository(engine, store, clock, MASTER_KEY, RepositorySettings(**options))  # type: ignore[arg-type]

    return make


def write_image(
    path: pathlib.Path,
    size: int,
    *,
    seed: int = 0,
    extents: list[tuple[int, int, str]] | None = None,
) -> pathlib.Path:
    """A sparse image of `size` bytes with extents (offset, length, kind) written into it.

    kind: "random", "text" (compressible), "repeat" (one random 64 KiB block over and
    over, so chunks dedup within the image), "zeros" (written zeros: a non-sparse hole).
    Without extents: a default mix over the image.
    """
    rng = random.Random(seed)
    block = rng.randbytes(SMALL_CHUNK)
    if extents is None:
        q = size // 8
        extents = [
            (0, q, "random"),
            (2 * q, q, "text"),
            (3 * q + 100, q // 2, "repeat"),
            (5 * q, q // 3, "zeros"),
            (6 * q + 7, q, "random"),
            (size - 5000, 4000, "random"),
        ]
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length, kind in extents:
            f.seek(offset)
            if kind == "random":
                f.write(rng.randbytes(length))
            elif kind == "text":
                line = f"line {seed} of compressible text for csbs\n".encode()
                f.write((line * (length // len(line) + 1))[:length])
            elif kind == "repeat":
                f.write((block * (length // len(block) + 1))[:length])
            else:
                f.write(bytes(length))
    return path


def change_image(path: pathlib.Path, offsets: list[int], *, seed: int) -> None:
    """Overwrite 4 KiB at each offset with random bytes."""
    rng = random.Random(seed)
    with open(path, "r+b") as f:
        for offset in offsets:
            f.seek(offset)
            f.write(rng.randbytes(4096))


def same_file(a: os.PathLike[str] | str, b: os.PathLike[str] | str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True
