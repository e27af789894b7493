"""Backup, restore, dedup, usage, deletion, key rotation, corruption: both engines, both stores."""

from __future__ import annotations

import io
import os
import pathlib
import shutil
import subprocess
from collections.abc import Callable

import blake3
import pytest

from csbs.blobstore import BlobStore
from csbs.domain.clock import FrozenClock
from csbs.repository import Repository, errors, layout, manifest, reader
from csbs.repository.writer import BackupProgress
from tests.repository.conftest import SMALL_CHUNK, RepoFactory, change_image, same_file, write_image

SIZE = 3 * 1024 * 1024 + 12345  # bytes: not a multiple of the chunk size


def test_round_trip_bit_exact_and_sparse(
    make_repo: RepoFactory, blob_store: BlobStore, tmp_path: pathlib.Path
) -> None:
    repo = make_repo(blob_store)
    image = write_image(tmp_path / "disk.img", SIZE)
    seen: list[BackupProgress] = []
    writer = repo.backup_writer("p1", "b1", progress=seen.append)
    result = writer.write_disk("vda", image)
    repo.seal_backup("p1", "b1")
    assert seen and seen[-1].position == SIZE
    assert result.progress.read_bytes < SIZE  # holes were not read
    assert result.progress.reused_bytes > 0  # repeated blocks dedup within the image

    out = tmp_path / "restored.img"
    repo.restore("p1", "b1", "vda", out)
    assert same_file(image, out)
    assert os.stat(out).st_blocks * 512 < SIZE  # holes stayed sparse

    stream = io.BytesIO()
    repo.restore("p1", "b1", "vda", stream)
    assert stream.getvalue() == image.read_bytes()
    assert repo.verify("p1", "b1")[0].position == SIZE
    report = repo.check("p1", read_data=True)
    assert report.ok, report


def _restore_with(
    repo: Repository,
    monkeypatch: pytest.MonkeyPatch,
    change: Callable[[manifest.Manifest], manifest.Manifest],
    out: pathlib.Path,
) -> None:
    """Restore p1/b1/vda with the manifest as `change` makes it, after it is read."""
    load = reader.BackupReader.load_manifest

    def changed(self: reader.BackupReader, backup_id: str, disk_id: str) -> manifest.Manifest:
        return change(load(self, backup_id, disk_id))

    with monkeypatch.context() as m:
        m.setattr(reader.BackupReader, "load_manifest", changed)
        repo.restore("p1", "b1", "vda", out)


def test_restore_checks_the_image_digest_of_v2_and_v1_manifests(
    make_repo: RepoFactory,
    local_store: BlobStore,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A v2 (and v3) manifest's digest is its chunk table's; v1 manifests (plain BLAKE3 of the whole
    image) written before v2 still restore, and both fail loudly on a wrong digest."""
    repo = make_repo(local_store)
    image = write_image(tmp_path / "disk.img", SIZE)
    repo.backup_writer("p1", "b1").write_disk("vda", image)
    repo.seal_backup("p1", "b1")
    written = repo.reader("p1").load_manifest("b1", "vda")
    # v3: v2's chunk table digest, with the sub-block digests of the next incremental.
    assert written.version == manifest.MANIFEST_V3
    table = manifest.TableDigest(written.logical_size, written.chunk_size)
    for entry in written.entries():
        if entry is None:
            table.update_holes(1)
        else:
            table.update_chunk(entry)
    assert written.image_digest == table.digest()

    def with_digest(
        digest: bytes, version: int
    ) -> Callable[[manifest.Manifest], manifest.Manifest]:
        def change(m: manifest.Manifest) -> manifest.Manifest:
            return manifest.Manifest.from_entries(
                m.logical_size, m.chunk_size, m.entries(), digest, version
            )

        return change

    out = tmp_path / "out.img"
    flat = blake3.blake3(image.read_bytes()).digest()
    _restore_with(repo, monkeypatch, with_digest(flat, manifest.MANIFEST_V1), out)
    assert same_file(image, out)
    wrong = bytes(a ^ b for a, b in zip(flat, b"\x01" + bytes(31), strict=True))
    for digest, version in ((wrong, manifest.MANIFEST_V1), (flat, manifest.MANIFEST_V2)):
        with pytest.raises(errors.ImageDigestMismatch):
            _restore_with(repo, monkeypatch, with_digest(digest, version), out)


def _resident_bytes(path: pathlib.Path) -> int:
    """Bytes of `path` in the page cache (util-linux's fincore)."""
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.strip() or 0)


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux's fincore")
def test_restore_to_a_file_does_not_keep_the_image_in_the_page_cache(
    make_repo: RepoFactory,
    local_store: BlobStore,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ranges already written back are dropped while the restore runs (DONTNEED cannot
    drop dirty pages, so each range is advised again later), and the rest once the image
    is on disk."""
    monkeypatch.setattr(reader, "_WRITEBACK_BYTES", 1024 * 1024)
    size = 24 * 1024 * 1024
    image = write_image(tmp_path / "disk.img", size, extents=[(0, size, "random")])
    repo = make_repo(local_store)
    repo.backup_writer("p1", "b1").write_disk("vda", image)
    repo.seal_backup("p1", "b1")

    out = tmp_path / "restored.img"
    resident: list[int] = []
    repo.restore("p1", "b1", "vda", out, progress=lambda _: resident.append(_resident_bytes(out)))
    assert _resident_bytes(out) < 1024 * 1024  # before reading it back below
    assert len(resident) > 10
    assert max(resident) < size // 2, resident
    assert same_file(image, out)


def test_incremental_backup_reuses_chunks_and_deletion_is_exact(
    make_repo: RepoFactory, blob_store: BlobStore, tmp_path: pathlib.Path, clock: FrozenClock
) -> None:
    repo = make_repo(blob_store)
    image = write_image(tmp_path / "disk.img", SIZE)
    first = repo.backup_writer("p1", "b1").write_disk("vda", image)
    repo.seal_backup("p1", "b1")
    usage_one = repo.usage("p1")
    change_image(image, [10 * SMALL_CHUNK + 5], seed=9)
    second = repo.backup_writer("p1", "b2").write_disk("vda", image)
    repo.seal_backup("p1", "b2")
    assert second.progress.new_bytes == SMALL_CHUNK
    assert second.progress.reused_bytes == first.progress.new_bytes + first.progress.reused_bytes
    assert repo.usage("p1").logical_bytes == usage_one.logical_bytes + SMALL_CHUNK

    out = tmp_path / "b2.img"
    repo.restore("p1", "b2", "vda", out)
    assert same_file(image, out)

    usage_two = repo.usage("p1")
    result = repo.delete_backup("p1", "b2")
    assert result.existed and repo.pending_sweep("p1")[0] == 1
    assert repo.usage("p1") == usage_one  # exact at the end of the deletion
    assert result.freed.stored_bytes == usage_two.stored_bytes - usage_one.stored_bytes > 0
    assert result.freed.logical_bytes == SMALL_CHUNK
    again = repo.delete_backup("p1", "b2")
    assert again.existed is False and again.freed.stored_bytes == 0  # idempotent
    clock.advance(61)
    assert repo.sweep("p1").chunks == 1
    assert repo.check("p1").ok
    repo.delete_backup("p1", "b1")
    clock.advance(61)
    repo.sweep("p1")
    assert repo.usage("p1").stored_bytes == 0
    assert list(blob_store.list(layout.chunks_prefix("p1"))) == []
    assert repo.check().ok


def test_several_disks_cancel_and_failed_backup_release(
    make_repo: RepoFactory, local_store: BlobStore, tmp_path: pathlib.Path, clock: FrozenClock
) -> None:
    repo = make_repo(local_store, batch_chunks=4)
    a = write_image(tmp_path / "a.img", SIZE, seed=1)
    b = write_image(tmp_path / "b.img", SIZE // 2, seed=2)
    writer = repo.backup_writer("p1", "b1")
    writer.write_disk("vda", a)
    writer.write_disk("vdb", b)
    repo.seal_backup("p1", "b1")
    assert [d.disk_id for d in repo.disks("p1", "b1")] == ["vda", "vdb"]
    usage = repo.usage("p1")

    calls = 0

    def cancel() -> bool:
        nonlocal calls
        calls += 1
        return calls > 20

    c = write_image(tmp_path / "c.img", SIZE, seed=3)
    with pytest.raises(errors.Cancelled):
        repo.backup_writer("p1", "b2", cancel=cancel).write_disk("vda", c)
    assert repo.check("p1").ok  # an open backup's references are counted
    repo.delete_backup("p1", "b2")
    assert repo.usage("p1") == usage
    clock.advance(61)
    repo.sweep("p1")
    report = repo.check("p1", read_data=True)
    assert report.ok, report
    for disk, path in (("vda", a), ("vdb", b)):
        out = tmp_path / f"{disk}.out"
        repo.restore("p1", "b1", disk, out)
        assert same_file(path, out)


def test_corrupt_blob_is_named_and_reported(
    make_repo: RepoFactory, blob_store: BlobStore, tmp_path: pathlib.Path
) -> None:
    repo = make_repo(blob_store)
    image = write_image(tmp_path / "disk.img", SIZE)
    repo.backup_writer("p1", "b1").write_disk("vda", image)
    repo.seal_backup("p1", "b1")
    name = sorted(blob_store.list(layout.chunks_prefix("p1")))[3]
    victim = layout.parse_chunk_name(name).chunk_id
    blob = bytearray(blob_store.get(name))
    blob[len(blob) // 2] ^= 0x01
    blob_store.put(name, bytes(blob))

    with pytest.raises(errors.IntegrityError) as caught:
        repo.restore("p1", "b1", "vda", tmp_path / "out.img")
    assert caught.value.chunk_id == victim
    with pytest.raises(errors.IntegrityError):
        repo.verify("p1", "b1")
    assert repo.check("p1").ok  # without reading data, nothing is visibly wrong
    report = repo.check("p1", read_data=True)
    assert len(report.corrupt) == 1 and victim in report.corrupt[0]


def test_missing_and_leaked_blobs_and_repair(
    make_repo: RepoFactory, local_store: BlobStore, tmp_path: pathlib.Path
) -> None:
    repo = make_repo(local_store)
    image = write_image(tmp_path / "disk.img", SIZE)
    repo.backup_writer("p1", "b1").write_disk("vda", image)
    repo.seal_backup("p1", "b1")
    names = sorted(local_store.list(layout.chunks_prefix("p1")))
    gone = layout.parse_chunk_name(names[0])
    local_store.delete(names[0])
    leaked = layout.chunk_name("p1", "ab" * 32, 999_999)
    local_store.put(leaked, b"junk")
    report = repo.check("p1")
    assert report.leaked == [leaked]
    assert len(report.missing) == 1 and gone.chunk_id in report.missing[0]
    assert repo.repair(report) == 1
    assert not local_store.exists(leaked)
    with pytest.raises(errors.ChunkNotFound):
        repo.verify("p1", "b1")


def test_rotate_master_key_rewraps_without_rewriting(
    make_repo: RepoFactory, engine: object, local_store: BlobStore, tmp_path: pathlib.Path
) -> None:
    repo = make_repo(local_store)
    image = write_image(tmp_path / "disk.img", SIZE)
    repo.backup_writer("p1", "b1").write_disk("vda", image)
    chunks = {n: local_store.get(n) for n in local_store.list(layout.chunks_prefix("p1"))}
    new_key = bytes(32 * [7])
    old_key = bytes(range(32))
    assert repo.rotate_master_key(old_key, new_key) == 1
    assert repo.rotate_master_key(old_key, new_key) == 0  # idempotent
    assert {n: local_store.get(n) for n in chunks} == chunks
    fresh = make_repo(local_store)
    with pytest.raises(errors.WrongKey):
        fresh.reader("p1")  # the old master key no longer opens it
    repo.restore("p1", "b1", "vda", tmp_path / "out.img")
    assert same_file(image, tmp_path / "out.img")


@pytest.mark.parametrize("release_refs", [1, 5, 2048])
def test_deletion_steps_release_whole_batches_and_usage_is_exact(
    make_repo: RepoFactory,
    local_store: BlobStore,
    tmp_path: pathlib.Path,
    clock: FrozenClock,
    release_refs: int,
) -> None:
    # 2 chunks per reference batch; "repeat" extents put one chunk in many batches.
    repo = make_repo(local_store, batch_chunks=2, release_refs=release_refs)
    size = 32 * SMALL_CHUNK
    extents = [(0, 8 * SMALL_CHUNK, "random"), (8 * SMALL_CHUNK, 24 * SMALL_CHUNK, "repeat")]
    kept = write_image(tmp_path / "kept.img", size, seed=1)
    repo.backup_writer("p1", "keep").write_disk("vda", kept)
    repo.seal_backup("p1", "keep")
    usage = repo.usage("p1")
    doomed = write_image(tmp_path / "doomed.img", size, seed=2, extents=extents)
    repo.backup_writer("p1", "doomed").write_disk("vda", doomed)
    repo.seal_backup("p1", "doomed")
    record = repo.index.backup("p1", "doomed")
    assert record is not None and record.next_seq >= 10

    steps: list[int] = []
    result = repo.delete_backup("p1", "doomed", lambda p: steps.append(p.released))
    # Steps are whole batches: one per step at release_refs=1, a few at 5, all at once.
    expected_steps = {1: record.next_seq, 2048: 1}.get(release_refs)
    if expected_steps is not None:
        assert len(steps) == expected_steps
    else:
        assert 1 < len(steps) < record.next_seq
    assert steps[-1] == record.next_seq and steps == sorted(set(steps))
    assert result.existed
    assert repo.usage("p1") == usage
    clock.advance(61)
    repo.sweep("p1")
    report = repo.check("p1", read_data=True)
    assert report.ok, report
    repo.verify("p1", "keep")
