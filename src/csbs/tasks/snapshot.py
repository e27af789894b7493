"""Point-in-time copies of disk image files before they are read."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator

from csbs.domain.backups import CONSISTENCY_CRASH, CONSISTENCY_NONE
from csbs.fileio.confined import OpenDisk

log = logging.getLogger("csbs.tasks")

#: Linux ioctl that makes `dst` share `src`'s extents (btrfs, XFS with reflink, bcachefs).
FICLONE = 0x40049409


@contextlib.contextmanager
def point_in_time(disk: OpenDisk) -> Iterator[tuple[int, str]]:
    """Yield (the fd to read, consistency obtained).

    For an image file on a file system with reflinks, a clone taken now from the disk's
    fd: every later write to the image leaves the clone as it was, so the backup is
    crash-consistent. The clone is an unnamed file (`O_TMPFILE`) in the image's directory,
    so no name is created where a tenant could swap it, and it is gone when closed.
    Otherwise (block devices, ext4) the live fd, recorded as inconsistent.
    """
    if disk.is_block:
        yield disk.fd, CONSISTENCY_NONE
        return
    try:
        clone = os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600, dir_fd=disk.dir_fd)
    except OSError:
        yield disk.fd, CONSISTENCY_NONE
        return
    try:
        try:
            fcntl.ioctl(clone, FICLONE, disk.fd)
        except OSError:
            log.info("no reflink support for %s: reading the live image", disk.path)
            yield disk.fd, CONSISTENCY_NONE
            return
        yield clone, CONSISTENCY_CRASH
    finally:
        os.close(clone)
