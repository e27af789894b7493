"""Disks over NBD (libnbd): read a point-in-time export, write a restore target.

`NbdExport` reads an export by ranges and answers from the export's block status which
ranges hold data (`base:allocation`: holes and zeroes are never read) and, for an
incremental backup, which changed since a checkpoint (`qemu:dirty-bitmap:<name>`).
Block status is asked for large windows ahead of the reads, so a long run of holes or
unchanged extents costs one request, not one per chunk. Reads are synchronous: libnbd
1.14's asynchronous reads (Debian 12's binding) keep a reference to every buffer they
were given, so a backup kept every byte it read.

`QemuNbd` runs `qemu-nbd` on an image file with its format (qcow2 stays qcow2: NBD
carries the guest's bytes, never the container's), for a stopped domain's disk or a
restore target. A worker killed while it serves one (kill -9) leaves nothing behind that
stops the next attempt: qemu-nbd is killed when the thread that started it dies (its
parent-death signal), so its lock on the image goes with it, and the socket directory
it lay in (named after the worker's pid) is removed by the next `QemuNbd` on the host.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbd

from csbs.domain import errors
from csbs.hypervisor.errors import NbdError

BASE_ALLOCATION = "base:allocation"
DIRTY_PREFIX = "qemu:dirty-bitmap:"
STATE_ZERO = 2  # base:allocation: the extent reads as zeros
DIRTY = 1  # qemu:dirty-bitmap: the extent changed
_WINDOW = 1 << 30  # bytes of block status asked for at once
_MAX_REQUEST = 32 << 20  # the largest NBD read or write request
_ZERO_STEP = 1 << 30  # bytes zeroed per request (NBD lengths are 32-bit)
_SOCKET_DIR = "csbs-nbd-"  # + the pid of the process that serves through it, "-", random


@dataclass
class _Extents:
    """What block status said of one meta context, from `start` to `end`, in order."""

    items: collections.deque[tuple[int, int, int]] = field(default_factory=collections.deque)
    end: int = 0  # offset up to which items are known


class NbdExport:
    """An NBD export read by range, with its block status.

    `bytes_read` counts the bytes actually read over NBD (holes, zeroes and unchanged
    extents skipped), which is what an incremental backup is measured by.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        export_name: str = "",
        dirty_bitmap: str | None = None,
        *,
        writable: bool = False,
    ) -> None:
        self._handle: Any = nbd.NBD()
        self._contexts = [BASE_ALLOCATION]
        self._dirty = f"{DIRTY_PREFIX}{dirty_bitmap}" if dirty_bitmap else None
        if self._dirty is not None:
            self._contexts.append(self._dirty)
        try:
            for context in self._contexts:
                self._handle.add_meta_context(context)
            self._handle.set_export_name(export_name)
            self._handle.connect_unix(str(socket_path))
            self.size: int = self._handle.get_size()
            for context in self._contexts:
                if not self._handle.can_meta_context(context):
                    raise NbdError(f"the NBD export does not offer {context}")
            if writable and self._handle.is_read_only():
                raise NbdError("the NBD export is read-only")
        except nbd.Error as exc:
            self.close()
            raise NbdError(f"NBD export {export_name!r}: {exc.string}") from exc
        self._extents = {c: _Extents() for c in self._contexts}
        self.bytes_read = 0

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            with contextlib.suppress(nbd.Error):
                handle.shutdown()
            del handle  # libnbd closes the connection when the handle is freed

    def __enter__(self) -> NbdExport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- block status -------------------------------------------------------------------

    def _fill(self, context: str, end: int) -> None:
        """Ask block status until `context` is known up to `end`."""
        known = self._extents[context]
        while known.end < end:
            start = known.end
            length = min(self.size - start, _WINDOW)

            def got(meta: str, offset: int, entries: list[int], err: int) -> int:
                extents = self._extents.get(meta)
                # Extents of another context are kept only where they follow what is known.
                if extents is None or offset != extents.end:
                    return 0
                for i in range(0, len(entries), 2):
                    size, flags = entries[i], entries[i + 1]
                    size = min(size, self.size - extents.end)
                    if size <= 0:
                        break
                    extents.items.append((extents.end, size, flags))
                    extents.end += size
                return 0

            try:
                self._handle.block_status(length, start, got)
            except nbd.Error as exc:
                raise NbdError(f"block status at {start}: {exc.string}") from exc
            if known.end == start:
                raise NbdError(f"the export gave no block status at {start}")

    def _status(self, context: str, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
        """The extents of `context` overlapping [offset, offset + length), clipped to it."""
        end = offset + length
        self._fill(context, end)
        known = self._extents[context]
        # Reads go forward: what ends before `offset` is not needed again.
        while known.items and known.items[0][0] + known.items[0][1] <= offset:
            known.items.popleft()
        for start, size, flags in known.items:
            if start >= end:
                break
            lo, hi = max(start, offset), min(start + size, end)
            yield lo, hi - lo, flags

    def data_ranges(self, offset: int, length: int) -> list[tuple[int, int]]:
        """The ranges of [offset, offset + length) that may hold data (not zero extents)."""
        out: list[tuple[int, int]] = []
        for start, size, flags in self._status(BASE_ALLOCATION, offset, length):
            if flags & STATE_ZERO:
                continue
            if out and out[-1][0] + out[-1][1] == start:
                out[-1] = (out[-1][0], out[-1][1] + size)
            else:
                out.append((start, size))
        return out

    def changed(self, offset: int, length: int) -> bool:
        """Whether [offset, offset + length) changed since the checkpoint (True when no
        dirty bitmap is exported: everything is to be read)."""
        if self._dirty is None:
            return True
        return any(flags & DIRTY for _, _, flags in self._status(self._dirty, offset, length))

    # -- reads --------------------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        """The bytes of [offset, offset + length), read whole, without block status (a
        chunk read again, out of order, is read so: the block status kept ahead of the
        reads in order no longer covers it)."""
        try:
            pieces = []
            for start in range(offset, offset + length, _MAX_REQUEST):
                size = min(_MAX_REQUEST, offset + length - start)
                pieces.append(self._handle.pread(size, start))
        except nbd.Error as exc:
            raise NbdError(f"read at {offset}: {exc.string}") from exc
        self.bytes_read += length
        return b"".join(pieces)  # libnbd gives bytearrays: the chunk is bytes

    def read_ranges(self, offset: int, length: int, ranges: list[tuple[int, int]]) -> bytes:
        """The bytes of [offset, offset + length), reading only `ranges` (within it, in
        order, each at most 32 MiB); zeros elsewhere."""
        if ranges == [(offset, length)]:
            return self.read(offset, length)
        out = bytearray(length)
        for start, size in ranges:
            out[start - offset : start - offset + size] = self.read(start, size)
        return bytes(out)

    # -- writes (a restore target) ------------------------------------------------------

    def write_at(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        try:
            for start in range(0, len(view), _MAX_REQUEST):
                self._handle.pwrite(view[start : start + _MAX_REQUEST], offset + start)
        except nbd.Error as exc:
            raise NbdError(f"write at {offset}: {exc.string}") from exc

    def zero_at(self, offset: int, length: int) -> None:
        try:
            for start in range(offset, offset + length, _ZERO_STEP):
                size = min(_ZERO_STEP, offset + length - start)
                self._handle.zero(size, start)  # may leave holes: thin stays thin
        except nbd.Error as exc:
            raise NbdError(f"zeroing at {offset}: {exc.string}") from exc

    def flush(self) -> None:
        try:
            self._handle.flush()
        except nbd.Error as exc:
            raise NbdError(f"flush: {exc.string}") from exc


class QemuNbd:
    """`qemu-nbd` serving one image file with its format on a private unix socket.

    qemu-nbd is killed when the thread that entered this dies: enter and leave it in the
    thread that uses it (a task's)."""

    def __init__(self, image: str | os.PathLike[str], fmt: str, *, writable: bool) -> None:
        if fmt not in ("raw", "qcow2"):
            raise errors.InvalidInput(f"disk format {fmt!r} is not supported", code="CSBS.6041")
        self._image = Path(image)
        self._fmt = fmt
        self._writable = writable
        self._dir: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.socket = ""

    def __enter__(self) -> QemuNbd:
        self._dir = tempfile.mkdtemp(prefix=f"{_SOCKET_DIR}{os.getpid()}-")
        _remove_dead_socket_dirs(Path(self._dir).parent)
        self.socket = os.path.join(self._dir, "nbd.sock")
        command = [
            *_dies_with_parent(),
            shutil.which("qemu-nbd") or "qemu-nbd",
            "--format",
            self._fmt,
            "--socket",
            self.socket,
            "--export-name",
            "",
            "--cache",
            "none" if self._writable else "writeback",
            "--aio",
            "threads",
            "--discard",
            "unmap",
            "--detect-zeroes",
            "unmap" if self._writable else "off",
        ]
        if not self._writable:
            command.append("--read-only")
        command.append(str(self._image))
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 30
        while not os.path.exists(self.socket):
            if self._process.poll() is not None:
                err = self._stopped_with()
                self._cleanup()
                raise NbdError(f"qemu-nbd could not open {self._image}: {err}")
            if time.monotonic() > deadline:
                self._cleanup()
                raise NbdError(f"qemu-nbd did not start for {self._image}")
            time.sleep(0.01)
        return self

    def connect(self) -> NbdExport:
        """The export, connected (writable if the server is)."""
        deadline = time.monotonic() + 30
        while True:
            try:
                return NbdExport(self.socket, "", writable=self._writable)
            except NbdError as exc:
                # qemu-nbd's socket appears before it opens the image and accepts: one
                # that failed meanwhile (a lock another process holds, not an image of
                # its format) says why; one still opening refuses connections a moment.
                process = self._process
                if process is not None and process.poll() is not None:
                    raise NbdError(
                        f"qemu-nbd could not open {self._image}: {self._stopped_with()}"
                    ) from exc
                refused = getattr(exc.__cause__, "errno", None) == "ECONNREFUSED"  # libnbd's name
                if not refused:
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _stopped_with(self) -> str:
        process = self._process
        if process is None or process.stderr is None:
            return ""
        return process.stderr.read().decode(errors="replace").strip()

    def __exit__(self, *exc: object) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _dies_with_parent() -> list[str]:
    """The prefix that kills qemu-nbd when the thread that started it dies (util-linux's
    setpriv; without it, a killed worker's qemu-nbd may outlive it, holding its image).

    SIGKILL, not SIGTERM: qemu-nbd loses a SIGTERM that comes while it opens the image
    (it sets its state to running afterwards), and the worker may die just then. What
    it leaves is a restore target the next attempt writes whole again, or an image it
    only read."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL"] if setpriv else []


_DIR_PID = re.compile(re.escape(_SOCKET_DIR) + r"(\d+)-")


def _remove_dead_socket_dirs(parent: Path) -> None:
    """Remove the socket directories of processes that are gone (killed workers')."""
    for entry in parent.glob(f"{_SOCKET_DIR}*"):
        match = _DIR_PID.match(entry.name)
        if match is None:
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's
