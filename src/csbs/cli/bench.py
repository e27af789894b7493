"""`csbs bench repo`: csbs against restic and borg on one generated disk image, in one run.

Every operation runs in a child process under `/usr/bin/time` (when present), so each
tool's peak RSS is its own (a forked child's ru_maxrss starts from its parent's). The
csbs children run `_CHILD`.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import blake3
import typer
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from csbs.cli.common import console

bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True, rich_markup_mode=None)

MB = 1_000_000
MiB = 1024 * 1024
_PASSWORD = "csbs-bench"
_EXTENT = 4 * MiB  # granularity of the generated image's content mix
_BACKUPS = 20  # backups in the repository when one is deleted
_PACKAGES = {"restic": "restic", "borg": "borgbackup"}  # Debian packages


def parse_size(text: str) -> int:
    """`1GiB`, `512MiB`, `100M`, `4096` -> bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(i?B?)\s*", text, re.IGNORECASE)
    if not match:
        raise typer.BadParameter(f"not a size: {text!r}")
    number, unit, binary = match.groups()
    power = " KMGT".index(unit.upper() or " ")
    base = 1024 if binary.lower().startswith("i") or not unit else 1000
    return int(number) * int(base**power)


# -- the image ---------------------------------------------------------------------------------


def generate_image(path: Path, size: int, seed: int = 1) -> None:
    """A disk image in 4 MiB extents: zeros (sparse), random, repeats of earlier random
    extents (dedup), and compressible text, in a fixed pseudo-random order."""
    rng = random.Random(seed)
    text = b"".join(
        f"{i:08d} csbs benchmark: compressible log line with some varying words {i % 97}\n".encode()
        for i in range(_EXTENT // 64)
    )[:_EXTENT]
    earlier: list[bytes] = []
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in range(0, size, _EXTENT):
            length = min(_EXTENT, size - offset)
            kind = rng.choice(("zeros", "random", "random", "repeat", "text"))
            if kind == "zeros":
                continue
            if kind == "repeat" and earlier:
                data = rng.choice(earlier)
            elif kind == "text":
                data = text
            else:
                data = rng.randbytes(_EXTENT)
                if len(earlier) < 8:
                    earlier.append(data)
            f.seek(offset)
            f.write(data[:length])


def change_clustered(path: Path, size: int, seed: int) -> None:
    """Overwrite 1 % of the image in one contiguous run."""
    rng = random.Random(seed)
    length = size // 100
    start = rng.randrange(0, size - length) // 4096 * 4096
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(rng.randbytes(length))


def change_scattered(path: Path, size: int, seed: int, fraction: float = 0.01) -> None:
    """Overwrite `fraction` of the image as 4 KiB blocks at random places."""
    rng = random.Random(seed)
    blocks = max(1, int(size * fraction) // 4096)
    with open(path, "r+b") as f:
        for block in rng.sample(range(size // 4096), blocks):
            f.seek(block * 4096)
            f.write(rng.randbytes(4096))


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


# -- primitives --------------------------------------------------------------------------------


def _rate(operation: Callable[[], object], size: int, seconds: float = 1.0) -> float:
    operation()
    calls = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        operation()
        calls += 1
    return calls * size / (time.monotonic() - started)


def primitive_limits(image: Path, size: int) -> dict[str, float]:
    """Single-core bytes/s of read (page cache), keyed BLAKE3, zstd-1 and AES-256-GCM on
    4 MiB pieces of the image, and the single-pass pipeline limit over all cores."""
    with open(image, "rb") as f:
        samples = [f.read(_EXTENT) for _ in range(min(16, size // _EXTENT or 1))]
    sample = b"".join(samples)
    fd = os.open(image, os.O_RDONLY)
    position = 0

    def read() -> None:
        nonlocal position
        os.pread(fd, _EXTENT, position)
        position = (position + _EXTENT) % max(_EXTENT, size - _EXTENT)

    key = os.urandom(32)
    compressor = zstandard.ZstdCompressor(level=1)
    aead = AESGCM(os.urandom(32))
    nonce = os.urandom(12)
    views = [memoryview(sample)[i : i + _EXTENT] for i in range(0, len(sample), _EXTENT)]
    counter = iter(range(1 << 62))

    def piece() -> memoryview:
        return views[next(counter) % len(views)]

    try:
        rates = {
            "read": _rate(read, _EXTENT),
            "blake3": _rate(lambda: blake3.blake3(piece(), key=key).digest(), _EXTENT),
            "zstd-1": _rate(lambda: compressor.compress(piece()), _EXTENT),
            "aes-gcm": _rate(lambda: aead.encrypt(nonce, piece(), b""), _EXTENT),
        }
    finally:
        os.close(fd)
    per_byte = sum(1 / r for r in rates.values())
    rates["pipeline"] = (os.cpu_count() or 1) / per_byte
    return rates


# -- running tools -----------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    seconds: float
    peak_kib: int
    output: str


def run(command: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    """Run `command` to completion; its wall time and own peak RSS (via /usr/bin/time)."""
    timer = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
    # Every operation starts with nothing waiting to be written back (earlier steps and
    # other tools leave gigabytes of dirty pages): the disk is then the tool's alone.
    os.sync()
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

    def _child(self, *args: str) -> Run:
        db = f"sqlite:///{self.work / 'csbs.db'}"
        return self._run([sys.executable, "-c", _CHILD, args[0], db, str(self.repo), *args[1:]])

    # Timed inside the child: a csbs worker is a long-running process, so interpreter
    # start-up and imports (about 0.7 s, excluded) are not part of a backup's cost.
    def backup(self, image: Path, name: str) -> float:
        return float(self._child("backup", str(image), name).output.split()[-1])

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
    delete: float = 0.0
    reclaimed: int = 0  # bytes
    peak_kib: int = 0


def scenario(tool: Tool, image: Path, pristine: Path, size: int, work: Path) -> Results:
    """The scenarios, on a fresh copy of the image (every tool sees the same changes)."""
    _sparse_copy(pristine, image)
    r = Results()
    tool.init()
    r.first = tool.backup(image, "b01")
    r.first_stored = tool.stored()
    r.unchanged = tool.backup(image, "b02")
    before = tool.stored()
    change_clustered(image, size, seed=3)
    r.clustered = tool.backup(image, "b03")
    r.clustered_stored = tool.stored() - before
    before = tool.stored()
    change_scattered(image, size, seed=4)
    r.scattered = tool.backup(image, "b04")
    r.scattered_stored = tool.stored() - before
    target = work / f"{tool.name}-restore"
    target.mkdir()
    r.restore, restored = tool.restore("b04", target, image)
    r.exact = file_digest(restored) == file_digest(image)
    shutil.rmtree(target)
    for n in range(5, _BACKUPS + 1):
        change_scattered(image, size, seed=100 + n, fraction=0.002)
        tool.backup(image, f"b{n:02d}")
    before = tool.stored()
    r.delete = tool.delete("b03")  # holds the clustered change: real space to reclaim
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


def table(size: int, limits: dict[str, float], results: dict[str, Results]) -> str:
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


@bench_app.command("repo")
def repo_bench(
    size: Annotated[str, typer.Option("--size", help="Image size (e.g. 1GiB, 256MiB).")] = "1GiB",
    out: Annotated[Path | None, typer.Option("--out", help="Also write the report here.")] = Path(
        "docs/benchmarks-repo.md"
    ),
    work_dir: Annotated[
        Path | None, typer.Option("--work-dir", help="Where images and repositories go.")
    ] = None,
    tools: Annotated[
        str, typer.Option("--tools", help="Comma-separated subset.")
    ] = "csbs,restic,borg",
) -> None:
    """Back up, change, restore and delete on one image with csbs, restic and borg."""
    nbytes = parse_size(size)
    work = Path(tempfile.mkdtemp(prefix="csbs-bench-", dir=work_dir))
    try:
        pristine = work / "pristine.img"
        console.print(f"generating a {nbytes / MB:,.0f} MB image in {work}", highlight=False)
        generate_image(pristine, nbytes)
        limits = primitive_limits(pristine, nbytes)
        results: dict[str, Results] = {}
        notes: list[str] = []
        kinds = {"csbs": Csbs, "restic": Restic, "borg": Borg}
        for name in (t.strip() for t in tools.split(",") if t.strip()):
            if name != "csbs" and shutil.which(name) is None:
                notes.append(f"{name}: not installed, skipped (apt-get install {_PACKAGES[name]})")
                continue
            console.print(f"running {name} ...", highlight=False)
            image = work / "disk.img"
            results[name] = scenario(kinds[name](work), image, pristine, nbytes, work)
        versions = _versions(list(results))
        report = (
            f"# Repository benchmark\n\nCommand: `csbs bench repo --size {size}` on "
            f"{os.cpu_count()} CPUs; image {nbytes / MB:,.0f} MB (4 MiB extents: zeros, random, "
            f"repeated, compressible text). Ratios are csbs's speed-up (times) or, for sizes and "
            f"memory, how many times less csbs needs. restic runs with `--force` and borg with "
            f"`--files-cache disabled` so that, like csbs reading a device, they read the image "
            f"every time. Deletion: csbs `delete_backup` + sweep (grace 0), restic "
            f"`forget --prune`, borg `delete` + `compact`. csbs operations are timed inside "
            f"their process, as a long-running worker runs them (interpreter start-up and "
            f"imports, about 0.7 s, excluded); restic and borg are timed as whole commands. "
            f"Every operation starts after a `sync`, so no tool pays for another's writeback. "
            f"A restore is timed until the image is on disk: csbs fsyncs it before it reports "
            f"success; restic and borg do not, so the fsync of their image is added. "
            f"Peak RSS is each process's own (GNU time).\n{versions}\n\n"
            + table(nbytes, limits, results)
            + "".join(f"\n- {n}" for n in notes)
        )
        print(report)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(report)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _versions(tools: list[str]) -> str:
    parts = []
    for name, command in (("restic", ["restic", "version"]), ("borg", ["borg", "--version"])):
        if name in tools:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            parts.append(done.stdout.strip().splitlines()[0] if done.stdout else name)
    return "Versions: " + "; ".join(parts) if parts else ""


# -- csbs child processes ---------------------------------------------------------------------

# One csbs operation in a fresh interpreter: `python -c _CHILD OP DB_URL STORE_DIR ...`.
# Not `python -m csbs.cli.bench`: importing the csbs.cli package loads the whole service
# (FastAPI, uvicorn, ...), which takes seconds and tens of MiB that a worker running a
# backup does not pay for.
_CHILD = """
import sys
import time
from csbs.blobstore import LocalStore
from csbs.db.engine import create_engine
from csbs.domain.clock import SystemClock
from csbs.repository import Repository, RepositorySettings, schema

op, db_url, store_dir, *rest = sys.argv[1:]
engine = create_engine(db_url)
schema.metadata.create_all(engine)
settings = RepositorySettings(sweep_grace_seconds=0.0)
repo = Repository(engine, LocalStore(store_dir), SystemClock(), bytes(range(32)), settings)
started = time.monotonic()
if op == "backup":
    image, backup_id = rest
    repo.backup_writer("bench", backup_id).write_disk("disk", image)
    repo.seal_backup("bench", backup_id)
elif op == "restore":
    backup_id, target = rest
    repo.restore("bench", backup_id, "disk", target)
elif op == "delete":
    (backup_id,) = rest
    repo.delete_backup("bench", backup_id)
    repo.sweep("bench")
print(time.monotonic() - started)
engine.dispose()
"""
