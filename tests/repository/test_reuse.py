"""A disk recorded as the same image as in an earlier backup (`BackupWriter.reuse_disk`):
nothing read, its own references and manifest, restorable whatever is deleted first."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from csbs.blobstore import BlobStore
from csbs.domain.clock import FrozenClock
from csbs.repository import layout
from tests.repository.conftest import SMALL_CHUNK, RepoFactory, same_file, write_image


@pytest.mark.parametrize("delete_first", ["b1", "b2"])
def test_reused_disk_restores_after_either_backup_is_deleted(
    make_repo: RepoFactory,
    local_store: BlobStore,
    tmp_path: pathlib.Path,
    clock: FrozenClock,
    delete_first: str,
) -> None:
    repo = make_repo(local_store)
    image = write_image(tmp_path / "a.img", 40 * SMALL_CHUNK + 3000)
    repo.backup_writer("p1", "b1").write_disk("vda", image)
    repo.seal_backup("p1", "b1")
    usage = repo.usage("p1")

    writer = repo.backup_writer("p1", "b2")
    reused = writer.reuse_disk("vda", "b1")
    assert reused is not None
    assert reused.progress.read_bytes == 0 and reused.progress.new_bytes == 0
    assert reused.progress.reused_bytes > 0
    repo.seal_backup("p1", "b2")
    assert repo.usage("p1") == usage  # nothing new stored
    report = repo.check(read_data=True)
    assert report.ok, report

    repo.delete_backup("p1", delete_first)
    clock.advance(61)
    repo.sweep("p1")
    kept = "b2" if delete_first == "b1" else "b1"
    out = tmp_path / "out.img"
    repo.restore("p1", kept, "vda", out)
    assert same_file(out, image)
    assert repo.usage("p1") == usage
    report = repo.check(read_data=True)
    assert report.ok, report

    repo.delete_backup("p1", kept)
    clock.advance(61)
    repo.sweep("p1")
    assert list(local_store.list(layout.chunks_prefix("p1"))) == []
    assert repo.check().ok


def test_nothing_is_taken_when_the_earlier_image_is_gone(
    make_repo: RepoFactory, local_store: BlobStore, tmp_path: pathlib.Path, clock: FrozenClock
) -> None:
    repo = make_repo(local_store)
    image = write_image(tmp_path / "a.img", 16 * SMALL_CHUNK)
    repo.backup_writer("p1", "b1").write_disk("vda", image)
    repo.seal_backup("p1", "b1")
    writer = repo.backup_writer("p1", "b2")
    assert writer.reuse_disk("vdb", "b1") is None  # no such disk in it
    repo.delete_backup("p1", "b1")
    clock.advance(61)
    repo.sweep("p1")
    assert writer.reuse_disk("vda", "b1") is None  # the backup is gone
    record = repo.index.backup("p1", "b2")
    assert record is not None and record.next_seq == 0  # took no reference


def test_chunks_swept_under_a_reuse_leave_it_nothing_taken(
    make_repo: RepoFactory,
    local_store: BlobStore,
    tmp_path: pathlib.Path,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = make_repo(local_store)
    image = write_image(tmp_path / "a.img", 16 * SMALL_CHUNK)
    repo.backup_writer("p1", "b1").write_disk("vda", image)
    repo.seal_backup("p1", "b1")
    writer = repo.backup_writer("p1", "b2")
    # The earlier backup is deleted and swept after its manifest was read.
    add_refs = repo.index.add_refs

    def racing(*args: Any) -> bool:
        repo.delete_backup("p1", "b1")
        clock.advance(61)
        repo.sweep("p1")
        return add_refs(*args)

    monkeypatch.setattr(repo.index, "add_refs", racing)
    assert writer.reuse_disk("vda", "b1") is None  # the caller reads the disk
    monkeypatch.undo()
    record = repo.index.backup("p1", "b2")
    assert record is not None and record.next_seq == 0  # took no reference
    assert repo.usage("p1").stored_bytes == 0
    # Read instead, the backup is whole.
    writer.write_disk("vda", image)
    repo.seal_backup("p1", "b2")
    out = tmp_path / "out.img"
    repo.restore("p1", "b2", "vda", out)
    assert same_file(out, image)
    assert repo.check(read_data=True).ok
