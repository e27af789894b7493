"""Restore targets: direct I/O to files, its fallbacks, the caller's fd, character devices."""

from __future__ import annotations

import errno
import fcntl
import os
import pathlib
import shutil
import subprocess

import pytest

from csbs.blobstore import BlobStore
from csbs.fileio.direct import ALIGNMENT, O_DIRECT
from csbs.repository import Repository, reader
from tests.repository.conftest import SMALL_CHUNK, RepoFactory, same_file, write_image

# Not a multiple of 4096: the image's last chunk cannot be written direct.
SIZE = 40 * SMALL_CHUNK + 12345


def _direct_available(directory: pathlib.Path) -> bool:
    probe = directory / "probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        writes = reader._DirectWrites.start(fd, 4096)
        if writes is None:
            return False
        writes.close()
        return True
    finally:
        os.close(fd)
        probe.unlink()


@pytest.fixture
def backed_up(
    make_repo: RepoFactory, local_store: BlobStore, tmp_path: pathlib.Path
) -> tuple[Repository, pathlib.Path]:
    image = write_image(tmp_path / "disk.img", SIZE)
    repo = make_repo(local_store)
    repo.backup_writer("p1", "b1").write_disk("vda", image)
    repo.seal_backup("p1", "b1")
    return repo, image


def _count_pwrites(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, int]]:
    """Record (fd in direct mode?, length) of every pwrite the restore makes."""
    seen: list[tuple[bool, int]] = []
    pwrite = os.pwrite

    def counting(fd: int, data: memoryview, offset: int) -> int:
        direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & O_DIRECT)
        seen.append((direct, len(data)))
        return pwrite(fd, data, offset)

    monkeypatch.setattr(reader.os, "pwrite", counting)
    return seen


def test_a_file_is_written_direct_but_for_its_unaligned_tail(
    backed_up: tuple[Repository, pathlib.Path],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not _direct_available(tmp_path):
        pytest.skip("the file system of the test directory has no direct I/O")
    repo, image = backed_up
    seen = _count_pwrites(monkeypatch)
    out = tmp_path / "restored.img"
    repo.restore("p1", "b1", "vda", out)
    assert same_file(image, out)
    assert os.path.getsize(out) == SIZE
    direct = [length for is_direct, length in seen if is_direct]
    buffered = [length for is_direct, length in seen if not is_direct]
    assert sum(direct) >= SIZE // 2, seen  # every data chunk but the last went direct
    assert all(length % ALIGNMENT == 0 for length in direct)
    assert buffered == [SIZE % ALIGNMENT], seen  # only the tail through the page cache


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux's fincore")
def test_a_direct_restore_never_fills_the_page_cache(
    backed_up: tuple[Repository, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    if not _direct_available(tmp_path):
        pytest.skip("the file system of the test directory has no direct I/O")
    repo, image = backed_up
    out = tmp_path / "restored.img"

    def resident() -> int:
        done = subprocess.run(
            ["fincore", "--bytes", "--noheadings", "--output", "RES", str(out)],
            check=True,
            capture_output=True,
            text=True,
        )
        return int(done.stdout.strip() or 0)

    seen: list[int] = []
    repo.restore("p1", "b1", "vda", out, progress=lambda _: seen.append(resident()))
    assert seen and max(seen) <= 4096, seen  # at most the buffered tail's page
    assert same_file(image, out)


@pytest.mark.parametrize("refusal", ["flag", "write"])
def test_a_file_system_refusing_direct_io_is_written_through_the_cache(
    backed_up: tuple[Repository, pathlib.Path],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    refusal: str,
) -> None:
    """No O_DIRECT at all (the flag is refused), or O_DIRECT accepted at the flag and
    refused at the write (EINVAL): the image is written through the page cache, exactly."""
    repo, image = backed_up
    fcntl_, pwrite = fcntl.fcntl, os.pwrite
    refused: list[int] = []

    def no_direct_flag(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_SETFL and arg & O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return fcntl_(fd, cmd, arg)

    def no_direct_write(fd: int, data: memoryview, offset: int) -> int:
        if fcntl_(fd, fcntl.F_GETFL) & O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return pwrite(fd, data, offset)

    if refusal == "flag":
        monkeypatch.setattr(fcntl, "fcntl", no_direct_flag)
    else:
        monkeypatch.setattr(reader.os, "pwrite", no_direct_write)
    seen = _count_pwrites(monkeypatch)
    out = tmp_path / "restored.img"
    repo.restore("p1", "b1", "vda", out)
    assert same_file(image, out)
    assert seen and not seen[-1][0]  # the last write went through the page cache
    if refusal == "flag":
        assert not any(is_direct for is_direct, _ in seen)
    elif _direct_available(tmp_path):
        assert refused, "the direct write was tried first"


def test_a_failing_direct_write_fails_the_restore(
    backed_up: tuple[Repository, pathlib.Path],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo, _ = backed_up

    def full(fd: int, data: memoryview, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(reader.os, "pwrite", full)
    with pytest.raises(OSError) as failure:
        repo.restore("p1", "b1", "vda", tmp_path / "restored.img")
    assert failure.value.errno == errno.ENOSPC


def test_the_callers_fd_keeps_its_flags(
    backed_up: tuple[Repository, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    repo, image = backed_up
    out = tmp_path / "restored.img"
    fd = os.open(out, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        repo.restore("p1", "b1", "vda", fd)
        assert fcntl.fcntl(fd, fcntl.F_GETFL) == flags
    finally:
        os.close(fd)
    assert same_file(image, out)


def test_a_character_device_path_is_written_without_fsync(
    backed_up: tuple[Repository, pathlib.Path],
) -> None:
    """/dev/null (like a tape or a pipe) cannot be fsynced; the restore still succeeds."""
    repo, _ = backed_up
    progress = repo.restore("p1", "b1", "vda", os.devnull)
    assert progress.position == SIZE


def test_a_backup_hands_the_store_its_new_chunks_in_aligned_buffers(
    make_repo: RepoFactory,
    local_store: BlobStore,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sealed straight into page-aligned memory, which the local store writes direct."""
    image = write_image(tmp_path / "disk.img", SIZE)
    repo = make_repo(local_store)
    kinds: list[str] = []
    put = type(local_store).put

    def spying(self: BlobStore, name: str, data: object) -> None:
        kinds.append(f"{name.split('/')[2]}:{type(data).__name__}")
        put(self, name, data)  # type: ignore[arg-type]

    monkeypatch.setattr(type(local_store), "put", spying)
    result = repo.backup_writer("p1", "b1").write_disk("vda", image)
    chunks = [k for k in kinds if k.startswith("chunks:")]
    assert chunks and set(chunks) == {"chunks:AlignedBlob"}, kinds
    assert result.progress.stored_bytes > 0
    out = tmp_path / "restored.img"
    repo.seal_backup("p1", "b1")
    repo.restore("p1", "b1", "vda", out)
    assert same_file(image, out)
