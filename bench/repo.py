"""The backup engine against restic and borg on one generated disk image, in one run.

    python -m bench.repo [--size 1GiB] [--work-dir /var/tmp] [--tools csbs,restic,borg]
                         [--image generated|real] [--real-files /usr/share]
                         [--out docs/benchmarks-repo.md]

The same steps for every tool: a first backup, a second with nothing changed, with
`--image real` one after 5 % of the file system's files were rewritten (as root:
loop-mounted, each file written anew and renamed over the old one), one after a 1 %
clustered and one after a 1 % scattered change, a restore (timed until the image is on
disk), then more backups up to twenty and the deletion of one with its space reclaimed. Every
operation runs in a child process under `/usr/bin/time` (when present), so each tool's peak
RSS is its own (a forked child's ru_maxrss starts from its parent's). The csbs children run
`bench.repo_child`. Prints the report (and writes it to `--out` when given) with the
machine's single-core limits that `csbs bench` measures.

`--image real` backs up an ext4 file system of real files (`mkfs.ext4 -d`, from
`--real-files`) instead of the generated image; the scattered change's row "stored ÷
changed" is then what a database or a busy VM costs per byte it writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import blake3

from csbs.cli.bench import generate_image, parse_size, primitive_limits

MB = 1_000_000
MiB = 1024 * 1024
_PASSWORD = "csbs-bench"
_BACKUPS = 20  # backups in the repository when one is deleted
_PACKAGES = {"restic": "restic", "borg": "borgbackup"}  # Debian packages
#: The checkout's root, so that children find `bench` as this process did.
_ROOT = Path(__file__).resolve().parents[1]


def change_clustered(path: Path, size: int, seed: int) -> None:
    """Overwrite 1 % of the image in one contiguous run."""
    rng = random.Random(seed)
    length = size // 100
    start = rng.randrange(0, size - length) // 4096 * 4096
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(rng.randbytes(length))


def scattered_blocks(size: int, fraction: float = 0.01) -> int:
    """How many 4 KiB blocks `change_scattered` writes."""
    return max(1, int(size * fraction) // 4096)


def real_files_image(path: Path, size: int, source: Path) -> None:
    """An ext4 file system of `size` bytes holding the files below `source`."""
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-b", "4096", "-d", str(source), str(path), str(size // 4096)],
        check=True,
    )


def change_scattered(path: Path, size: int, seed: int, fraction: float = 0.01) -> None:
    """Overwrite `fraction` of the image as 4 KiB blocks at random places."""
    rng = random.Random(seed)
    blocks = scattered_blocks(size, fraction)
    with open(path, "r+b") as f:
        for block in rng.sample(range(size // 4096), blocks):
            f.seek(block * 4096)
            f.write(rng.randbytes(4096))


def rewrite_files(image: Path, seed: int, fraction: float = 0.05) -> int:
    """Rewrite `fraction` of the regular files of the ext4 file system in `image` as an
    update does: write the new version beside the old one, then rename it over the old one
    (so its blocks are allocated anew). The new version is the old bytes with 1 % of them (one
    run at a random place, at least one byte) replaced by random bytes: same size, mostly
    the same content. Needs root (`mount -o loop`). Returns how many files were rewritten."""
    rng = random.Random(seed)
    mountpoint = Path(tempfile.mkdtemp(prefix="csbs-bench-mnt-", dir=image.parent))
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        files = sorted(
            os.path.join(directory, name)
            for directory, _, names in os.walk(mountpoint)
            for name in names
            if os.path.isfile(p := os.path.join(directory, name))
            and not os.path.islink(p)
            and os.path.getsize(p) > 0
        )
        chosen = rng.sample(files, max(1, int(len(files) * fraction)))
        for name in chosen:
            with open(name, "rb") as f:
                data = bytearray(f.read())
            length = max(1, len(data) // 100)
            start = rng.randrange(0, len(data) - length + 1)
            data[start : start + length] = rng.randbytes(length)
            new = name + ".csbs-bench-new"
            with open(new, "wb") as f:
                f.write(data)
            shutil.copymode(name, new)
            os.replace(new, name)
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
        mountpoint.rmdir()
    return len(chosen)


def changed_blocks(a: Path, b: Path) -> int:
    """How many 4 KiB blocks differ between two images of the same size."""
    changed = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(16 * MiB), fb.read(16 * MiB)
            if not x and not y:
                return changed
            if x == y:
                continue
            for off in range(0, max(len(x), len(y)), 4096):
                changed += x[off : off + 4096] != y[off : off + 4096]


def file_digest(path: Path) -> bytes:
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with open(path, "rb") as f:
        while chunk := f.read(16 * MiB):
            hasher.update(chunk)
    return hasher.digest()


def tree_bytes(*paths: Path) -> int:
    """Apparent size of every file below `paths`."""
    total = 0
    for root in paths:
        if root.is_file():
            total += root.stat().st_size
            continue
        for directory, _, files in os.walk(root):
            total += sum(os.path.getsize(os.path.join(directory, f)) for f in files)
    return total


# -- running tools -----------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    seconds: float
    peak_kib: int
    output: str


#: Whether the page cache could be dropped (None: not tried yet). Needs root outside a
#: container; where /proc/sys is read-only, operations start with a warm cache.
_dropped: bool | None = None
#: --no-drop-caches: only `sync` (how the runs before 2026-12-08 were measured).
_DROP = [True]


def drop_caches() -> None:
    """Drop the page cache (after the `sync` that makes its pages clean), if allowed."""
    global _dropped
    if _dropped is False or not _DROP[0]:
        return
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        _dropped = True
    except OSError:
        _dropped = False


def run(command: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    """Run `command` to completion; its wall time and own peak RSS (via /usr/bin/time)."""
    timer = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
    # Every operation starts with nothing waiting to be written back (earlier steps and
    # other tools leave gigabytes of dirty pages): the disk is then the tool's alone.
    os.sync()
    drop_caches()
    with tempfile.NamedTemporaryFile("r", suffix=".time") as stats:
        full = [timer, "-f", "%M", "-o", stats.name, *command] if timer else command
        started = time.monotonic()
        done = subprocess.run(
            full,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.monotonic() - started
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}"
            )
        lines = [line for line in Path(stats.name).read_text().split() if line.isdigit()]
    return Run(seconds, int(lines[-1]) if lines else 0, done.stdout)


def _on_disk(seconds: float, target_dir: Path, image: Path) -> tuple[float, Path]:
    """A restore that left `image` (restored under `target_dir` at its own path) in the page
    cache, timed until it is on disk; and where it is.

    A restore is done when the image is on disk: csbs fsyncs the image it wrote before it
    reports success, restic and borg do not. Their restores are timed up to the same point,
    by adding the fsync they leave out."""
    restored = target_dir / str(image).lstrip("/")
    started = time.monotonic()
    fd = os.open(restored, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return seconds + time.monotonic() - started, restored


class Tool:
    """One backup program driven through the benchmark's scenarios."""

    name = ""

    def __init__(self, work: Path) -> None:
        self.work = work / self.name
        self.work.mkdir()
        self.repo = self.work / "repo"
        self.peak_kib = 0

    def _run(self, command: list[str], **kwargs: object) -> Run:
        result = run(command, **kwargs)  # type: ignore[arg-type]
        self.peak_kib = max(self.peak_kib, result.peak_kib)
        return result

    def init(self) -> None:
        """Create the repository (if the tool needs that)."""

    def backup(self, image: Path, name: str) -> float:
        raise NotImplementedError

    def restore(self, name: str, target_dir: Path, image: Path) -> tuple[float, Path]:
        raise NotImplementedError

    def delete(self, name: str) -> float:
        raise NotImplementedError

    def stored(self) -> int:
        return tree_bytes(self.repo)


class Csbs(Tool):
    name = "csbs"
    last = ""

    def _child(self, *args: str) -> Run:
        db = f"sqlite:///{self.work / 'csbs.db'}"
        command = [sys.executable, "-m", "bench.repo_child", args[0], db, str(self.repo)]
        path = os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH")) if p)
        return self._run([*command, *args[1:]], env={"PYTHONPATH": path})

    # Timed inside the child: a csbs worker is a long-running process, so interpreter
    # start-up and imports (about 0.7 s, excluded) are not part of a backup's cost.
    # Each backup is over the one before, as the backup task's are (sub-chunk increments).
    def backup(self, image: Path, name: str) -> float:
        previous = [self.last] if self.last else []
        seconds = float(self._child("backup", str(image), name, *previous).output.split()[-1])
        self.last = name
        return seconds

    def restore(self, name: str, target_dir: Path, image: Path) -> tuple[float, Path]:
        target = target_dir / "restored.img"
        return float(self._child("restore", name, str(target)).output.split()[-1]), target

    def delete(self, name: str) -> float:
        return float(self._child("delete", name).output.split()[-1])

    def stored(self) -> int:
        return tree_bytes(self.repo, *self.work.glob("csbs.db*"))


class Restic(Tool):
    name = "restic"

    def _env(self) -> dict[str, str]:
        return {
            "RESTIC_REPOSITORY": str(self.repo),
            "RESTIC_PASSWORD": _PASSWORD,
            "RESTIC_CACHE_DIR": str(self.work / "cache"),
        }

    def init(self) -> None:
        self._run(["restic", "init", "--repository-version", "2"], env=self._env())

    def backup(self, image: Path, name: str) -> float:
        # --force: a disk image is re-read like csbs re-reads a device, not skipped by mtime.
        command = ["restic", "backup", "--force", "--tag", name, "--compression", "auto"]
        return self._run([*command, str(image)], env=self._env()).seconds

    def restore(self, name: str, target_dir: Path, image: Path) -> tuple[float, Path]:
        command = ["restic", "restore", "latest", "--tag", name, "--target", str(target_dir)]
        return _on_disk(self._run(command, env=self._env()).seconds, target_dir, image)

    def delete(self, name: str) -> float:
        return self._run(["restic", "forget", "--tag", name, "--prune"], env=self._env()).seconds


class Borg(Tool):
    name = "borg"

    def _env(self) -> dict[str, str]:
        return {
            "BORG_PASSPHRASE": _PASSWORD,
            "BORG_BASE_DIR": str(self.work / "base"),
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
        }

    def init(self) -> None:
        self._run(
            ["borg", "init", "--encryption", "repokey-blake2", str(self.repo)], env=self._env()
        )

    def backup(self, image: Path, name: str) -> float:
        command = ["borg", "create", "--compression", "zstd,1", "--files-cache", "disabled"]
        return self._run([*command, f"{self.repo}::{name}", str(image)], env=self._env()).seconds

    def restore(self, name: str, target_dir: Path, image: Path) -> tuple[float, Path]:
        command = ["borg", "extract", "--sparse", f"{self.repo}::{name}"]
        seconds = self._run(command, env=self._env(), cwd=target_dir).seconds
        return _on_disk(seconds, target_dir, image)

    def delete(self, name: str) -> float:
        first = self._run(["borg", "delete", f"{self.repo}::{name}"], env=self._env()).seconds
        return first + self._run(["borg", "compact", str(self.repo)], env=self._env()).seconds


@dataclasses.dataclass
class Results:
    """One tool's figures."""

    first: float = 0.0  # seconds
    first_stored: int = 0  # bytes
    unchanged: float = 0.0
    clustered: float = 0.0
    clustered_stored: int = 0  # bytes added
    scattered: float = 0.0
    scattered_stored: int = 0
    restore: float = 0.0
    exact: bool = False
    rewritten: float = 0.0  # backup after 5 % of the files were rewritten (--image real)
    rewritten_stored: int = 0
    delete: float = 0.0
    reclaimed: int = 0  # bytes
    peak_kib: int = 0


@dataclasses.dataclass
class Rewrite:
    """The pristine image with 5 % of its files rewritten, made once for every tool."""

    image: Path
    files: int
    blocks: int  # 4 KiB blocks that differ from the pristine image


def prepare_rewrite(pristine: Path, work: Path) -> Rewrite:
    """Rewrite 5 % of the files of a copy of `pristine` and count the blocks that changed.
    Done once (ext4's allocator need not place the new files alike twice), so every tool
    backs up the same image; and on the intact file system, before the clustered and
    scattered changes, whose random blocks damage its metadata (the kernel then refuses
    to write)."""
    after = work / "rewritten.img"
    _sparse_copy(pristine, after)
    files = rewrite_files(after, seed=5)
    return Rewrite(after, files, changed_blocks(pristine, after))


def scenario(
    tool: Tool,
    image: Path,
    pristine: Path,
    size: int,
    work: Path,
    rewrite: Rewrite | None = None,
) -> Results:
    """The scenarios, on a fresh copy of the image (every tool sees the same changes)."""
    _sparse_copy(pristine, image)
    r = Results()
    tool.init()
    names = (f"b{n:02d}" for n in range(1, _BACKUPS + 1))
    r.first = tool.backup(image, next(names))
    r.first_stored = tool.stored()
    r.unchanged = tool.backup(image, next(names))
    if rewrite is not None:
        _sparse_copy(rewrite.image, image)  # 5 % of the files written anew and renamed
        before = tool.stored()
        r.rewritten = tool.backup(image, next(names))
        r.rewritten_stored = tool.stored() - before
    before = tool.stored()
    change_clustered(image, size, seed=3)
    clustered = next(names)
    r.clustered = tool.backup(image, clustered)
    r.clustered_stored = tool.stored() - before
    before = tool.stored()
    change_scattered(image, size, seed=4)
    scattered = next(names)
    r.scattered = tool.backup(image, scattered)
    r.scattered_stored = tool.stored() - before
    target = work / f"{tool.name}-restore"
    target.mkdir()
    r.restore, restored = tool.restore(scattered, target, image)
    r.exact = file_digest(restored) == file_digest(image)
    shutil.rmtree(target)
    for n, name in enumerate(names):
        change_scattered(image, size, seed=105 + n, fraction=0.002)
        tool.backup(image, name)
    before = tool.stored()
    r.delete = tool.delete(clustered)  # holds the clustered change: real space to reclaim
    r.reclaimed = before - tool.stored()
    r.peak_kib = tool.peak_kib
    return r


def _sparse_copy(source: Path, target: Path) -> None:
    """Copy an image keeping its holes (SEEK_DATA), so every tool starts from the same file."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        dst.truncate(size)
        offset = 0
        while offset < size:
            try:
                start = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            src.seek(start)
            dst.seek(start)
            remaining = end - start
            while remaining:
                data = src.read(min(remaining, 16 * MiB))
                dst.write(data)
                remaining -= len(data)
            offset = end


# -- report ------------------------------------------------------------------------------------


def _mbps(size: int, seconds: float) -> str:
    return f"{size / seconds / MB:,.0f} MB/s ({seconds:.2f} s)" if seconds else "-"


def table(
    size: int,
    limits: dict[str, float],
    results: dict[str, Results],
    rewrite: Rewrite | None = None,
) -> str:
    """The report: one row per measure, one column per tool, and csbs's ratios."""
    tools = list(results)
    others = [t for t in tools if t != "csbs"]
    header = ["measure", *tools, *(f"csbs vs {t}" for t in others)]
    rows: list[list[str]] = []

    def add(
        label: str,
        cell: Callable[[Results], str],
        ratio: Callable[[Results, Results], float] | None,
    ) -> None:
        row = [label, *(cell(results[t]) for t in tools)]
        if "csbs" in results:
            for t in others:
                row.append(f"{ratio(results['csbs'], results[t]):.1f}x" if ratio else "")
        rows.append(row)

    def speed(field: str) -> Callable[[Results, Results], float]:
        # csbs's speed-up: the other tool's time over csbs's.
        def ratio(a: Results, b: Results) -> float:
            ours = float(getattr(a, field))
            return float(getattr(b, field)) / ours if ours else 0.0

        return ratio

    less = speed  # sizes and memory: the other's over csbs's, i.e. how many times less
    add("first backup", lambda r: _mbps(size, r.first), speed("first"))
    add("  stored after it", lambda r: f"{r.first_stored / MB:,.0f} MB", less("first_stored"))
    add("second backup, nothing changed", lambda r: _mbps(size, r.unchanged), speed("unchanged"))
    if rewrite is not None:
        blocks = rewrite.blocks * 4096
        add(
            f"5 % of the files rewritten ({rewrite.files:,}, write + rename): backup",
            lambda r: _mbps(size, r.rewritten),
            speed("rewritten"),
        )
        add(
            f"  stored bytes added ({rewrite.blocks * 4096 / MB:,.1f} MB of blocks changed)",
            lambda r: f"{r.rewritten_stored / MB:,.1f} MB",
            less("rewritten_stored"),
        )
        add(
            "  stored ÷ bytes of blocks changed",
            lambda r: f"{r.rewritten_stored / blocks:.2f}x",
            less("rewritten_stored"),
        )
    add("1 % clustered change: backup", lambda r: _mbps(size, r.clustered), speed("clustered"))
    add(
        "  stored bytes added",
        lambda r: f"{r.clustered_stored / MB:,.1f} MB",
        less("clustered_stored"),
    )
    add(
        "1 % scattered 4 KiB change: backup", lambda r: _mbps(size, r.scattered), speed("scattered")
    )
    add(
        "  stored bytes added",
        lambda r: f"{r.scattered_stored / MB:,.1f} MB",
        less("scattered_stored"),
    )
    changed = scattered_blocks(size) * 4096
    add(
        "  stored ÷ bytes changed",
        lambda r: f"{r.scattered_stored / changed:.2f}x",
        less("scattered_stored"),
    )
    add(
        "restore, to disk (bit-exact?)",
        lambda r: f"{_mbps(size, r.restore)} {'exact' if r.exact else 'DIFFERS'}",
        speed("restore"),
    )
    add(f"delete 1 of {_BACKUPS} backups + reclaim", lambda r: f"{r.delete:.2f} s", speed("delete"))
    add("  space reclaimed", lambda r: f"{r.reclaimed / MB:,.1f} MB", None)
    add("peak RSS (any operation)", lambda r: f"{r.peak_kib / 1024:,.0f} MiB", less("peak_kib"))

    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    cores = os.cpu_count() or 1
    first = results.get("csbs")
    limit_line = (
        f"Single core: read {limits['read'] / MB:,.0f} MB/s, "
        f"keyed BLAKE3 {limits['blake3'] / MB:,.0f} MB/s, "
        f"zstd-1 {limits['zstd-1'] / MB:,.0f} MB/s, AES-256-GCM {limits['aes-gcm'] / MB:,.0f} MB/s "
        f"(on pieces of the image). Single-pass pipeline limit on {cores} cores: "
        f"{limits['pipeline'] / MB:,.0f} MB/s"
    )
    if first is not None and first.first:
        limit_line += (
            f"; csbs's first backup reaches {size / first.first / limits['pipeline']:.0%} of it."
        )
    return "\n".join(lines) + "\n\n" + limit_line + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1GiB", help="image size (e.g. 1GiB, 256MiB)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="where images and repositories go"
    )
    parser.add_argument("--tools", default="csbs,restic,borg", help="comma-separated subset")
    parser.add_argument(
        "--image", choices=["generated", "real"], default="generated", help="what is backed up"
    )
    parser.add_argument(
        "--real-files", type=Path, default=Path("/usr/share"), help="files of --image real"
    )
    parser.add_argument(
        "--no-drop-caches",
        action="store_true",
        help="only sync before each operation (the runs before 2026-12-08)",
    )
    args = parser.parse_args()
    _DROP[0] = not args.no_drop_caches
    nbytes = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="csbs-bench-", dir=args.work_dir))
    try:
        pristine = work / "pristine.img"
        print(f"generating a {nbytes / MB:,.0f} MB image in {work}", flush=True)
        if args.image == "real":
            real_files_image(pristine, nbytes, args.real_files)
        else:
            generate_image(pristine, nbytes)
        limits = primitive_limits(pristine, nbytes)
        rewrite = None
        if args.image == "real":
            print("rewriting 5 % of the files (loop mount) ...", flush=True)
            rewrite = prepare_rewrite(pristine, work)
        results: dict[str, Results] = {}
        notes: list[str] = []
        kinds: dict[str, type[Tool]] = {"csbs": Csbs, "restic": Restic, "borg": Borg}
        for name in (t.strip() for t in args.tools.split(",") if t.strip()):
            if name != "csbs" and shutil.which(name) is None:
                notes.append(f"{name}: not installed, skipped (apt-get install {_PACKAGES[name]})")
                continue
            print(f"running {name} ...", flush=True)
            image = work / "disk.img"
            results[name] = scenario(kinds[name](work), image, pristine, nbytes, work, rewrite)
        versions = _versions(list(results))
        report = (
            f"# Repository benchmark\n\nCommand: `python -m bench.repo --size {args.size} "
            f"--image {args.image}` on {os.cpu_count()} CPUs; image {nbytes / MB:,.0f} MB "
            + (
                f"(ext4 of the files below {args.real_files}). "
                if args.image == "real"
                else "(4 MiB extents: zeros, random, repeated, compressible text). "
            )
            + "csbs backs each image up over the one before (sub-chunk increments). "
            "Ratios are csbs's speed-up (times) or, for sizes and "
            "memory, how many times less csbs needs. restic runs with `--force` and borg with "
            "`--files-cache disabled` so that, like csbs reading a device, they read the image "
            "every time. Deletion: csbs `delete_backup` + sweep (grace 0), restic "
            "`forget --prune`, borg `delete` + `compact`. csbs operations are timed inside "
            "their process, as a long-running worker runs them (interpreter start-up and "
            "imports, about 0.7 s, excluded); restic and borg are timed as whole commands. "
            "Every operation starts after a `sync`, so no tool pays for another's writeback"
            + (
                ", and a drop of the page cache. "
                if _dropped
                else " (the page cache was not dropped: --no-drop-caches, or "
                "/proc/sys/vm/drop_caches not writable; reads may hit the cache). "
            )
            + f"A restore is timed until the image is on disk: csbs fsyncs it before it reports "
            f"success; restic and borg do not, so the fsync of their image is added. "
            f"Peak RSS is each process's own (GNU time).\n{versions}\n\n"
            + table(nbytes, limits, results, rewrite)
            + "".join(f"\n- {n}" for n in notes)
        )
        print(report)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(report)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _versions(tools: list[str]) -> str:
    parts = []
    for name, command in (("restic", ["restic", "version"]), ("borg", ["borg", "--version"])):
        if name in tools:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            parts.append(done.stdout.strip().splitlines()[0] if done.stdout else name)
    return "Versions: " + "; ".join(parts) if parts else ""


if __name__ == "__main__":
    main()
