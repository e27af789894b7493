"""A chunk source that names unchanged chunks (an incremental VM backup) and a block target."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from csbs.blobstore import BlobStore
from csbs.repository import chunking, errors, manifest
from csbs.repository.writer import Run
from tests.repository.conftest import SMALL_CHUNK, RepoFactory, change_image, write_image

SIZE = 40 * SMALL_CHUNK + 777


class _Source:
    """The image's chunks; those not in `changed` are Known entries of `previous`."""

    def __init__(
        self,
        image: bytes,
        previous: manifest.Manifest,
        changed: set[int],
        lie: tuple[int, str] | None = None,
    ) -> None:
        self.image = image
        self.size = len(image)
        self.previous = previous
        self.changed = changed
        self.lie = lie  # (a chunk, the id its Known entry gives it instead of its own)
        self.read = 0

    def runs(self, chunk_size: int) -> Iterator[Run]:
        entries = list(self.previous.entries())
        for index, entry in enumerate(entries):
            length = min(chunk_size, self.size - index * chunk_size)
            if self.lie is not None and index == self.lie[0]:
                yield chunking.Known(index, self.lie[1], length)
            elif index not in self.changed:
                yield (
                    chunking.Holes(index, 1)
                    if entry is None
                    else chunking.Known(index, entry, length)
                )
            else:
                data = self.read_chunk(index, chunk_size)
                yield (
                    chunking.Holes(index, 1)
                    if chunking.is_zero(data)
                    else chunking.Data(index, data)
                )

    def read_chunk(self, index: int, chunk_size: int) -> bytes:
        self.read += 1
        return self.image[index * chunk_size : (index + 1) * chunk_size]


def test_unchanged_chunks_are_referenced_unread(
    make_repo: RepoFactory, local_store: BlobStore, tmp_path: pathlib.Path
) -> None:
    repo = make_repo(local_store)
    image = write_image(tmp_path / "disk.img", SIZE)
    repo.backup_writer("p1", "b1").write_disk("vda", image)
    repo.seal_backup("p1", "b1")
    first = repo.reader("p1").load_manifest("b1", "vda")

    changed = {0, 3, 17}
    change_image(image, [i * SMALL_CHUNK + 10 for i in changed], seed=5)
    source = _Source(image.read_bytes(), first, changed)
    result = repo.backup_writer("p1", "b2").write_disk("vda", source)
    repo.seal_backup("p1", "b2")
    assert source.read == len(changed)
    assert result.progress.read_bytes == len(changed) * SMALL_CHUNK
    out = tmp_path / "out.img"
    repo.restore("p1", "b2", "vda", out)
    assert out.read_bytes() == image.read_bytes()
    # Deleting the first backup leaves the second whole (it holds its own references).
    repo.delete_backup("p1", "b1")
    repo.restore("p1", "b2", "vda", out)
    assert out.read_bytes() == image.read_bytes()


def test_a_known_chunk_that_is_not_stored_is_read_and_checked(
    make_repo: RepoFactory, local_store: BlobStore, tmp_path: pathlib.Path
) -> None:
    repo = make_repo(local_store)
    image = write_image(tmp_path / "disk.img", SIZE)
    data = image.read_bytes()
    project_keys, _ = repo.open_project("p1")
    # A manifest of chunks none of which the project stores (as after a sweep).
    entries = [
        None if chunking.is_zero(c) else project_keys.chunk_id(c)
        for c in (data[i : i + SMALL_CHUNK] for i in range(0, SIZE, SMALL_CHUNK))
    ]
    previous = manifest.Manifest.from_entries(SIZE, SMALL_CHUNK, entries, bytes(32))
    source = _Source(data, previous, changed=set())
    repo.backup_writer("p1", "b1").write_disk("vda", source)
    assert source.read == sum(e is not None for e in entries)
    out = tmp_path / "out.img"
    repo.restore("p1", "b1", "vda", out)
    assert out.read_bytes() == data

    # A Known entry the disk's bytes do not match is refused, not stored under that id.
    lying = _Source(data, previous, changed=set(), lie=(1, project_keys.chunk_id(b"other")))
    with pytest.raises(errors.IntegrityError):
        repo.backup_writer("p1", "b2").write_disk("vda", lying)


def test_restore_to_a_block_target_zeroes_then_writes_data(
    make_repo: RepoFactory, local_store: BlobStore, tmp_path: pathlib.Path
) -> None:
    repo = make_repo(local_store)
    image = write_image(tmp_path / "disk.img", SIZE)
    repo.backup_writer("p1", "b1").write_disk("vda", image)

    class Target:
        def __init__(self, size: int) -> None:
            self.size = size
            self.buf = bytearray(b"\xaa" * size)
            self.flushed = False

        def write_at(self, offset: int, data: bytes) -> None:
            self.buf[offset : offset + len(data)] = data

        def zero_at(self, offset: int, length: int) -> None:
            self.buf[offset : offset + length] = bytes(length)

        def flush(self) -> None:
            self.flushed = True

    bigger = Target(SIZE + 4096)
    repo.restore("p1", "b1", "vda", bigger)
    assert bytes(bigger.buf[:SIZE]) == image.read_bytes()
    assert bytes(bigger.buf[SIZE:]) == bytes(4096)
    assert bigger.flushed
    with pytest.raises(errors.RepositoryError, match="smaller"):
        repo.restore("p1", "b1", "vda", Target(SIZE - 1))
