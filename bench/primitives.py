"""Single-core throughput of the repository's primitives on 4 MiB buffers, in MB/s.

Run: .venv/bin/python bench/primitives.py [--seconds S] [--threads N] [--tune-malloc]

Measures keyed BLAKE3 (the chunk id), zstd level 1 compression of a half-compressible
buffer (and its decompression), AES-256-GCM encryption (and decryption), and the whole
envelope path (hash + compress + encrypt, and its inverse) as the backup and restore
pipelines run it per chunk. With --threads N it also runs the sealing path in N threads
at once, to show how far it scales across cores (every primitive releases the GIL).

--tune-malloc fixes glibc's mmap and trim thresholds (mallopt) before measuring. By
default glibc adapts them and keeps handing 4 MiB buffers back to the kernel between
chunks, so every chunk pays page faults; this roughly halves the composed envelope path.
Worker processes should do the same at start-up.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import os
import random
import sys
import time
from collections.abc import Callable

import blake3
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from csbs.repository import envelope, keys

SIZE = 4 * 1024 * 1024  # bytes per buffer, the default chunk size
MB = 1_000_000


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MALLOC_THRESHOLD = 256 * 1024 * 1024  # bytes; far above any chunk buffer


def tune_malloc() -> bool:
    """Fix glibc's mmap/trim thresholds so freed chunk buffers are reused; False if not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, _MALLOC_THRESHOLD)
        and libc.mallopt(_M_TRIM_THRESHOLD, _MALLOC_THRESHOLD)
    )


def half_compressible(size: int) -> bytes:
    """4 KiB blocks, alternately random and repetitive text: zstd-1 roughly halves it."""
    rng = random.Random(42)
    text = b"The quick brown fox jumps over the lazy dog; csbs backs it up. " * 64
    blocks = []
    for i in range(size // 4096):
        blocks.append(rng.randbytes(4096) if i % 2 == 0 else text[:4096])
    return b"".join(blocks)[:size]


def measure(operation: Callable[[], object], seconds: float) -> float:
    """Return the best MB/s of three runs of `operation` (one 4 MiB buffer per call)."""
    operation()  # warm-up: allocations, lazy initialisation
    best = 0.0
    for _ in range(3):
        calls = 0
        started = time.monotonic()
        deadline = started + seconds / 3
        while True:
            operation()
            calls += 1
            now = time.monotonic()
            if now >= deadline:
                break
        best = max(best, calls * SIZE / (now - started) / MB)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--threads", type=int, default=0, help="also run sealing in N threads")
    parser.add_argument("--tune-malloc", action="store_true", help="fix glibc malloc thresholds")
    args = parser.parse_args()
    tuned = tune_malloc() if args.tune_malloc else False

    data = half_compressible(SIZE)
    noise = os.urandom(SIZE)
    id_key = os.urandom(32)
    project_keys = keys.ProjectKeys(os.urandom(32))
    aead = AESGCM(os.urandom(32))
    nonce = os.urandom(12)
    compressor = zstandard.ZstdCompressor(level=1)
    decompressor = zstandard.ZstdDecompressor()
    compressed = compressor.compress(data)
    encrypted = aead.encrypt(nonce, data, b"")
    codec = envelope.Codec(level=1)
    chunk_id = project_keys.chunk_id(data)
    sealed = codec.seal(project_keys, chunk_id, data)

    def seal() -> bytes:
        return codec.seal(project_keys, project_keys.chunk_id(data), data)

    rows: list[tuple[str, Callable[[], object]]] = [
        ("keyed BLAKE3, 4 MiB", lambda: blake3.blake3(data, key=id_key).digest()),
        ("zstd-1 compress, half-compressible 4 MiB", lambda: compressor.compress(data)),
        ("zstd-1 compress, incompressible 4 MiB", lambda: compressor.compress(noise)),
        ("zstd decompress, half-compressible 4 MiB", lambda: decompressor.decompress(compressed)),
        ("AES-256-GCM encrypt, 4 MiB", lambda: aead.encrypt(nonce, data, b"")),
        ("AES-256-GCM decrypt, 4 MiB", lambda: aead.decrypt(nonce, encrypted, b"")),
        ("envelope seal (hash+zstd+AES), 4 MiB", seal),
        (
            "envelope open (AES+unzstd+hash), 4 MiB",
            lambda: codec.open(project_keys, chunk_id, sealed),
        ),
    ]
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
        f"zstd-1 ratio of the half-compressible buffer: {len(compressed) / SIZE:.2f}; "
        f"malloc thresholds {'fixed' if tuned else 'glibc default'}"
    )
    for label, operation in rows:
        print(f"{label:<44} {measure(operation, args.seconds):8.0f} MB/s")

    if args.threads > 0:
        per_thread = max(4, int(args.seconds * 60))
        with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(lambda _: seal(), range(args.threads)))  # warm-up
            started = time.monotonic()
            list(pool.map(lambda _: seal(), range(per_thread * args.threads)))
            elapsed = time.monotonic() - started
        rate = per_thread * args.threads * SIZE / elapsed / MB
        print(f"{f'envelope seal in {args.threads} threads':<44} {rate:8.0f} MB/s")


if __name__ == "__main__":
    main()
