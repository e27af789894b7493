"""`csbs bench`: how fast the backup engine runs on this machine, with these settings.

It measures the machine's single-core rates of what a backup does to every chunk (read,
keyed BLAKE3, zstd at the configured level, AES-256-GCM) and the single-pass limit they give
on all cores, then backs a generated image up into a throw-away repository in a temporary
directory, twice (the second time nothing changed), and restores it, with the configured
chunk size and compression. Nothing of the deployment is touched: not its database, its
repository or its master key. It prints the figures, and writes them to a file only when
given `--out`.

The comparison with restic and borg is a benchmark of the project, not of a user's machine:
`python -m bench.repo` in a checkout (see docs/benchmarks.md).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from csbs.cli.common import console, settings_from

MB = 1_000_000
MiB = 1024 * 1024
_EXTENT = 4 * MiB  # granularity of the generated image's content mix
_LABELS = {"read": "read (page cache)", "blake3": "keyed BLAKE3", "aes-gcm": "AES-256-GCM"}


def parse_size(text: str) -> int:
    """`1GiB`, `512MiB`, `100M`, `4096` -> bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(i?B?)\s*", text, re.IGNORECASE)
    if not match:
        raise typer.BadParameter(f"not a size: {text!r}")
    number, unit, binary = match.groups()
    power = " KMGT".index(unit.upper() or " ")
    base = 1024 if binary.lower().startswith("i") or not unit else 1000
    return int(number) * int(base**power)


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


def _rate(operation: Callable[[], object], size: int, seconds: float = 1.0) -> float:
    operation()
    calls = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        operation()
        calls += 1
    return calls * size / (time.monotonic() - started)


def primitive_limits(image: Path, size: int, zstd_level: int = 1) -> dict[str, float]:
    """Single-core bytes/s of read (page cache), keyed BLAKE3, zstd (at `zstd_level`) and
    AES-256-GCM on 4 MiB pieces of the image, and the single-pass pipeline limit over all
    cores."""
    import blake3
    import zstandard
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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
    compressor = zstandard.ZstdCompressor(level=zstd_level)
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
            f"zstd-{zstd_level}": _rate(lambda: compressor.compress(piece()), _EXTENT),
            "aes-gcm": _rate(lambda: aead.encrypt(nonce, piece(), b""), _EXTENT),
        }
    finally:
        os.close(fd)
    per_byte = sum(1 / r for r in rates.values())
    rates["pipeline"] = (os.cpu_count() or 1) / per_byte
    return rates


def _engine_rates(work: Path, image: Path, chunk_size: int, zstd_level: int) -> dict[str, float]:
    """Seconds of a first backup, an unchanged second one and a restore (fsynced) of
    `image`, in a repository of its own under `work`, timed in this process."""
    from csbs.blobstore import LocalStore
    from csbs.db.engine import create_engine
    from csbs.domain.clock import SystemClock
    from csbs.repository import Repository, RepositorySettings, schema

    engine = create_engine(f"sqlite:///{work / 'index.db'}")
    try:
        schema.metadata.create_all(engine)
        settings = RepositorySettings(chunk_size=chunk_size, zstd_level=zstd_level)
        repo = Repository(
            engine, LocalStore(str(work / "repository")), SystemClock(), os.urandom(32), settings
        )
        seconds: dict[str, float] = {}
        for name, backup_id in (("first backup", "b1"), ("second backup, unchanged", "b2")):
            os.sync()
            started = time.monotonic()
            repo.backup_writer("bench", backup_id).write_disk("disk", str(image))
            repo.seal_backup("bench", backup_id)
            seconds[name] = time.monotonic() - started
        target = work / "restored.img"
        target.touch()
        os.sync()
        started = time.monotonic()
        repo.restore("bench", "b2", "disk", str(target))
        seconds["restore, to disk"] = time.monotonic() - started
        return seconds
    finally:
        engine.dispose()


def bench(
    size: Annotated[str, typer.Option("--size", help="Image size (e.g. 1GiB, 256MiB).")] = "1GiB",
    work_dir: Annotated[
        Path | None,
        typer.Option(
            "--work-dir",
            help="Where the image and the repository go (a temporary "
            "directory in it, removed afterwards).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write the report to this file.")
    ] = None,
) -> None:
    """Measure the backup engine on this machine (the configured chunk size and compression;
    nothing of the deployment is touched)."""
    from csbs import app as composition
    from csbs.repository import memtune

    memtune.tune_malloc()  # this process runs the backup and restore pipelines

    settings = composition.repository_settings(settings_from())
    nbytes = parse_size(size)
    work = Path(tempfile.mkdtemp(prefix="csbs-bench-", dir=work_dir))
    try:
        image = work / "disk.img"
        console.print(f"generating a {nbytes / MB:,.0f} MB image in {work}", highlight=False)
        generate_image(image, nbytes)
        console.print("measuring the primitives, one core each ...", highlight=False)
        limits = primitive_limits(image, nbytes, settings.zstd_level)
        console.print("backing up and restoring ...", highlight=False)
        seconds = _engine_rates(work, image, settings.chunk_size, settings.zstd_level)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cores = os.cpu_count() or 1
    lines = [
        f"csbs bench: image {nbytes / MB:,.0f} MB, chunk size {settings.chunk_size // 1024} KiB, "
        f"zstd level {settings.zstd_level}, {cores} cores",
        "",
        *(
            f"{_LABELS.get(name, name):<28} {rate / MB:>9,.0f} MB/s   (one core)"
            for name, rate in limits.items()
            if name != "pipeline"
        ),
        f"{'pipeline limit':<28} {limits['pipeline'] / MB:>9,.0f} MB/s   (all cores, one pass)",
        *(f"{name:<28} {nbytes / s / MB:>9,.0f} MB/s   ({s:.2f} s)" for name, s in seconds.items()),
        "",
        f"The first backup reached {nbytes / seconds['first backup'] / limits['pipeline']:.0%} "
        "of the pipeline limit.",
    ]
    report = "\n".join(lines) + "\n"
    print(report, end="")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
