"""The BlobStore contract, checked against every backend (memory, local, S3 over HTTP).

Each test in the first part runs once per backend through the `store` fixture
(`conftest.py`; see there how to point the S3 variant at MinIO or Ceph RGW). The later
parts test what only one backend or wrapper does: local temp-file handling, S3 error
translation and retries, the retry and read-only wrappers, and the URL registry.
"""

from __future__ import annotations

import concurrent.futures
import errno
import fcntl
import http.server
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import botocore.exceptions
import pytest

from csbs.blobstore import (
    BlobNotFound,
    BlobStore,
    BlobStoreError,
    InvalidBlobName,
    InvalidStoreUrl,
    LocalStore,
    LooseMode,
    MemoryStore,
    ReadOnlyStore,
    RetryingStore,
    StoreReadOnly,
    StoreUnavailable,
    file_modes,
    open_store,
    s3,
)
from csbs.blobstore import local as local_store
from csbs.blobstore.aligned import AlignedBuffer
from csbs.blobstore.base import validate_name
from csbs.fileio.direct import O_DIRECT

# Mirrors conftest.py: conftest modules are for pytest to load, not for importing.
S3Factory = Callable[..., s3.S3Store]

INVALID_NAMES = [
    "",
    "/a",
    "a/",
    "a//b",
    "A",
    "a/B",
    ".",
    "..",
    "a/./b",
    "a/../b",
    "../a",
    "a b",
    "a\\b",
    "a\nb",
    "a\n",
    "caf\u00e9",
    "a~tmp.1234",
    "a:b",
    "x" * 1025,
]
INVALID_PREFIXES = ["/", "/a", "A", "a//", "../", "a/../", "./", "a b", "\u00e9"]


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-looking bytes of `size`."""
    block = bytes((i * 31 + seed * 17 + (i >> 8)) & 0xFF for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


# --- The contract, for every backend ------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 4096, 1024 * 1024 + 3])
def test_put_get_round_trip(store: BlobStore, size: int) -> None:
    data = payload(size, seed=size)
    store.put("projects/p1/chunks/ab/blob.0", data)
    assert store.get("projects/p1/chunks/ab/blob.0") == data
    assert store.exists("projects/p1/chunks/ab/blob.0")
    assert store.size("projects/p1/chunks/ab/blob.0") == size


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 1024 * 1024 + 3])
def test_put_of_an_aligned_blob_stores_its_bytes_not_its_buffer(
    store: BlobStore, size: int
) -> None:
    """A blob built in an aligned buffer is stored exactly; reusing the buffer after the
    put changes nothing stored."""
    data = payload(size, seed=size + 1)
    buffer = AlignedBuffer(size)
    buffer.memory[:size] = data
    buffer.memory[size:] = b"\xff" * (len(buffer.memory) - size)  # no zeros past the end
    store.put("projects/p1/chunks/ab/blob.1", buffer.blob(size))
    buffer.memory[:] = bytes(len(buffer.memory))
    assert store.get("projects/p1/chunks/ab/blob.1") == data
    assert store.size("projects/p1/chunks/ab/blob.1") == size
    buffer.close()


def test_single_segment_name(store: BlobStore) -> None:
    store.put("key", b"k")
    assert store.get("key") == b"k"
    assert list(store.list("")) == ["key"]


def test_ranged_get(store: BlobStore) -> None:
    data = payload(10_000)
    store.put("r/blob", data)
    assert store.get("r/blob", 0, 10) == data[:10]
    assert store.get("r/blob", 100, 1) == data[100:101]
    assert store.get("r/blob", 9_990) == data[9_990:]
    assert store.get("r/blob", 5_000, None) == data[5_000:]
    assert store.get("r/blob", 9_995, 100) == data[9_995:], "clipped to the end"
    assert store.get("r/blob", 10_000) == b"", "offset at the end"
    assert store.get("r/blob", 20_000, 5) == b"", "offset past the end"
    assert store.get("r/blob", 17, 0) == b""
    assert store.get("r/blob", 0, None) == data


def test_ranged_get_of_empty_blob(store: BlobStore) -> None:
    store.put("empty", b"")
    assert store.get("empty") == b""
    assert store.get("empty", 0, 10) == b""
    assert store.get("empty", 3) == b""


def test_negative_range_is_refused(store: BlobStore) -> None:
    store.put("r/blob", b"abc")
    with pytest.raises(ValueError):
        store.get("r/blob", -1)
    with pytest.raises(ValueError):
        store.get("r/blob", 0, -1)


def test_overwrite_replaces_value(store: BlobStore) -> None:
    store.put("o/blob", b"first value, longer")
    store.put("o/blob", b"second")
    assert store.get("o/blob") == b"second"
    assert store.size("o/blob") == 6
    assert list(store.list("o/")) == ["o/blob"]


def test_missing_blob(store: BlobStore) -> None:
    assert not store.exists("no/such/blob")
    with pytest.raises(BlobNotFound) as info:
        store.get("no/such/blob")
    assert info.value.name == "no/such/blob"
    with pytest.raises(BlobNotFound):
        store.get("no/such/blob", 10, 5)
    with pytest.raises(BlobNotFound):
        store.get("no/such/blob", 0, 0)
    with pytest.raises(BlobNotFound):
        store.size("no/such/blob")


def test_missing_blob_is_a_blobstore_error(store: BlobStore) -> None:
    with pytest.raises(BlobStoreError):
        store.get("nothing")


def test_delete_is_idempotent(store: BlobStore) -> None:
    store.put("d/blob", b"x")
    store.delete("d/blob")
    assert not store.exists("d/blob")
    with pytest.raises(BlobNotFound):
        store.get("d/blob")
    store.delete("d/blob")
    store.delete("d/never-existed")
    assert list(store.list("")) == []


def test_put_after_delete(store: BlobStore) -> None:
    store.put("d/blob", b"x")
    store.delete("d/blob")
    store.put("d/blob", b"y")
    assert store.get("d/blob") == b"y"


def test_list_with_prefix(store: BlobStore) -> None:
    names = [
        "projects/p1/chunks/00/aa.0",
        "projects/p1/chunks/00/ab.1",
        "projects/p1/chunks/ff/ff.0",
        "projects/p1/key",
        "projects/p1/manifests/m1",
        "projects/p10/key",
        "projects/p2/key",
        "top",
        "topping/x",
    ]
    for name in names:
        store.put(name, name.encode())
    assert sorted(store.list("")) == sorted(names)
    assert sorted(store.list("projects/p1/")) == names[:5]
    assert sorted(store.list("projects/p1/chunks/")) == names[:3]
    assert sorted(store.list("projects/p1/chunks/00/a")) == names[:2]
    assert sorted(store.list("projects/p1")) == names[:6], "a plain string prefix"
    assert sorted(store.list("projects/p1/key")) == ["projects/p1/key"]
    assert sorted(store.list("top")) == ["top", "topping/x"]
    assert sorted(store.list("topping/")) == ["topping/x"]
    assert list(store.list("projects/p3/")) == []
    assert list(store.list("nothing-here/")) == []


def test_list_is_lazy_and_stable(store: BlobStore) -> None:
    for i in range(20):
        store.put(f"s/{i % 3}/n{i:02d}", b"")
    listing = store.list("s/")
    assert iter(listing) is listing, "list returns an iterator, not a materialised list"
    first = list(listing)
    assert first == list(store.list("s/"))
    assert len(first) == 20


def test_list_many_names(store: BlobStore) -> None:
    # More than 1000 names: S3 returns at most 1000 keys per page, so this checks that
    # the listing follows continuation tokens.
    names = [f"many/{i % 16:02x}/blob-{i:05d}" for i in range(1100)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: store.put(n, b"x"), names))
    store.put("other/blob", b"x")
    assert sorted(store.list("many/")) == sorted(names)
    assert len(list(store.list(""))) == 1101


def test_size(store: BlobStore) -> None:
    store.put("sz/a", b"")
    store.put("sz/b", b"12345")
    assert store.size("sz/a") == 0
    assert store.size("sz/b") == 5


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_names_are_refused(store: BlobStore, name: str) -> None:
    for call in (
        lambda: store.put(name, b"x"),
        lambda: store.get(name),
        lambda: store.exists(name),
        lambda: store.delete(name),
        lambda: store.size(name),
    ):
        with pytest.raises(InvalidBlobName):
            call()
    assert list(store.list("")) == []


@pytest.mark.parametrize("prefix", INVALID_PREFIXES)
def test_invalid_prefixes_are_refused(store: BlobStore, prefix: str) -> None:
    with pytest.raises(InvalidBlobName):
        store.list(prefix)


def test_longest_valid_name(store: BlobStore) -> None:
    name = "/".join(["a" * 127] * 8)
    assert len(name) == 1023
    # An S3 store pointed at an external server works below a per-test key prefix, and
    # S3 limits the whole key, prefix included.
    name = name[: len(name) - len(getattr(store, "prefix", ""))]
    store.put(name, b"long")
    assert store.get(name) == b"long"
    assert list(store.list("a")) == [name]


def test_concurrent_puts_of_one_name_leave_one_complete_value(store: BlobStore) -> None:
    size = 256 * 1024
    values = [bytes([i]) * size for i in range(8)]
    name = "race/blob"
    store.put(name, values[0])
    stop = threading.Event()
    seen: list[bytes] = []
    listed: set[str] = set()

    def reader() -> None:
        while not stop.is_set():
            data = store.get(name)
            assert len(data) == size and data == bytes([data[0]]) * size, "a torn read"
            seen.append(data[:1])
            listed.update(store.list(""))

    def writer(i: int) -> None:
        for _ in range(3):
            store.put(name, values[i])

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        readers = [pool.submit(reader) for _ in range(2)]
        writers = [pool.submit(writer, i) for i in range(8)]
        for future in writers:
            future.result()
        stop.set()
        for future in readers:
            future.result()
    assert store.get(name) in values
    assert seen, "the readers ran"
    assert listed == {name}, "no temporary or partial entries are ever listed"


def test_close_twice_is_harmless(store: BlobStore) -> None:
    store.close()
    store.close()


def test_read_only_wrapper(store: BlobStore) -> None:
    store.put("ro/blob", b"data")
    ro = ReadOnlyStore(store)
    assert ro.get("ro/blob") == b"data"
    assert ro.get("ro/blob", 1, 2) == b"at"
    assert ro.exists("ro/blob")
    assert ro.size("ro/blob") == 4
    assert list(ro.list("ro/")) == ["ro/blob"]
    with pytest.raises(StoreReadOnly):
        ro.put("ro/other", b"x")
    with pytest.raises(StoreReadOnly):
        ro.delete("ro/blob")
    with pytest.raises(InvalidBlobName):
        ro.put("BAD", b"x")
    assert store.get("ro/blob") == b"data"
    assert not store.exists("ro/other")


def test_file_modes_only_where_blobs_are_files(store: BlobStore) -> None:
    """Only a store whose blobs are files has modes to check (`FileModes`); a wrapper
    passes them on, and over any other store finds nothing to check or change."""
    store.put("m/a/blob", b"x")
    modes = file_modes(store)
    assert (modes is not None) == isinstance(store, LocalStore)
    if modes is not None:
        assert list(modes.loose_modes()) == []
    for wrapped in (RetryingStore(store), ReadOnlyStore(store)):
        wrapped_modes = file_modes(wrapped)
        assert wrapped_modes is not None
        assert list(wrapped_modes.loose_modes()) == []
    assert RetryingStore(store).tighten_mode("m/a/blob") is False


# --- Name rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a", "a/b", "0-9_x.y", "projects/p/chunks/ab/" + "ab" * 32 + ".7", "...", "a/.b"]
)
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


# --- Local filesystem specifics --------------------------------------------------------


def test_local_skips_temp_files_left_by_a_crash(tmp_path: pathlib.Path) -> None:
    store = LocalStore(tmp_path)
    store.put("x/blob", b"real")
    (tmp_path / "x" / "blob~tmp.0123456789abcdef").write_bytes(b"partial")
    (tmp_path / "x" / "other~tmp.0123456789abcdef").write_bytes(b"partial")
    assert list(store.list("")) == ["x/blob"]
    assert not store.exists("x/other")


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux's fincore")
def test_local_put_and_get_leave_the_blob_on_disk_not_in_the_page_cache(
    tmp_path: pathlib.Path,
) -> None:
    """A blob is written once and read by a restore or an audit: neither keeps it cached."""
    store = LocalStore(tmp_path)
    data = os.urandom(4 * 1024 * 1024)

    def resident() -> int:
        out = subprocess.run(
            ["fincore", "--bytes", "--noheadings", "--output", "RES", str(tmp_path / "x" / "blob")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return int(out.strip() or 0)

    store.put("x/blob", data)
    assert resident() == 0
    assert store.get("x/blob") == data
    assert resident() == 0
    assert store.get("x/blob", 4096, 8192) == data[4096 : 4096 + 8192]
    assert resident() == 0


def _writes_seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, int]]:
    """Record (fd in direct mode?, length) of every os.write of the local store."""
    seen: list[tuple[bool, int]] = []
    write = os.write

    def recording(fd: int, data: memoryview) -> int:
        direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & O_DIRECT)
        seen.append((direct, len(data)))
        return write(fd, data)

    monkeypatch.setattr(local_store.os, "write", recording)
    return seen


def _direct_io_here(directory: pathlib.Path) -> bool:
    fd = os.open(directory / "probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | O_DIRECT)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        (directory / "probe").unlink()


def test_local_writes_an_aligned_blob_with_direct_io(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not O_DIRECT or not _direct_io_here(tmp_path):
        pytest.skip("no direct I/O on the file system of the test directory")
    store = LocalStore(tmp_path)
    data = os.urandom(3 * 4096 + 5)
    buffer = AlignedBuffer(len(data))
    buffer.memory[: len(data)] = data
    seen = _writes_seen(monkeypatch)
    store.put("x/blob", buffer.blob(len(data)))
    assert seen == [(True, 4 * 4096)]  # whole blocks, around the page cache
    assert (tmp_path / "x" / "blob").read_bytes() == data  # truncated to the blob


@pytest.mark.parametrize("refusal", ["flag", "write", "short"])
def test_local_aligned_blob_without_direct_io_is_written_plainly(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, refusal: str
) -> None:
    """A file system without O_DIRECT, one that refuses the direct write (EINVAL), or a
    short direct write: the blob is written through the page cache, exactly."""
    store = LocalStore(tmp_path)
    data = os.urandom(2 * 4096 + 77)
    buffer = AlignedBuffer(len(data))
    buffer.memory[: len(data)] = data
    seen = _writes_seen(monkeypatch)
    write, fcntl_ = local_store.os.write, fcntl.fcntl
    if refusal == "flag":

        def no_direct(fd: int, cmd: int, arg: int = 0) -> int:
            if cmd == fcntl.F_SETFL and arg & O_DIRECT:
                raise OSError(errno.EINVAL, "Invalid argument")
            return fcntl_(fd, cmd, arg)

        monkeypatch.setattr(fcntl, "fcntl", no_direct)
    else:

        def refusing(fd: int, view: memoryview) -> int:
            if fcntl_(fd, fcntl.F_GETFL) & O_DIRECT:
                if refusal == "write":
                    raise OSError(errno.EINVAL, "Invalid argument")
                return write(fd, view[:4096])
            return write(fd, view)

        monkeypatch.setattr(local_store.os, "write", refusing)
    store.put("x/blob", buffer.blob(len(data)))
    assert (tmp_path / "x" / "blob").read_bytes() == data
    assert seen and not seen[-1][0]  # the write that counted went through the page cache
    if refusal == "flag":
        assert not any(direct for direct, _ in seen)


def test_local_failed_put_leaves_nothing(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)
    store.put("x/blob", b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(BlobStoreError):
        store.put("x/blob", b"new")
    with pytest.raises(BlobStoreError):
        store.put("x/fresh", b"new")
    monkeypatch.undo()
    assert store.get("x/blob") == b"old", "the old value survives a failed overwrite"
    assert not store.exists("x/fresh")
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["blob"], "no temp file left"


def test_local_transient_os_errors_are_store_unavailable(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)

    def stale(*args: object, **kwargs: object) -> int:
        raise OSError(errno.ESTALE, "Stale file handle")

    monkeypatch.setattr(os, "open", stale)
    with pytest.raises(StoreUnavailable):
        store.get("x/blob")


def test_local_name_conflicting_with_directory(tmp_path: pathlib.Path) -> None:
    store = LocalStore(tmp_path)
    store.put("a/b/c", b"x")
    with pytest.raises(InvalidBlobName):
        store.put("a/b", b"y")
    with pytest.raises(BlobNotFound):
        store.get("a/b")
    assert not store.exists("a/b")
    store.delete("a/b")  # a directory is not a blob: nothing to delete
    store.put("f", b"file")
    with pytest.raises(InvalidBlobName):
        store.put("f/g", b"y")
    assert not store.exists("f/g")
    assert sorted(store.list("")) == ["a/b/c", "f"]


def test_local_ignores_foreign_files(tmp_path: pathlib.Path) -> None:
    store = LocalStore(tmp_path)
    store.put("a/blob", b"x")
    (tmp_path / "a" / "README.TXT").write_text("not a blob")
    (tmp_path / "Upper").mkdir()
    (tmp_path / "Upper" / "x").write_text("not a blob")
    os.symlink(tmp_path / "a" / "blob", tmp_path / "a" / "link")
    assert list(store.list("")) == ["a/blob"]


_WRITER = """
import sys
from csbs.blobstore.local import LocalStore
store = LocalStore(sys.argv[1])
value = bytes([int(sys.argv[2])]) * (512 * 1024)
for _ in range(20):
    store.put("shared/blob", value)
"""


def test_local_puts_from_several_processes(tmp_path: pathlib.Path) -> None:
    store = LocalStore(tmp_path)
    store.put("shared/blob", bytes(512 * 1024))
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(i)])
        for i in range(1, 5)
    ]
    reads = 0
    while any(w.poll() is None for w in writers):
        data = store.get("shared/blob")
        assert len(data) == 512 * 1024 and data == bytes([data[0]]) * len(data), "torn read"
        reads += 1
    assert [w.wait() for w in writers] == [0, 0, 0, 0]
    assert store.get("shared/blob")[0] in (1, 2, 3, 4)
    assert list(store.list("")) == ["shared/blob"]
    assert reads > 0


def test_local_creates_the_root(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "deep" / "root"
    store = LocalStore(root)
    store.put("x", b"1")
    assert (root / "x").read_bytes() == b"1"


def _modes(top: pathlib.Path) -> dict[str, int]:
    """Permission bits of `top` and of everything below it, by path relative to `top`."""
    found = {".": stat.S_IMODE(top.lstat().st_mode)}
    for path in top.rglob("*"):
        found[str(path.relative_to(top))] = stat.S_IMODE(path.lstat().st_mode)
    return found


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_local_directories_are_0700_and_files_0600_whatever_the_umask(
    tmp_path: pathlib.Path, umask: int
) -> None:
    """Blobs hold wrapped keys and backed-up data: the root (and the parents it needed),
    every directory and every blob are the owner's alone, also under a umask that would
    give them to everyone or take the owner's own bits."""
    data = os.urandom(5000)
    buffer = AlignedBuffer(len(data))
    buffer.memory[: len(data)] = data
    old = os.umask(umask)
    try:
        store = LocalStore(tmp_path / "deep" / "root")
        store.put("projects/p1/key", b"k")
        store.put("projects/p1/chunks/ab/blob.1", b"c")
        store.put("projects/p1/chunks/ab/blob.1", b"overwritten")
        store.put("projects/p1/chunks/cd/blob.2", buffer.blob(len(data)))
    finally:
        os.umask(old)
        buffer.close()
    modes = _modes(tmp_path / "deep")
    assert len(modes) == 10  # deep, root, projects, p1, key, chunks, ab, cd and two blobs
    for rel, mode in modes.items():
        is_dir = (tmp_path / "deep" / rel).is_dir()
        assert mode == (0o700 if is_dir else 0o600), f"{rel}: {mode:04o}"
    assert list(store.loose_modes()) == []
    assert store.get("projects/p1/chunks/cd/blob.2") == data


def test_local_reports_and_tightens_loose_modes(tmp_path: pathlib.Path) -> None:
    """What group or others may use is reported, relative to the root, and tightened by
    taking their bits away; links and special files are neither reported nor followed."""
    root = tmp_path / "root"
    store = LocalStore(root)
    store.put("projects/p1/chunks/ab/blob.1", b"c")
    store.put("projects/p1/key", b"k")
    store.put("projects/p2/key", b"k")
    root.chmod(0o750)
    (root / "projects/p1/chunks").chmod(0o755)
    (root / "projects/p1/chunks/ab/blob.1").chmod(0o644)
    (root / "projects/p1/notes~tmp.1").write_bytes(b"left by a crash")
    (root / "projects/p1/notes~tmp.1").chmod(0o666)
    (root / "projects/p2/key").chmod(0o604)
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    (outside / "file").write_bytes(b"not ours")
    (outside / "file").chmod(0o644)
    os.symlink(outside / "file", root / "projects/p1/link")
    os.symlink(outside, root / "projects/p1/linked-dir")
    os.mkfifo(root / "projects/p1/fifo", 0o666)
    expected = [
        LooseMode("", 0o750, True),
        LooseMode("projects/p1/chunks", 0o755, True),
        LooseMode("projects/p1/chunks/ab/blob.1", 0o644, False),
        LooseMode("projects/p1/notes~tmp.1", 0o666, False),
        LooseMode("projects/p2/key", 0o604, False),
    ]
    assert list(store.loose_modes()) == expected
    assert list(store.loose_modes("projects/p1")) == expected[:4]
    assert list(store.loose_modes("projects/p3")) == expected[:1], "only the way there"
    assert list(RetryingStore(store).loose_modes("projects/p2")) == [expected[0], expected[4]]
    assert list(ReadOnlyStore(store).loose_modes()) == expected
    with pytest.raises(StoreReadOnly):
        ReadOnlyStore(store).tighten_mode("")
    with pytest.raises(InvalidBlobName):
        store.loose_modes("../outside")
    for path in ("../outside/file", "/etc", "projects//p1", "projects/./p1"):
        with pytest.raises(InvalidBlobName):
            store.tighten_mode(path)

    for path in ("projects/p1/link", "projects/p1/linked-dir", "projects/p1/linked-dir/file"):
        assert store.tighten_mode(path) is False
    assert store.tighten_mode("projects/p1/fifo") is False
    assert _modes(outside) == {".": 0o755, "file": 0o644}, "a link is never followed"
    assert [RetryingStore(store).tighten_mode(loose.path) for loose in expected] == [True] * 5
    assert list(store.loose_modes()) == []
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "projects/p1/chunks/ab/blob.1").stat().st_mode) == 0o600
    assert store.tighten_mode("projects/p1/key") is False, "already the owner's alone"
    assert store.tighten_mode("projects/p1/gone") is False
    assert store.get("projects/p1/chunks/ab/blob.1") == b"c"


# --- S3 specifics -----------------------------------------------------------------------


def test_s3_retries_are_configured(s3_store_factory: S3Factory) -> None:
    store = s3_store_factory()
    retries = store._client.meta.config.retries  # type: ignore[attr-defined]
    assert retries is not None
    assert retries["mode"] in ("standard", "adaptive")
    assert retries["total_max_attempts"] >= 5


def test_s3_key_prefix_is_applied(s3_store_factory: S3Factory, moto_endpoint: str) -> None:
    if os.environ.get("CSBS_TEST_S3_URL"):
        pytest.skip("needs the moto server")
    plain = s3_store_factory()
    prefixed = s3_store_factory(prefix="tenant/a/")
    prefixed.put("x/blob", b"1")
    assert list(plain.list("")) == ["tenant/a/x/blob"]
    assert list(prefixed.list("")) == ["x/blob"]
    assert prefixed.get("x/blob") == b"1"


def test_s3_unreachable_endpoint_is_store_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port now: every connection is refused at once.
    store = s3.S3Store(
        "bucket",
        endpoint_url=f"http://127.0.0.1:{port}",
        connect_timeout=0.5,
        read_timeout=0.5,
        max_attempts=1,
        access_key="testing",
        secret_key="testing",
    )
    started = time.monotonic()
    for call in (
        lambda: store.put("x", b"1"),
        lambda: store.get("x"),
        lambda: store.exists("x"),
        lambda: list(store.list("")),
    ):
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert isinstance(info.value.__cause__, botocore.exceptions.BotoCoreError)
    assert time.monotonic() - started < 10
    store.close()


class _SlowDownHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request with 503 SlowDown, counting them."""

    requests = 0

    def _reply(self) -> None:
        type(self).requests += 1
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>"
        )
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_DELETE = _reply

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def slow_down_server() -> Iterator[tuple[str, type[_SlowDownHandler]]]:
    handler = type("Handler", (_SlowDownHandler,), {"requests": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()
    thread.join()


def test_s3_throttling_is_retried_then_unavailable(
    slow_down_server: tuple[str, type[_SlowDownHandler]],
) -> None:
    endpoint, handler = slow_down_server
    store = s3.S3Store(
        "bucket", endpoint_url=endpoint, max_attempts=2, access_key="testing", secret_key="testing"
    )
    with pytest.raises(StoreUnavailable):
        store.put("x", b"data")
    assert handler.requests == 2, "botocore retried the throttled request once"
    store.close()


def _client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},  # type: ignore[typeddict-item]
        "GetObject",
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_client_error("NoSuchKey", 404), BlobNotFound),
        (_client_error("404", 404), BlobNotFound),
        (_client_error("SlowDown", 503), StoreUnavailable),
        (_client_error("InternalError", 500), StoreUnavailable),
        (_client_error("ServiceUnavailable", 503), StoreUnavailable),
        (_client_error("Whatever", 502), StoreUnavailable),
        (_client_error("TooManyRequests", 429), StoreUnavailable),
        (_client_error("RequestTimeout", 400), StoreUnavailable),
        (_client_error("AccessDenied", 403), BlobStoreError),
        (_client_error("NoSuchBucket", 404), BlobStoreError),
        (_client_error("InvalidAccessKeyId", 403), BlobStoreError),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), StoreUnavailable),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), StoreUnavailable),
        (botocore.exceptions.ConnectionClosedError(endpoint_url="http://x"), StoreUnavailable),
        (
            botocore.exceptions.IncompleteReadError(actual_bytes=1, expected_bytes=2),
            StoreUnavailable,
        ),
        (botocore.exceptions.NoCredentialsError(), BlobStoreError),
    ],
)
def test_s3_error_translation(error: Exception, expected: type[BlobStoreError]) -> None:
    with pytest.raises(BlobStoreError) as info, s3.translate_errors("the/blob"):
        raise error
    assert type(info.value) is expected
    assert info.value.__cause__ is error
    if expected is BlobNotFound:
        assert info.value.name == "the/blob"  # type: ignore[attr-defined]


def test_s3_create_bucket_is_idempotent(s3_store_factory: S3Factory) -> None:
    store = s3_store_factory()
    store.create_bucket_if_missing()
    store.create_bucket_if_missing()
    store.put("x", b"1")
    assert store.get("x") == b"1"


# --- RetryingStore ----------------------------------------------------------------------


class FlakyStore(MemoryStore):
    """Fails the first `failures` calls of each operation with `error`."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        super().__init__()
        self.failures = failures
        self.error = error or StoreUnavailable("flaky")
        self.calls: dict[str, int] = {}

    def _maybe_fail(self, operation: str) -> None:
        self.calls[operation] = self.calls.get(operation, 0) + 1
        if self.calls[operation] <= self.failures:
            raise self.error

    def put(self, name: str, data: bytes) -> None:
        self._maybe_fail("put")
        super().put(name, data)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self._maybe_fail("get")
        return super().get(name, offset, length)

    def exists(self, name: str) -> bool:
        self._maybe_fail("exists")
        return super().exists(name)

    def delete(self, name: str) -> None:
        self._maybe_fail("delete")
        super().delete(name)

    def size(self, name: str) -> int:
        self._maybe_fail("size")
        return super().size(name)

    def list(self, prefix: str) -> Iterator[str]:
        self._maybe_fail("list")
        return super().list(prefix)


def test_retrying_store_recovers_after_transient_failures() -> None:
    inner = FlakyStore(failures=3)
    sleeps: list[float] = []
    store = RetryingStore(inner, attempts=5, base_delay=0.1, sleep=sleeps.append)
    store.put("a/b", b"data")
    assert inner.calls["put"] == 4
    assert len(sleeps) == 3
    # Exponential back-off with jitter in [0.5, 1] of the nominal delay.
    for attempt, delay in enumerate(sleeps, start=1):
        nominal = 0.1 * 2 ** (attempt - 1)
        assert nominal * 0.5 <= delay <= nominal
    assert store.get("a/b") == b"data"
    assert store.exists("a/b")
    assert store.size("a/b") == 4
    assert list(store.list("a/")) == ["a/b"]
    store.delete("a/b")
    assert not inner.exists("a/b")
    assert len(sleeps) == 3 * 6


def test_retrying_store_gives_up_after_all_attempts() -> None:
    inner = FlakyStore(failures=1_000)
    sleeps: list[float] = []
    store = RetryingStore(inner, attempts=4, base_delay=1.0, max_delay=3.0, sleep=sleeps.append)
    with pytest.raises(StoreUnavailable):
        store.put("a", b"x")
    assert inner.calls["put"] == 4
    assert len(sleeps) == 3
    assert all(d <= 3.0 for d in sleeps), "delays are capped"


@pytest.mark.parametrize("error", [BlobNotFound("a"), BlobStoreError("denied"), StoreReadOnly()])
def test_retrying_store_does_not_retry_permanent_errors(error: BlobStoreError) -> None:
    inner = FlakyStore(failures=1, error=error)
    sleeps: list[float] = []
    store = RetryingStore(inner, sleep=sleeps.append)
    with pytest.raises(type(error)):
        store.get("a")
    assert inner.calls["get"] == 1
    assert sleeps == []


def test_retrying_store_does_not_restart_a_started_listing() -> None:
    class BreaksMidway(MemoryStore):
        def list(self, prefix: str) -> Iterator[str]:
            names = super().list(prefix)

            def generate() -> Iterator[str]:
                yield next(names)
                raise StoreUnavailable("connection lost")

            return generate()

    inner = BreaksMidway()
    inner.put("a", b"")
    inner.put("b", b"")
    sleeps: list[float] = []
    listing = RetryingStore(inner, sleep=sleeps.append).list("")
    assert next(listing) == "a"
    with pytest.raises(StoreUnavailable):
        next(listing)
    assert sleeps == []


def test_retrying_store_validates_list_prefix_eagerly() -> None:
    with pytest.raises(InvalidBlobName):
        RetryingStore(MemoryStore()).list("BAD")


def test_retrying_store_over_unreachable_s3_gives_up() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inner = s3.S3Store(
        "bucket",
        endpoint_url=f"http://127.0.0.1:{port}",
        max_attempts=1,
        access_key="testing",
        secret_key="testing",
    )
    sleeps: list[float] = []
    with pytest.raises(StoreUnavailable):
        RetryingStore(inner, attempts=3, sleep=sleeps.append).get("x")
    assert len(sleeps) == 2
    inner.close()


# --- Registry ------------------------------------------------------------------------


def test_open_store_file(tmp_path: pathlib.Path) -> None:
    store = open_store(f"file://{tmp_path}/with%20space")
    assert isinstance(store, LocalStore)
    store.put("x", b"1")
    assert (tmp_path / "with space" / "x").read_bytes() == b"1"


def test_open_store_memory() -> None:
    first, second = open_store("memory://"), open_store("memory://")
    assert isinstance(first, MemoryStore)
    first.put("x", b"1")
    assert not second.exists("x"), "each memory:// store is its own"


def test_open_store_s3(s3_store_factory: S3Factory, moto_endpoint: str) -> None:
    if os.environ.get("CSBS_TEST_S3_URL"):
        pytest.skip("needs the moto server")
    plain = s3_store_factory()
    url = (
        f"s3://{plain.bucket}/some/prefix?endpoint_url={moto_endpoint}"
        "&region=us-east-1&access_key=testing&secret_key=testing"
    )
    store = open_store(url)
    assert isinstance(store, s3.S3Store)
    store.put("x", b"1")
    assert list(plain.list("")) == ["some/prefix/x"]
    store.close()


def test_open_store_s3_credentials_from_environment(
    s3_store_factory: S3Factory, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.environ.get("CSBS_TEST_S3_URL"):
        pytest.skip("needs the moto server")
    plain = s3_store_factory()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-from-env")
    store = open_store(f"s3://{plain.bucket}?endpoint_url={moto_endpoint}")
    assert isinstance(store, s3.S3Store)
    credentials = store._client._get_credentials()  # type: ignore[attr-defined]
    assert credentials is not None
    assert credentials.access_key == "from-env"
    store.put("x", b"1")
    assert plain.get("x") == b"1"
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/path",
        "relative/path",
        "file://relative/path",
        "file:///abs?query=1",
        "memory://name",
        "memory://?x=1",
        "s3://",
        "s3:///prefix",
        "s3://bucket?unknown=1",
        "s3://bucket?addressing_style=sideways",
        "s3://bucket?checksums=never",
        "s3://bucket/BAD/Prefix",
        "s3://bucket/a//b",
    ],
)
def test_open_store_rejects_bad_urls(url: str) -> None:
    with pytest.raises(InvalidStoreUrl):
        open_store(url)
