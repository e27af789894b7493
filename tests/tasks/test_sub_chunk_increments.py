"""A disk read again is stored over its image in the server's latest backup: a chunk that
changed in part costs only its changed sub-blocks (issue 21, item 1), and every backup
restores directly, whichever others are deleted."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from tests.tasks.conftest import Cloud
from tests.tasks.test_skip_unchanged import SIZE, _backup, _delete, _restored, _settle

CHUNK = 256 * 1024  # the test deployment's chunk size


def _scatter(image: Path, seed: int) -> int:
    """Rewrite one 4 KiB block in every other chunk; returns the bytes changed."""
    rng = random.Random(seed)
    changed = 0
    with open(image, "r+b") as f:
        for index in range(0, SIZE // CHUNK, 2):
            f.seek(index * CHUNK + rng.randrange(0, CHUNK - 4096) // 4096 * 4096)
            f.write(os.urandom(4096))
            changed += 4096
    return changed


def test_an_incremental_stores_the_changed_sub_blocks_and_survives_deletions(
    cloud: Cloud,
) -> None:
    image = cloud.root / "busy.img"
    image.write_bytes(os.urandom(SIZE))
    server = cloud.server("busy", [image])
    _settle()
    first = _backup(cloud, server["id"])
    contents = [image.read_bytes()]
    repository = cloud.env.services.repository
    stored = repository.usage(cloud.pid).stored_bytes

    changed = _scatter(image, 1)
    contents.append(image.read_bytes())
    time.sleep(0.05)
    second = _backup(cloud, server["id"])
    ext = second["extend_info"]
    assert ext["bytes_read"] == SIZE  # read: its facts changed
    # Only the changed sub-blocks are new: far below the 6 whole chunks they touch.
    assert ext["new_bytes"] <= 2 * changed, ext
    grown = repository.usage(cloud.pid).stored_bytes - stored
    assert grown <= 3 * changed, (grown, changed)

    _scatter(image, 2)
    contents.append(image.read_bytes())
    third = _backup(cloud, server["id"])
    report = repository.check(cloud.pid, read_data=True)
    assert report.ok, report

    # The first (the base of the deltas) and then the second go: the third restores.
    _delete(cloud, first)
    repository.sweep(cloud.pid)  # the test deployment's grace is 0
    assert _restored(cloud, second, "second") == contents[1]
    _delete(cloud, second)
    repository.sweep(cloud.pid)
    assert _restored(cloud, third, "third") == contents[2]
    report = repository.check(cloud.pid, read_data=True)
    assert report.ok, report


def test_a_full_read_stores_whole_chunks(cloud: Cloud) -> None:
    image = cloud.root / "full.img"
    image.write_bytes(os.urandom(SIZE))
    server = cloud.server("full", [image])
    _settle()
    _backup(cloud, server["id"])
    changed = _scatter(image, 3)
    second = _backup(cloud, server["id"], incremental=False)
    assert second["extend_info"]["new_bytes"] >= 6 * CHUNK > 2 * changed
