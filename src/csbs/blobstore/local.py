"""Blobs as files under a root directory: temp file, fsync, rename, fsync the directory."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator

from csbs.blobstore import base, errors
from csbs.blobstore.aligned import AlignedBlob
from csbs.fileio import loops
from csbs.fileio.direct import end_direct, start_direct

# Marks temporary files. `~` can never occur in a valid name, so `list` (which yields only
# valid names) never shows a temp file, and a temp file can never shadow a blob.
_TEMP_MARK = "~tmp."

# Blobs hold wrapped keys and backed-up data: only the store's owner may use them.
DIR_MODE = 0o700
FILE_MODE = 0o600
_LOOSE_BITS = 0o077  # group and others

# errno values that a network file system reports for conditions that clear up by
# themselves; everything else from the OS is a plain BlobStoreError.
_TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.ETIMEDOUT, errno.ESTALE})


class LocalStore:
    """Blobs as regular files below `root`; a name's segments are its directories.

    Writes go to a uniquely named temp file in the target directory, which is fsynced,
    renamed over the final name (atomic on POSIX, also across processes) and followed by
    an fsync of the directory, so neither a reader nor a crash ever exposes a partial
    blob. New directories are fsynced into their parents too. Empty directories are left
    in place after deletes: removing them would race with a concurrent put into them.
    An `AlignedBlob` is written with direct I/O where the file system allows it
    (`_write_aligned`), around the page cache. Other written blobs' pages leave the page
    cache once fsynced, and a read blob's once read (`_drop_cached`): blobs are read again
    rarely, by a restore or an audit, and dropped pages are reused for the next blob
    instead of fresh ones.

    Every directory the store creates (the root and its missing parents too) is 0700 and
    every file 0600, whatever the umask; `loose_modes` finds what is not (blobs written
    before, a root made by someone else) and `tighten_mode` mends it (`FileModes`).

    The store keeps no mutable state, so one object may be shared by threads and any
    number of processes may use the same root at once.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        with _os_errors("create root", self.root):
            _make_dirs(self.root)

    def __repr__(self) -> str:
        return f"LocalStore({self.root!r})"

    def _path(self, name: str) -> str:
        return os.path.join(self.root, *base.validate_name(name).split("/"))

    def put(self, name: str, data: base.BlobValue) -> None:
        path = self._path(name)
        directory, basename = os.path.split(path)
        self._ensure_dir(directory, name)
        tmp = os.path.join(directory, f"{basename}{_TEMP_MARK}{secrets.token_hex(8)}")
        with _os_errors("put", name):
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
                try:
                    os.fchmod(fd, FILE_MODE)  # the umask may have taken the owner's bits
                    if isinstance(data, AlignedBlob):
                        _write_aligned(fd, data)
                    else:
                        loops.write_all(fd, data)
                    os.fsync(fd)
                    _drop_cached(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                if isinstance(exc, IsADirectoryError):
                    raise errors.InvalidBlobName(name, "other blobs are stored below it") from exc
                raise
            _fsync_dir(directory)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(name)
        base.check_range(offset, length)
        with _os_errors("get", name):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError) as exc:
                raise errors.BlobNotFound(name) from exc
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise errors.BlobNotFound(name)
                # The file behind `fd` never changes: puts replace the directory entry,
                # never the content, so st_size is exact for the whole read.
                end = st.st_size if length is None else min(st.st_size, offset + length)
                data = loops.pread_exact(fd, max(0, end - offset), offset)
                _drop_cached(fd)
                return data
            finally:
                os.close(fd)

    def exists(self, name: str) -> bool:
        path = self._path(name)
        with _os_errors("exists", name):
            try:
                return stat.S_ISREG(os.stat(path).st_mode)
            except (FileNotFoundError, NotADirectoryError):
                return False

    def delete(self, name: str) -> None:
        path = self._path(name)
        with _os_errors("delete", name):
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                # Missing (or a directory, which is not a blob): nothing to delete.
                return
            _fsync_dir(os.path.dirname(path))

    def list(self, prefix: str) -> Iterator[str]:
        base.validate_prefix(prefix)
        head, _, partial = prefix.rpartition("/")
        directory = os.path.join(self.root, *head.split("/")) if head else self.root
        return self._walk(directory, f"{head}/" if head else "", partial)

    def _walk(self, directory: str, rel: str, name_prefix: str) -> Iterator[str]:
        # Depth-first, entries sorted per directory: streamed with memory bounded by one
        # directory listing, and stable for an unchanged tree.
        with _os_errors("list", rel or "/"):
            try:
                with os.scandir(directory) as it:
                    entries = sorted(
                        (entry.name, entry.is_dir(follow_symlinks=False))
                        for entry in it
                        if entry.name.startswith(name_prefix)
                        and (
                            entry.is_dir(follow_symlinks=False)
                            or entry.is_file(follow_symlinks=False)
                        )
                    )
            except (FileNotFoundError, NotADirectoryError):
                return
        for entry_name, is_dir in entries:
            name = rel + entry_name
            if not base.is_valid_name(name):
                continue  # temp files and anything foreign
            if is_dir:
                yield from self._walk(os.path.join(directory, entry_name), name + "/", "")
            else:
                yield name

    def size(self, name: str) -> int:
        path = self._path(name)
        with _os_errors("size", name):
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError) as exc:
                raise errors.BlobNotFound(name) from exc
        if not stat.S_ISREG(st.st_mode):
            raise errors.BlobNotFound(name)
        return st.st_size

    def close(self) -> None:
        pass

    def loose_modes(self, under: str = "") -> Iterator[base.LooseMode]:
        segments = tuple(base.validate_name(under).split("/")) if under else ()
        return self._loose_modes(segments)

    def _loose_modes(self, segments: tuple[str, ...]) -> Iterator[base.LooseMode]:
        path, rel = self.root, ""
        for segment in segments:
            st = self._lstat(path, rel)
            if st is None or not stat.S_ISDIR(st.st_mode):
                return
            if loose := _loose(rel, st):
                yield loose
            path, rel = os.path.join(path, segment), f"{rel}/{segment}" if rel else segment
        st = self._lstat(path, rel)
        if st is None:
            return
        if loose := _loose(rel, st):
            yield loose
        if stat.S_ISDIR(st.st_mode):
            yield from self._loose_below(path, rel)

    def _loose_below(self, directory: str, rel: str) -> Iterator[base.LooseMode]:
        # Like `_walk`: depth-first, sorted per directory, one listing in memory at a time.
        entries = []
        with _os_errors("check modes", rel or "/"):
            try:
                with os.scandir(directory) as it:
                    for entry in it:
                        try:
                            entries.append((entry.name, entry.stat(follow_symlinks=False)))
                        except FileNotFoundError:
                            continue  # a temp file renamed meanwhile, a blob deleted
            except (FileNotFoundError, NotADirectoryError):
                return
        entries.sort(key=lambda named: named[0])
        for entry_name, st in entries:
            name = f"{rel}/{entry_name}" if rel else entry_name
            if loose := _loose(name, st):
                yield loose
            if stat.S_ISDIR(st.st_mode):
                yield from self._loose_below(os.path.join(directory, entry_name), name)

    def _lstat(self, path: str, rel: str) -> os.stat_result | None:
        with _os_errors("check modes", rel or "/"):
            try:
                return os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                return None

    def tighten_mode(self, path: str) -> bool:
        segments = path.split("/") if path else []
        if any(segment in ("", ".", "..") or "\0" in segment for segment in segments):
            raise errors.InvalidBlobName(path, "not a path below the store's root")
        with _os_errors("tighten mode", path or "/"):
            try:
                fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError):
                return False
            try:
                for segment in segments:
                    fd = _open_below(fd, segment)
                    if fd < 0:
                        return False
                st = os.fstat(fd)
                mode = stat.S_IMODE(st.st_mode)
                if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                    return False
                if not mode & _LOOSE_BITS:
                    return False
                os.fchmod(fd, mode & DIR_MODE)
                return True
            finally:
                if fd >= 0:
                    os.close(fd)

    def _ensure_dir(self, directory: str, name: str) -> None:
        if os.path.isdir(directory):
            return
        missing = []
        current = directory
        while not os.path.isdir(current):
            missing.append(current)
            current = os.path.dirname(current)
        with _os_errors("put", name):
            for path in reversed(missing):
                try:
                    _make_dir(path)
                except FileExistsError as exc:
                    if not os.path.isdir(path):
                        raise errors.InvalidBlobName(
                            name, "a parent path is itself a blob"
                        ) from exc
                # Also when another writer won the mkdir race: its fsync of the parent
                # may not have happened yet, and our put must not return before it has.
                _fsync_dir(os.path.dirname(path))


def _make_dir(path: str) -> None:
    """Create the directory `path` 0700, whatever the umask; FileExistsError if it exists."""
    os.mkdir(path, DIR_MODE)
    # Only ever tighter than DIR_MODE until here: the umask can take bits, never add them.
    os.chmod(path, DIR_MODE)


def _make_dirs(path: str) -> None:
    """Create the directory `path` and its missing parents, each 0700."""
    missing = []
    current = path
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            _make_dir(directory)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise
            # Made meanwhile by someone else, with a mode of their choosing.


def _open_below(dir_fd: int, name: str) -> int:
    """Open the directory or regular file `name` of `dir_fd` (closed in any case) without
    following a link, so that what a check found is what gets changed; -1 if it is gone,
    a link or a special file."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        elif stat.S_ISREG(st.st_mode):
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        else:
            return -1
        return os.open(name, flags, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return -1
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return -1  # replaced by a link since
        raise
    finally:
        os.close(dir_fd)


def _loose(rel: str, st: os.stat_result) -> base.LooseMode | None:
    """`rel`'s finding if it is a directory or regular file with group or others' bits."""
    is_dir = stat.S_ISDIR(st.st_mode)
    mode = stat.S_IMODE(st.st_mode)
    if (is_dir or stat.S_ISREG(st.st_mode)) and mode & _LOOSE_BITS:
        return base.LooseMode(rel, mode, is_dir)
    return None


@contextlib.contextmanager
def _os_errors(operation: str, name: str) -> Iterator[None]:
    """Turn OS errors that escape the caller's own handling into blob store errors."""
    try:
        yield
    except OSError as exc:
        message = f"{operation} {name!r}: {exc.strerror or exc}"
        if exc.errno in _TRANSIENT_ERRNOS:
            raise errors.StoreUnavailable(message) from exc
        raise errors.BlobStoreError(message) from exc


def _write_aligned(fd: int, blob: AlignedBlob) -> None:
    """Write `blob` to the new, empty file `fd` with direct I/O where the file system
    allows it (decision 0012): from the blob's page-aligned memory straight to the disk,
    without a copy into the page cache (on a virtual machine that copy often lands in
    pages the host backs only when first touched) and with nothing left for the fsync to
    write back but metadata. The write covers whole blocks; the file is then truncated to
    the blob's length. Elsewhere, or if the write is refused or short, a plain write."""
    flags = start_direct(fd) if blob.length else None
    if flags is not None:
        try:
            with blob.padded_view() as view:
                whole = os.write(fd, view) == len(view)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            whole = False  # the flag was accepted, the write is not
        finally:
            end_direct(fd, flags)
        if whole:
            os.ftruncate(fd, blob.length)
            return
        os.ftruncate(fd, 0)  # start again, plainly
        os.lseek(fd, 0, os.SEEK_SET)
    with blob.view() as view:
        loops.write_all(fd, view)


def _drop_cached(fd: int) -> None:
    """Drop a file's pages from the page cache once it is on disk (they are clean then).

    A blob is written once and read rarely (a restore, an audit), so its pages are better
    reused for the next blob than kept: on a virtual machine whose free memory the host
    backs only when first touched, writing every blob into fresh pages cost a first backup
    much kernel CPU (docs/decisions/0008-written-data-leaves-the-page-cache.md)."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
