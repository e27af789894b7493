"""Blob names of repository objects."""

from __future__ import annotations

import pytest

from csbs.blobstore import base
from csbs.repository import layout

CHUNK = "ab" + "0123456789abcdef" * 3 + "fedcba9876543210"[:14]
PROJECT = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
BACKUP = "7d444840-9dc0-11d1-b245-5ffdce74fad2"


def test_chunk_name() -> None:
    assert len(CHUNK) == 64
    name = layout.chunk_name(PROJECT, CHUNK, 7)
    assert name == f"projects/{PROJECT}/chunks/ab/{CHUNK}.7"
    assert base.validate_name(name) == name
    assert name.startswith(layout.chunks_prefix(PROJECT))
    assert name.startswith(layout.project_prefix(PROJECT))
    assert layout.parse_chunk_name(name) == layout.ChunkBlob(PROJECT, CHUNK, 7)


def test_generations_give_distinct_names() -> None:
    names = {layout.chunk_name(PROJECT, CHUNK, g) for g in (0, 1, 2, 10, 2**40)}
    assert len(names) == 5
    for generation in (0, 1, 2, 10, 2**40):
        name = layout.chunk_name(PROJECT, CHUNK, generation)
        assert layout.parse_chunk_name(name).generation == generation


def test_manifest_and_key_names() -> None:
    assert layout.manifest_name(PROJECT, BACKUP) == f"projects/{PROJECT}/manifests/{BACKUP}"
    assert layout.manifest_name(PROJECT, BACKUP).startswith(layout.manifests_prefix(PROJECT))
    assert layout.key_name(PROJECT) == f"projects/{PROJECT}/key"
    for name in (layout.manifest_name(PROJECT, BACKUP), layout.key_name(PROJECT)):
        assert base.validate_name(name) == name


@pytest.mark.parametrize("project", ["", "A", "a/b", "..", ".", "has space", "x" * 2000])
def test_bad_project_ids(project: str) -> None:
    with pytest.raises(ValueError):
        layout.key_name(project)
    with pytest.raises(ValueError):
        layout.chunk_name(project, CHUNK, 0)


@pytest.mark.parametrize("backup", ["", "B", "a/b", ".."])
def test_bad_backup_ids(backup: str) -> None:
    with pytest.raises(ValueError):
        layout.manifest_name(PROJECT, backup)


@pytest.mark.parametrize("chunk", ["", "ab", CHUNK.upper(), CHUNK[:-1], CHUNK + "0", "g" * 64])
def test_bad_chunk_ids(chunk: str) -> None:
    with pytest.raises(ValueError):
        layout.chunk_name(PROJECT, chunk, 0)


@pytest.mark.parametrize("generation", [-1, 1.5, "1", True, None])
def test_bad_generations(generation: object) -> None:
    with pytest.raises(ValueError):
        layout.chunk_name(PROJECT, CHUNK, generation)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    [
        f"projects/{PROJECT}/key",
        f"projects/{PROJECT}/manifests/{BACKUP}",
        f"projects/{PROJECT}/chunks/cd/{CHUNK}.1",  # shard does not match the id
        f"projects/{PROJECT}/chunks/ab/{CHUNK}",
        f"projects/{PROJECT}/chunks/ab/{CHUNK}.01",
        f"projects/{PROJECT}/chunks/ab/{CHUNK}.-1",
        f"projects/{PROJECT}/chunks/ab/{CHUNK}.1.tmp",
        f"projects/../chunks/ab/{CHUNK}.1",
        f"other/{PROJECT}/chunks/ab/{CHUNK}.1",
    ],
)
def test_parse_refuses_other_names(name: str) -> None:
    with pytest.raises(ValueError):
        layout.parse_chunk_name(name)
