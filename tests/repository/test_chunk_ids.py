"""Chunk ids: tree ids for new projects (decision 0027), whole-chunk ids kept by old ones."""

from __future__ import annotations

import pathlib

import pytest
import sqlalchemy as sa

from csbs.blobstore import BlobStore
from csbs.repository import delta, errors, keys, layout, schema
from tests.repository.conftest import (
    MASTER_KEY,
    SMALL_CHUNK,
    RepoFactory,
    change_image,
    same_file,
    write_image,
)

LEAF = 16 * 1024
DATA = bytes(range(256)) * (4 * 1024 * 1024 // 256 - 3) + b"tail"  # not a multiple of LEAF


def test_a_tree_id_is_one_pass_over_the_leaves_and_differs_from_a_whole_chunk_id() -> None:
    tree, whole = keys.ProjectKeys(bytes(32), LEAF), keys.ProjectKeys(bytes(32))
    chunk_id, leaves = tree.chunk_id_and_leaves(DATA, LEAF)
    assert chunk_id == tree.chunk_id(DATA) == tree.chunk_digest(DATA).hex()
    # The leaves are the sub-block digests v3 manifests hold, whatever the id scheme.
    assert len(leaves) == -(-len(DATA) // LEAF)
    assert leaves[0] == whole.chunk_digest(DATA[:LEAF])
    assert leaves[-1] == whole.chunk_digest(DATA[(len(leaves) - 1) * LEAF :])
    assert delta.sub_digests(tree, DATA, LEAF) == delta.sub_digests(whole, DATA, LEAF)
    assert chunk_id != whole.chunk_id(DATA)
    assert chunk_id != keys.ProjectKeys(bytes(32), 2 * LEAF).chunk_id(DATA)
    assert chunk_id != keys.ProjectKeys(bytes([1]) * 32, LEAF).chunk_id(DATA), "keyed"


@pytest.mark.parametrize("at", [0, LEAF - 1, 2 * 1024 * 1024, len(DATA) - 1])
def test_one_changed_byte_changes_the_tree_id_and_only_its_leaf(at: int) -> None:
    tree = keys.ProjectKeys(bytes(32), LEAF)
    changed = bytearray(DATA)
    changed[at] ^= 1
    before, old_leaves = tree.chunk_id_and_leaves(DATA, LEAF)
    after, new_leaves = tree.chunk_id_and_leaves(bytes(changed), LEAF)
    assert before != after
    differ = [i for i, (a, b) in enumerate(zip(old_leaves, new_leaves, strict=True)) if a != b]
    assert differ == [at // LEAF]


def test_the_length_closes_the_tree() -> None:
    """Leaves alone do not make an id: one leaf's digest as data is another id."""
    tree = keys.ProjectKeys(bytes(32), LEAF)
    short = DATA[:LEAF]
    assert tree.chunk_id(short) != tree.chunk_id(short + bytes(1))
    assert tree.chunk_id(short) != tree.chunk_id(tree.chunk_digest(short))
    assert tree.chunk_id(b"") != tree.chunk_id(bytes(1))


def test_sub_blocks_other_than_the_leaf_take_a_second_pass() -> None:
    tree = keys.ProjectKeys(bytes(32), LEAF)
    chunk_id, leaves = tree.chunk_id_and_leaves(DATA, 2 * LEAF)
    assert chunk_id == tree.chunk_id(DATA)
    assert len(leaves) == -(-len(DATA) // (2 * LEAF))
    assert delta.digest_chunk(tree, DATA, 2 * LEAF) == (
        chunk_id,
        delta.sub_digests(tree, DATA, 2 * LEAF),
    )


def test_new_projects_take_tree_ids_and_older_projects_keep_whole_chunk_ids(
    make_repo: RepoFactory, local_store: BlobStore, tmp_path: pathlib.Path
) -> None:
    repo = make_repo(local_store)
    new_keys, chunk_size = repo.open_project("p-new")
    assert new_keys.leaf_size == delta.leaf_size(chunk_size) == 4096
    # A project created before tree ids: its row names no leaf.
    data_key = keys.generate_data_key()
    wrapped = keys.wrap_data_key(MASTER_KEY, data_key, "p-old")
    repo.index.create_project("p-old", wrapped, SMALL_CHUNK, None)
    local_store.put(layout.key_name("p-old"), wrapped)
    assert repo.open_project("p-old")[0].leaf_size is None

    size = 40 * SMALL_CHUNK + 777
    for project in ("p-new", "p-old"):
        image = write_image(tmp_path / f"{project}.img", size)
        repo.backup_writer(project, "b1").write_disk("vda", image)
        repo.seal_backup(project, "b1")
        first = image.read_bytes()[:SMALL_CHUNK]
        q = size // 8  # the default image's random data is at [0, q) and [6q, 7q)
        change_image(image, [5000, q - 9000, 6 * q + 50_000], seed=3)
        result = repo.backup_writer(project, "b2").write_disk("vda", image, previous="b1")
        repo.seal_backup(project, "b2")
        assert result.progress.delta_chunks == 3, "the changed chunks were stored as deltas"
        assert result.progress.stored_bytes < 3 * SMALL_CHUNK
        out = tmp_path / f"{project}.out"
        repo.restore(project, "b2", "vda", out)
        assert same_file(image, out)
        report = repo.check(project, read_data=True)
        assert report.ok, report

        ids = set(repo.reader(project).load_manifest("b1", "vda").chunk_ids())
        project_keys = repo.open_project(project)[0]
        assert project_keys.chunk_id(first) in ids
        if project == "p-old":
            assert keys.ProjectKeys(data_key).chunk_id(first) in ids
            assert keys.ProjectKeys(data_key, 4096).chunk_id(first) not in ids


def test_a_base_that_is_not_its_chunk_is_named_by_the_restore_of_its_delta(
    make_repo: RepoFactory, local_store: BlobStore, engine: sa.Engine, tmp_path: pathlib.Path
) -> None:
    """A delta's base is not hashed on its own when the rebuilt chunk checks out; when it
    does not, the base is checked and named. The base here is a valid envelope holding
    other bytes under its id (a bug, not tampering: AES-GCM alone would not see it)."""
    repo = make_repo(local_store)
    size = 24 * SMALL_CHUNK
    image = write_image(tmp_path / "disk.img", size)
    repo.backup_writer("p", "b1").write_disk("vda", image)
    repo.seal_backup("p", "b1")
    change_image(image, [5000], seed=4)
    written = repo.backup_writer("p", "b2").write_disk("vda", image, previous="b1")
    assert written.progress.delta_chunks == 1
    with engine.begin() as conn:
        base_id = conn.execute(
            sa.select(schema.repo_chunks.c.base_id).where(schema.repo_chunks.c.base_id.is_not(None))
        ).scalar_one()
        generation = conn.execute(
            sa.select(schema.repo_chunks.c.generation).where(
                schema.repo_chunks.c.chunk_id == base_id
            )
        ).scalar_one()
    project_keys = repo.open_project("p")[0]
    local_store.put(
        layout.chunk_name("p", base_id, generation),
        bytes(repo.codec.seal(project_keys, base_id, bytes(SMALL_CHUNK))),
    )
    with pytest.raises(errors.IntegrityError) as raised:
        repo.restore("p", "b2", "vda", tmp_path / "b2.out")
    assert raised.value.root == base_id
    assert "does not match its id" in str(raised.value)
