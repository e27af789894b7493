"""Disks opened once, confined beneath an inventory root, and used by file descriptor.

A disk path names a file inside a directory tree that tenants and guests may be able to
change (an image directory, a guest's share). Checking a path and opening it later lets a
rename or a symlink swapped in between send the read or the write elsewhere. So a disk is
opened exactly once, with no symlink followed at any component and no way out of its root:
`openat2(2)` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS` from the
root's directory fd, or, on kernels without it, a walk from that fd with `O_NOFOLLOW` at
every step. What was opened is then checked as an fd (kind, identity, link count, not a
file of the service's own) and that fd is what backups, snapshots and restores use.

The standard library has no `openat2`; it is called through `ctypes` (one syscall with a
three-field struct), which keeps this free of a compiled dependency.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import os
import platform
import stat
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType

from csbs.domain import errors

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS

#: `openat2` has the same number on every architecture that has it (the unified table).
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "arm64": 437, "riscv64": 437, "ppc64le": 437}


class DiskRefused(errors.InvalidInput):
    """The disk cannot be used."""

    code = "CSBS.9001"


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


class _Openat2:
    """`openat2(2)` through libc's `syscall`, or None where the kernel lacks it."""

    def __init__(self) -> None:
        self.available = False
        number = _SYS_OPENAT2.get(platform.machine())
        if number is None:
            return
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            self._syscall = libc.syscall
        except (OSError, AttributeError):
            return
        self._syscall.restype = ctypes.c_long
        self._number = number
        # A probe that must succeed: "." beneath the root directory.
        try:
            os.close(self(os.open("/", os.O_PATH | os.O_CLOEXEC), ".", os.O_PATH, close_dir=True))
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.EPERM):
                raise
            return
        self.available = True

    def __call__(self, dir_fd: int, name: str, flags: int, *, close_dir: bool = False) -> int:
        how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE)
        try:
            fd = self._syscall(
                ctypes.c_long(self._number),
                ctypes.c_int(dir_fd),
                ctypes.c_char_p(os.fsencode(name)),
                ctypes.byref(how),
                ctypes.c_size_t(ctypes.sizeof(how)),
            )
            if fd < 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), name)
            return int(fd)
        finally:
            if close_dir:
                os.close(dir_fd)


_openat2: _Openat2 | None = None


def _kernel_openat2() -> _Openat2:
    global _openat2
    if _openat2 is None:
        _openat2 = _Openat2()
    return _openat2


@dataclasses.dataclass(frozen=True)
class Identity:
    """What a disk is, as the kernel knows it: an inode of a file, or a block device number.

    Its text form is stored with the disk at registration and compared at every use, so a
    file put in the registered one's place (another tenant's image, say) is not used.
    """

    kind: str  # "file" or "block"
    first: int  # st_dev of a file, st_rdev of a block device
    second: int = 0  # st_ino of a file

    def __str__(self) -> str:
        if self.kind == "block":
            return f"block:{self.first}"
        return f"file:{self.first}:{self.second}"

    @classmethod
    def of(cls, st: os.stat_result) -> Identity:
        if stat.S_ISBLK(st.st_mode):
            return cls("block", st.st_rdev)
        return cls("file", st.st_dev, st.st_ino)


@dataclasses.dataclass(frozen=True)
class Rules:
    """What may be opened: beneath which roots, and which files never (the service's own)."""

    roots: tuple[Path, ...]
    #: Paths of files the service owns (master key, database): a disk that is one of them
    #: (through a hard link, say) is refused whatever else is allowed.
    protected: Callable[[], Iterable[Path]] = tuple

    def protected_identities(self) -> set[tuple[int, int]]:
        out: set[tuple[int, int]] = set()
        for p in self.protected():
            with contextlib.suppress(OSError):
                st = os.stat(p)
                out.add((st.st_dev, st.st_ino))
        return out


class OpenDisk:
    """A disk opened beneath its root; `fd` is what reads and writes go through.

    `dir_fd` is the directory that holds it (an `O_PATH` fd), where a snapshot clone is
    made as an unnamed file; `path` is its canonical name (the root's real path and the
    components below it), the form a registration stores.
    """

    def __init__(self, fd: int, dir_fd: int, path: str, st: os.stat_result) -> None:
        self.fd = fd
        self.dir_fd = dir_fd
        self.path = path
        self.identity = Identity.of(st)
        self.is_block = stat.S_ISBLK(st.st_mode)
        self.size = os.lseek(fd, 0, os.SEEK_END)

    def close(self) -> None:
        for fd in (self.fd, self.dir_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fd = self.dir_fd = -1

    def __enter__(self) -> OpenDisk:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def split_beneath(path: str, roots: Sequence[Path]) -> tuple[Path, list[str]]:
    """The root that `path` lies beneath, and its components below that root.

    The comparison is textual: `path` must be absolute and normal (no `.`, `..` or empty
    component). A root is compared as configured and as its real path, so a disk registered
    under either form is found; nothing below the root is resolved here.

    Raises:
        DiskRefused: not absolute, not normal, or beneath no root.
    """
    if not path or "\x00" in path:
        raise DiskRefused("disk path must not be empty")
    if not path.startswith("/"):
        raise DiskRefused(f"disk path {path!r} must be absolute")
    parts = path.split("/")[1:]
    if any(p in ("", ".", "..") for p in parts):
        raise DiskRefused(f"disk path {path!r} must not contain '..', '.' or '//'")
    for root in roots:
        for form in dict.fromkeys((Path(os.path.abspath(root)), Path(os.path.realpath(root)))):
            base = [] if str(form) == "/" else str(form).split("/")[1:]
            if parts[: len(base)] == base and len(parts) > len(base):
                return Path(os.path.realpath(root)), parts[len(base) :]
    raise DiskRefused(
        f"disk path {path!r} is outside the inventory roots ({', '.join(map(str, roots))})"
    )


def _open_walk(root_fd: int, parts: list[str], flags: int) -> tuple[int, int]:
    """(directory fd, leaf fd) by a walk with `O_NOFOLLOW` at every component."""
    dir_fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            # O_DIRECTORY with O_NOFOLLOW: a symlink fails (ENOTDIR), it is never followed.
            nxt = os.open(
                part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
            )
            os.close(dir_fd)
            dir_fd = nxt
        leaf = os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except BaseException:
        os.close(dir_fd)
        raise
    return dir_fd, leaf


def _open_beneath(root_fd: int, parts: list[str], flags: int) -> tuple[int, int]:
    openat2 = _kernel_openat2()
    if not openat2.available:
        return _open_walk(root_fd, parts, flags)
    parent = "/".join(parts[:-1]) or "."
    dir_fd = openat2(root_fd, parent, os.O_PATH | os.O_DIRECTORY)
    try:
        leaf = openat2(dir_fd, parts[-1], flags)
    except BaseException:
        os.close(dir_fd)
        raise
    return dir_fd, leaf


def open_disk(
    path: str,
    rules: Rules,
    *,
    write: bool,
    expected: str | None = None,
    allow_hardlinks: bool = False,
) -> OpenDisk:
    """Open a disk once, beneath its root, and check what was opened.

    `write` opens it for reading and writing (a restore; a registration checks that it
    could be). `expected` is the identity recorded at registration (None: not checked).
    A regular file with more than one link is refused unless `allow_hardlinks`: a hard
    link puts a file from anywhere on the file system beneath a root.

    Raises:
        DiskRefused: the path is not normal or beneath no root, a component is a symlink or
            missing, it is not a regular file or block device, not the registered disk, a
            hard link, one of the service's own files, or cannot be opened.
    """
    root, parts = split_beneath(path, rules.roots)
    # O_NONBLOCK: a FIFO swapped in must not hang the open; it is refused below.
    flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_NOCTTY | os.O_NONBLOCK
    try:
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise DiskRefused(f"inventory root {root} cannot be opened") from e
    try:
        dir_fd, fd = _open_beneath(root_fd, parts, flags)
    except OSError as e:
        raise DiskRefused(_why(path, e)) from e
    finally:
        os.close(root_fd)
    try:
        st = os.fstat(fd)
        _check(path, st, rules, expected=expected, allow_hardlinks=allow_hardlinks)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return OpenDisk(fd, dir_fd, str(root.joinpath(*parts)), st)
    except BaseException:
        os.close(fd)
        os.close(dir_fd)
        raise


def _why(path: str, e: OSError) -> str:
    if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
        return f"disk path {path!r} has a symlink in it (or a component that is no directory)"
    if e.errno == errno.ENOENT:
        return f"disk path {path!r} does not exist"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"disk path {path!r} is not readable and writable by csbs"
    if e.errno == errno.EISDIR:
        return f"disk path {path!r} is not a regular file or block device"
    return f"disk path {path!r} cannot be opened ({errno.errorcode.get(e.errno or 0, 'error')})"


def _check(
    path: str, st: os.stat_result, rules: Rules, *, expected: str | None, allow_hardlinks: bool
) -> None:
    regular = stat.S_ISREG(st.st_mode)
    if not (regular or stat.S_ISBLK(st.st_mode)):
        raise DiskRefused(f"disk path {path!r} is not a regular file or block device")
    if regular and (st.st_dev, st.st_ino) in rules.protected_identities():
        raise DiskRefused(f"disk path {path!r} is a file of the service itself")
    if regular and st.st_nlink > 1 and not allow_hardlinks:
        raise DiskRefused(
            f"disk path {path!r} is a hard link ({st.st_nlink} links); an admin may allow "
            "hard links for this server"
        )
    if expected is not None and str(Identity.of(st)) != expected:
        raise DiskRefused(
            f"disk path {path!r} is no longer the file or device registered for it; "
            "an admin may accept the new one (csbs server refresh)"
        )
