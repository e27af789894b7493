"""Peak RSS of a real `csbs worker` process backing up and restoring a disk of real files.

    python -m bench.worker_memory [--size 4GiB] [--work-dir /var/tmp] [--keep-image PATH]
                                  [--no-drop-caches]

Builds an ext4 image of `--size` filled with real files (hard links to files of /usr, up
to 80 % of the image; `mkfs.ext4 -d`), registers it as the disk of a server on a fresh data
directory (SQLite), starts `csbs worker` as its own process, and runs through the command
line, each after a `sync` and a drop of the page cache (as root):

1. a first backup;
2. an incremental: 1 % of the image rewritten as scattered 4 KiB blocks, backed up again;
3. a restore of the first backup onto a second server's blank disk of the same size.

After each step it reads the worker's peak RSS (`VmHWM` in `/proc/PID/status`) and resets
it (`echo 5 > /proc/PID/clear_refs`), so each figure is that step's peak in a worker that
has already run the steps before, as a long-running worker has. Seconds are the task's
own (`started_at` to `ended_at`). Target: every peak ≤ 150 MiB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.repo import change_scattered, file_digest
from csbs.cli.bench import parse_size

MiB = 1024 * 1024
TARGET_MIB = 150
_ROOT = Path(__file__).resolve().parents[1]


def link_files(source: Path, into: Path, budget: int) -> tuple[int, int]:
    """Hard-link (or copy, across file systems) regular files of `source` into `into`
    until `budget` bytes; returns (files, bytes)."""
    files = total = 0
    for directory, dirs, names in os.walk(source):
        dirs.sort()
        for name in sorted(names):
            path = Path(directory) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            if not path.is_file() or path.is_symlink() or st.st_size == 0:
                continue
            if total + st.st_size > budget:
                return files, total
            target = into / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                try:
                    shutil.copyfile(path, target)
                except OSError:
                    continue
            files += 1
            total += st.st_size
    return files, total


def build_image(path: Path, size: int, work: Path) -> str:
    content = work / "content"
    files, total = link_files(Path("/usr"), content, size * 8 // 10)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-d", str(content), str(path), f"{size // MiB}M"],
        check=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    shutil.rmtree(content)
    return f"{files:,} files of /usr, {total / MiB:,.0f} MiB"


class Service:
    """A data directory, the command line against it, and one `csbs worker` process."""

    def __init__(self, work: Path) -> None:
        self.data = work / "data"
        self.db = self.data / "csbs.db"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CSBS_")}
        self.env.update(
            CSBS_DATA_DIR=str(self.data),
            CSBS_DATABASE_URL=f"sqlite:///{self.db}",
            CSBS_LOG_LEVEL="WARNING",
            PYTHONPATH=os.pathsep.join([str(_ROOT / "src"), str(_ROOT)]),
        )
        self.worker: subprocess.Popen[bytes] | None = None

    def csbs(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "csbs", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"csbs {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def start_worker(self, log: Path) -> None:
        with open(log, "wb") as out:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "csbs", "worker"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while b"slots" not in log.read_bytes():  # it says so once built, before it runs
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"csbs worker did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        time.sleep(1)  # its threads start and look for tasks

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(60)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()

    def status_kib(self, field: str) -> int:
        assert self.worker is not None
        with open(f"/proc/{self.worker.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"no {field}")

    def reset_peak(self) -> None:
        assert self.worker is not None
        with open(f"/proc/{self.worker.pid}/clear_refs", "w") as f:
            f.write("5")  # the peak RSS becomes the current RSS

    def last_task_seconds(self) -> float:
        with sqlite3.connect(self.db) as c:
            started, ended, status = c.execute(
                "SELECT started_at, ended_at, status FROM tasks ORDER BY created_at DESC LIMIT 1"
            ).fetchone()
        if status != "success":
            raise RuntimeError(f"the task ended {status}")
        took = dt.datetime.fromisoformat(ended) - dt.datetime.fromisoformat(started)
        return took.total_seconds()


def drop_caches(enabled: bool) -> None:
    os.sync()
    if enabled:
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        except OSError as exc:
            print(f"(page cache not dropped: {exc})", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="4GiB")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument(
        "--keep-image", type=Path, default=None, help="build the image here once, reuse it later"
    )
    parser.add_argument("--no-drop-caches", action="store_true")
    args = parser.parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="csbs-bench-mem-", dir=args.work_dir))
    service = Service(work)
    drop = not args.no_drop_caches
    try:
        service.data.mkdir(mode=0o700)
        disks = service.data / "disks"
        disks.mkdir()
        image = disks / "disk.img"
        if args.keep_image is not None and args.keep_image.exists():
            subprocess.run(["cp", "--sparse=always", str(args.keep_image), str(image)], check=True)
            what = f"image {args.keep_image}"
        else:
            print(f"building a {args.size} ext4 image of real files ...", flush=True)
            what = build_image(image, size, work)
            if args.keep_image is not None:
                subprocess.run(
                    ["cp", "--sparse=always", str(image), str(args.keep_image)], check=True
                )
        used = os.stat(image).st_blocks * 512
        print(f"image: {size / MiB:,.0f} MiB, {used / MiB:,.0f} MiB allocated ({what})")
        target = disks / "target.img"
        with open(target, "wb") as f:
            f.truncate(size)
        service.csbs("db", "upgrade")
        service.csbs("admin", "project", "create", "bench")
        source_server = service.csbs(
            "server", "add", "--project", "bench", "--name", "vm", "--disk", str(image)
        ).split()[-1]
        target_server = service.csbs(
            "server", "add", "--project", "bench", "--name", "target", "--disk", str(target)
        ).split()[-1]
        service.start_worker(work / "worker.log")
        idle = service.status_kib("VmRSS")
        service.reset_peak()
        rows: list[tuple[str, float, int, int]] = []

        def step(name: str, *command: str) -> str:
            drop_caches(drop)
            service.reset_peak()
            out = service.csbs(*command)
            peak = service.status_kib("VmHWM")
            after = service.status_kib("VmRSS")
            seconds = service.last_task_seconds()
            rows.append((name, seconds, peak, after))
            print(f"{name}: {seconds:.2f} s, peak RSS {peak / 1024:.0f} MiB", flush=True)
            return out

        first = step("first backup", "backup", "create", source_server, "--wait").split()[-1]
        change_scattered(image, size, seed=7)
        step("incremental (1 % scattered 4 KiB)", "backup", "create", source_server, "--wait")
        step("restore", "restore", first, "--to", target_server, "--wait")
        service.stop_worker()
        # The restore is of the first backup: the image before the change, rebuilt as it was.
        exact = "(not compared)"
        if args.keep_image is not None:
            exact = str(file_digest(args.keep_image) == file_digest(target))
        print(f"\nworker idle after start-up: {idle / 1024:.0f} MiB RSS; restore exact: {exact}")
        print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}\n")
        print("| step | seconds | peak RSS of the worker process | RSS after, MiB |")
        print("|---|---|---|---|")
        for name, seconds, peak, after in rows:
            mark = "" if peak <= TARGET_MIB * 1024 else " (over the target)"
            print(f"| {name} | {seconds:.2f} | {peak / 1024:.0f} MiB{mark} | {after / 1024:.0f} |")
    finally:
        service.stop_worker()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
