"""Skipping unchanged image files, and space coming back on its own, through the real tasks.

    python -m bench.space [--size 1GiB] [--work-dir /var/tmp] [--grace 10] [--interval 10]
                          [--runs 5]

One `csbs` deployment in-process (SQLite, a local repository, a worker and the scheduler,
as `csbs serve` runs them), one server with one generated image file:

  - a first backup, then `--runs` with nothing changed (the file is not read: its size, times,
    inode and device are those the first recorded) and one with `incremental=false` (what
    `csbs backup create --full-read` asks: every byte read). For each, the disk's data
    time (from opening the disk to its manifest recorded) and the bytes read;
  - a second server's backup of another image (nothing shared) deleted with nothing else
    happening: the seconds from the deletion's acceptance until its chunks' space is back
    (no chunk of the project pending release, its blobs gone), against the bound
    `sweep_grace_seconds` + `maintenance_interval_seconds`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from csbs import app as composition
from csbs.cli.bench import generate_image, parse_size
from csbs.config import Settings
from csbs.domain.backups import RACY_SECONDS, Backup, BackupStatus
from csbs.repository import layout, memtune
from csbs.services.backups import ProtectRequest
from csbs.services.container import Services
from csbs.services.inventory import DiskSpec

MB = 1_000_000


def _wait_backup(s: Services, backup_id: str) -> Backup:
    while True:
        backup = s.backups.get(None, backup_id)
        if backup.status in (BackupStatus.AVAILABLE, BackupStatus.ERROR):
            assert backup.status is BackupStatus.AVAILABLE, backup.fail_reason
            return backup
        time.sleep(0.02)


def _backup(s: Services, project_id: str, server_id: str, *, full: bool = False) -> Backup:
    started = time.monotonic()
    _, backup = s.backups.protect(
        project_id, ProtectRequest(server_id, incremental=False if full else None)
    )
    done = _wait_backup(s, backup.id)
    wall = time.monotonic() - started
    disk = done.disks[0]
    print(
        f"  {'full read' if full else 'backup':9}  data time {disk.seconds:7.3f} s  "
        f"read {int(done.extra.get('bytes_read', 0)) / MB:8.1f} MB  "
        f"unchanged {done.extra.get('unchanged_disks') != []}  task wall {wall:6.2f} s",
        flush=True,
    )
    return done


def _bytes_under(root: Path) -> int:
    """Bytes the files below `root` take on disk."""
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1GiB", help="image size (e.g. 1GiB, 256MiB)")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the data goes")
    parser.add_argument("--grace", type=float, default=10.0, help="sweep_grace_seconds")
    parser.add_argument("--interval", type=float, default=10.0, help="maintenance_interval_seconds")
    parser.add_argument("--runs", type=int, default=5, help="no-change backups in a row")
    args = parser.parse_args()
    memtune.tune_malloc()
    size = parse_size(args.size)
    data = Path(tempfile.mkdtemp(prefix="csbs-bench-space-", dir=args.work_dir))
    settings = Settings(
        data_dir=data,
        admin_password="bench-admin-pw",
        embedded_workers=False,
        sweep_grace_seconds=args.grace,
        maintenance_interval_seconds=args.interval,
        scheduler_tick_seconds=1.0,
    )
    runtime = composition.build(settings)
    composition.prepare(runtime)
    s = runtime.services
    disks = data / "disks"
    disks.mkdir(exist_ok=True)
    project = s.identity.create_project("bench")
    image = disks / "steady.img"
    other = disks / "doomed.img"
    generate_image(image, size, seed=1)
    generate_image(other, size // 4, seed=2)
    steady = s.inventory.add_server(project.id, "steady", [DiskSpec(str(image))])
    doomed = s.inventory.add_server(project.id, "doomed", [DiskSpec(str(other))])
    worker = composition.make_worker(runtime, concurrency=2)
    scheduler = composition.make_scheduler(runtime)
    worker.start()
    scheduler.start()
    try:
        time.sleep(RACY_SECONDS + 0.1)  # facts taken right after a write are not trusted
        print(f"image {size / MB:,.0f} MB, {data}", flush=True)
        _backup(s, project.id, steady.id)
        unchanged = [_backup(s, project.id, steady.id).disks[0].seconds for _ in range(args.runs)]
        print(f"  no-change data time: median {statistics.median(unchanged):.3f} s", flush=True)
        _backup(s, project.id, steady.id, full=True)

        gone = _backup(s, project.id, doomed.id)
        prefix = layout.chunks_prefix(project.id)
        blobs = len(list(s.repository.store.list(prefix)))
        on_disk = _bytes_under(data / "repository")
        accepted = time.monotonic()
        s.deletions.delete(project.id, gone.checkpoint_id, None)
        pending_seen = 0
        while True:
            pending = s.repository.pending_release(project.id)
            pending_seen = max(pending_seen, pending.stored_bytes)
            deleted = s.repository.index.backup(project.id, gone.id + ".1") is None
            # The sweep removes the rows first, their blobs then: back when both are gone.
            swept = not s.repository.index.garbage(project.id)
            if deleted and pending.chunks == 0 and pending_seen and swept:
                break
            time.sleep(0.05)
        took = time.monotonic() - accepted
        left = len(list(s.repository.store.list(prefix)))
        now_on_disk = _bytes_under(data / "repository")
        print(
            f"  space back {took:6.2f} s after the delete (bound: grace {args.grace:g} s + "
            f"interval {args.interval:g} s = {args.grace + args.interval:g} s); "
            f"{pending_seen / MB:.1f} MB released, chunk blobs {blobs} -> {left}, "
            f"repository on disk {on_disk / MB:.1f} -> {now_on_disk / MB:.1f} MB",
            flush=True,
        )
    finally:
        scheduler.stop()
        worker.stop(grace=5)
        runtime.close()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
