"""Point-in-time copies of disk image files before they are read."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from csbs.domain.backups import CONSISTENCY_CRASH, CONSISTENCY_NONE

log = logging.getLogger("csbs.tasks")

#: Linux ioctl that makes `dst` share `src`'s extents (btrfs, XFS with reflink, bcachefs).
FICLONE = 0x40049409


@contextlib.contextmanager
def point_in_time(path: Path) -> Iterator[tuple[Path, str]]:
    """Yield (what to read, consistency obtained).

    For an image file on a filesystem with reflinks, a clone taken now: every later write
    to the image leaves the clone as it was, so the backup is crash-consistent. Otherwise
    (block devices, ext4) the live path, recorded as inconsistent.
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        yield path, CONSISTENCY_NONE
        return
    clone = path.parent / f".csbs-snap-{uuid.uuid4().hex}"
    src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(clone, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError:
        os.close(src)
        yield path, CONSISTENCY_NONE
        return
    try:
        try:
            fcntl.ioctl(dst, FICLONE, src)
            cloned = True
        except OSError:
            cloned = False
        finally:
            os.close(dst)
            os.close(src)
        if not cloned:
            log.info("no reflink support for %s: reading the live image", path)
            yield path, CONSISTENCY_NONE
        else:
            yield clone, CONSISTENCY_CRASH
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(clone)
