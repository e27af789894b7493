"""The chunk envelope: how one chunk (or manifest) is stored, verified on every read.

Format v1, all integers unsigned:

    offset  size  field
    0       8     magic b"CSBSCHNK"
    8       1     format version (ENVELOPE_V1; ENVELOPE_DELTA: the payload is a delta,
                  `delta.py`, and the id is that of the chunk the delta rebuilds)
    9       1     compression: 0 none, 1 zstd (one frame with its content size)
    10      32    chunk id: keyed BLAKE3 of the plaintext (raw bytes)
    42      12    nonce, random per envelope
    54      n+16  AES-256-GCM(key=project encryption key, nonce,
                               plaintext=payload, associated data=bytes 0..41) || tag

The header (bytes 0..41) is authenticated as associated data, so the id, version and
compression flag cannot be altered or swapped between envelopes without detection.
Reading checks, in order: length, magic, version, compression code, that the id in the
header is the one asked for, the AES-GCM tag, the decompressed size bound, and finally
that the keyed hash of the plaintext equals the id. Any failure is an IntegrityError
naming the chunk; wrong data is never returned.
"""

from __future__ import annotations

import contextlib
import hmac
import mmap
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import zstandard
from cryptography.exceptions import InvalidTag

from csbs.repository import chunking, errors, keys

MAGIC = b"CSBSCHNK"
ENVELOPE_V1 = 1  # v1: header as AES-GCM associated data; zstd or no compression
#: The same envelope holding a delta (`delta.py`): the payload is the changed sub-blocks
#: of chunk `id` over a base chunk, and the id is checked once the delta is applied.
ENVELOPE_DELTA = 2
COMPRESSION_NONE = 0
COMPRESSION_ZSTD = 1
DEFAULT_ZSTD_LEVEL = 1

HEADER_SIZE = len(MAGIC) + 1 + 1 + keys.CHUNK_ID_SIZE  # 42 bytes
OVERHEAD = HEADER_SIZE + keys.NONCE_SIZE + keys.TAG_SIZE  # 70 bytes around the payload

_VERSION_AT = len(MAGIC)
_COMPRESSION_AT = _VERSION_AT + 1
_ID_AT = _COMPRESSION_AT + 1
_NONCE_AT = HEADER_SIZE
_PAYLOAD_AT = HEADER_SIZE + keys.NONCE_SIZE


class Compressor(Protocol):
    """What `seal` needs of a compressor (a `zstandard.ZstdCompressor` fits)."""

    def compress(self, data: bytes | memoryview) -> bytes: ...


class Decompressor(Protocol):
    """What `open_` needs of a decompressor (a `zstandard.ZstdDecompressor` fits)."""

    def decompress(self, data: bytes, max_output_size: int = ...) -> bytes: ...


def seal(
    project_keys: keys.ProjectKeys,
    chunk_id: str,
    plaintext: bytes,
    compressor: Compressor | None,
) -> bytearray:
    """Return the envelope holding `plaintext`, whose id is `chunk_id`.

    The payload is compressed with `compressor` unless it is None or compression does
    not make the data smaller, in which case the plaintext is stored as is. The caller
    vouches that `chunk_id == project_keys.chunk_id(plaintext)` (it has just hashed the
    data to decide whether to upload); `open_` re-checks it on every read.
    """
    header, payload = _header_and_payload(chunk_id, plaintext, compressor)
    envelope = bytearray(_PAYLOAD_AT + len(payload) + keys.TAG_SIZE)
    _encrypt_into(project_keys, header, payload, envelope)
    return envelope


def seal_into(
    project_keys: keys.ProjectKeys,
    chunk_id: str,
    plaintext: bytes,
    compressor: Compressor | None,
    out: mmap.mmap | bytearray,
    *,
    delta: bool = False,
) -> int:
    """`seal`, written at the start of `out`; returns the envelope's length.

    `out` must hold `len(plaintext) + OVERHEAD` bytes (the most an envelope takes).
    `delta`: `plaintext` is a delta of chunk `chunk_id` (version `ENVELOPE_DELTA`)."""
    if len(out) < len(plaintext) + OVERHEAD:
        raise ValueError(f"{len(out)} bytes cannot hold the envelope of {len(plaintext)}")
    header, payload = _header_and_payload(chunk_id, plaintext, compressor, delta)
    return _encrypt_into(project_keys, header, payload, out)


def _header_and_payload(
    chunk_id: str, plaintext: bytes, compressor: Compressor | None, delta: bool = False
) -> tuple[bytes, bytes]:
    id_bytes = _id_bytes(chunk_id)
    compression = COMPRESSION_NONE
    payload = plaintext
    if compressor is not None and plaintext and _may_compress(plaintext, compressor):
        compressed = compressor.compress(plaintext)
        if len(compressed) < len(plaintext):
            compression, payload = COMPRESSION_ZSTD, compressed
    version = ENVELOPE_DELTA if delta else ENVELOPE_V1
    return MAGIC + bytes((version, compression)) + id_bytes, payload


def _may_compress(plaintext: bytes, compressor: Compressor) -> bool:
    """False when samples spread over a large plaintext all fail to compress.

    Already compressed or encrypted data (media, archives, a guest's encrypted disk) is
    common in images, and zstd spends about as long failing on a 4 MiB chunk of it as
    hashing the chunk takes; eight 8 KiB samples cost a hundredth of that. They are at
    most a seventh of the plaintext apart, so a compressible part that long is always
    sampled; a shorter one between incompressible data may be stored uncompressed:
    bytes lost, nothing wrong.
    """
    size = len(plaintext)
    if size < _PROBE_FROM:
        return True
    view = memoryview(plaintext)
    # From the first bytes to the last: an image's chunk often ends in another file.
    step = (size - _PROBE_SIZE) // (_PROBES - 1)
    for start in range(0, step * _PROBES, step):
        sample = view[start : start + _PROBE_SIZE]
        if len(compressor.compress(sample)) < len(sample) * _PROBE_RATIO:
            return True
    return False


_PROBE_FROM = 256 * 1024  # bytes: smaller plaintexts are compressed without a probe
_PROBES = 8
_PROBE_SIZE = 8 * 1024  # bytes
_PROBE_RATIO = 0.97  # a sample compressed to less than this share is compressible


def _encrypt_into(
    project_keys: keys.ProjectKeys,
    header: bytes,
    payload: bytes,
    out: mmap.mmap | bytearray,
) -> int:
    """Write header, a fresh nonce and the encrypted payload at the start of `out`.

    Encrypted in place behind header and nonce: no second copy of the payload to join
    (a faster seal, and one buffer of a chunk less per seal in flight; the figures:
    docs/decisions/0012-direct-io-for-what-the-engine-writes.md)."""
    end = _PAYLOAD_AT + len(payload) + keys.TAG_SIZE
    # Random 96-bit nonces: NIST SP 800-38D allows 2**32 messages per key this way,
    # i.e. 16 PiB of 4 MiB chunks per project.
    nonce = secrets.token_bytes(keys.NONCE_SIZE)
    out[:HEADER_SIZE] = header
    out[_NONCE_AT:_PAYLOAD_AT] = nonce
    with memoryview(out) as view, view[_PAYLOAD_AT:end] as target:
        project_keys.aead.encrypt_into(nonce, payload, header, target)
    return end


def open_(
    project_keys: keys.ProjectKeys,
    expected_chunk_id: str,
    blob: bytes,
    decompressor: Decompressor,
    *,
    max_size: int = chunking.MAX_CHUNK_SIZE,
) -> bytes:
    """Return the plaintext in `blob`, after checking it is chunk `expected_chunk_id`.

    `max_size` bounds the plaintext size (the decompression output). Raises
    `IntegrityError(expected_chunk_id, reason)` if anything does not check out: a
    malformed or truncated envelope, another chunk's envelope, tampering, a wrong key
    (AES-GCM cannot tell these last two apart), a plaintext that does not hash to
    the id, or a delta (read those with `open_stored`).
    """
    return open_held(project_keys, expected_chunk_id, [blob], decompressor, max_size=max_size)


def open_held(
    project_keys: keys.ProjectKeys,
    expected_chunk_id: str,
    holder: list[bytes],
    decompressor: Decompressor,
    *,
    max_size: int = chunking.MAX_CHUNK_SIZE,
) -> bytes:
    """`open_` of the one blob in `holder`, which it empties: a caller that keeps no other
    reference has the envelope freed once decrypted, before the plaintext is made (one
    chunk buffer less per chunk being opened)."""
    payload, delta = open_stored_held(
        project_keys, expected_chunk_id, holder, decompressor, max_size=max_size
    )
    if delta:
        raise errors.IntegrityError(expected_chunk_id, "a delta where a whole chunk was expected")
    return payload


def open_stored(
    project_keys: keys.ProjectKeys,
    expected_chunk_id: str,
    blob: bytes,
    decompressor: Decompressor,
    *,
    max_size: int = chunking.MAX_CHUNK_SIZE,
) -> tuple[bytes, bool]:
    """Return `(payload, is_delta)`: a whole chunk's plaintext, checked against its id as
    `open_` does, or an authenticated delta (`ENVELOPE_DELTA`) whose id the caller checks
    on the chunk the delta rebuilds (`delta.ChunkFetcher`)."""
    return open_stored_held(
        project_keys, expected_chunk_id, [blob], decompressor, max_size=max_size
    )


def open_stored_held(
    project_keys: keys.ProjectKeys,
    expected_chunk_id: str,
    holder: list[bytes],
    decompressor: Decompressor,
    *,
    max_size: int = chunking.MAX_CHUNK_SIZE,
    verify: bool = True,
) -> tuple[bytes, bool]:
    """`open_stored` of the one blob in `holder`, which it empties (as `open_held`).

    `verify` False skips the hash of a whole chunk's plaintext (AES-GCM still
    authenticates the envelope and its id): for the base of a delta, whose rebuilt chunk
    is checked against its own id (`delta.ChunkFetcher`)."""
    expected = _id_bytes(expected_chunk_id)

    def fail(reason: str) -> errors.IntegrityError:
        return errors.IntegrityError(expected_chunk_id, reason)

    version, compression, payload = _decrypt(project_keys, expected, holder.pop(), fail)
    if compression == COMPRESSION_ZSTD:
        plaintext = _decompress(payload, decompressor, max_size, fail)
    else:
        if len(payload) > max_size:
            raise fail(f"plaintext larger than {max_size} bytes")
        plaintext = payload
    del payload
    if version == ENVELOPE_DELTA:
        return plaintext, True
    if verify and not hmac.compare_digest(project_keys.chunk_digest(plaintext), expected):
        raise fail("plaintext does not match its id")
    return plaintext, False


def _decrypt(
    project_keys: keys.ProjectKeys,
    expected: bytes,
    blob: bytes,
    fail: Callable[[str], errors.IntegrityError],
) -> tuple[int, int, bytes]:
    """Check `blob`'s header and decrypt it: (envelope version, compression code, payload)."""
    if len(blob) < OVERHEAD:
        raise fail(f"envelope too short ({len(blob)} bytes)")
    with memoryview(blob) as view:
        if view[: len(MAGIC)] != MAGIC:
            raise fail("not a chunk envelope (bad magic)")
        version = blob[_VERSION_AT]
        if version not in (ENVELOPE_V1, ENVELOPE_DELTA):
            raise fail(f"unsupported envelope version {version}")
        compression = blob[_COMPRESSION_AT]
        if compression not in (COMPRESSION_NONE, COMPRESSION_ZSTD):
            raise fail(f"unknown compression code {compression}")
        if not hmac.compare_digest(view[_ID_AT:HEADER_SIZE], expected):
            raise fail("envelope holds another chunk id")
        nonce = view[_NONCE_AT:_PAYLOAD_AT]
        try:
            payload = project_keys.aead.decrypt(nonce, view[_PAYLOAD_AT:], view[:HEADER_SIZE])
        except InvalidTag as exc:
            raise fail("authentication failed (data altered or wrong key)") from exc
    return version, compression, payload


def chunk_id_of(blob: bytes) -> str:
    """Return the chunk id recorded in an envelope's header, unverified.

    For diagnostics and for reading a manifest whose id is not known in advance; pass
    the result to `open_`, which authenticates the header before trusting it.
    """
    if len(blob) < HEADER_SIZE or blob[: len(MAGIC)] != MAGIC:
        raise errors.RepositoryError("not a chunk envelope")
    return blob[_ID_AT:HEADER_SIZE].hex()


def _decompress(
    payload: bytes,
    decompressor: Decompressor,
    max_size: int,
    fail: Callable[[str], errors.IntegrityError],
) -> bytes:
    # zstandard trusts the content size written in the frame header and ignores
    # max_output_size when one is present, so the bound is checked here first. Bytes
    # after the frame would be ignored; only the authenticated writer could put them
    # there, and the caller's id check covers every byte of the plaintext anyway.
    try:
        declared = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as exc:
        raise fail(f"bad zstd frame: {exc}") from exc
    if declared < 0:
        raise fail("zstd frame without content size")
    if declared > max_size:
        raise fail(f"plaintext larger than {max_size} bytes")
    try:
        plaintext = decompressor.decompress(payload, max_output_size=max_size)
    except zstandard.ZstdError as exc:
        raise fail(f"zstd decompression failed: {exc}") from exc
    if len(plaintext) != declared:
        raise fail("decompressed size differs from the frame header")
    return plaintext


def _id_bytes(chunk_id: str) -> bytes:
    if len(chunk_id) != 2 * keys.CHUNK_ID_SIZE:
        raise ValueError(f"a chunk id is {2 * keys.CHUNK_ID_SIZE} hex digits: {chunk_id!r}")
    try:
        return bytes.fromhex(chunk_id)
    except ValueError:
        raise ValueError(
            f"a chunk id is {2 * keys.CHUNK_ID_SIZE} hex digits: {chunk_id!r}"
        ) from None


class Codec:
    """zstd contexts for seal and open, never used by two threads at once.

    A zstd compression or decompression context must never be used by two threads at
    once (it corrupts data or crashes), and making one per call is slow. A Codec is
    shared by all threads of a pipeline. Each thread lazily gets its own decompression
    context, which is small. Compression contexts, an order of magnitude larger, are lent
    for one seal and then kept for the next: there are as many as seals ran at once, not
    one per thread that ever sealed (a backup's pool has more threads than sealers; the
    sizes: docs/decisions/0012-direct-io-for-what-the-engine-writes.md).
    """

    def __init__(self, level: int = DEFAULT_ZSTD_LEVEL) -> None:
        self.level = level
        self._local = threading.local()
        self._lock = threading.Lock()
        self._idle: list[Any] = []  # compression contexts not lent out

    @contextlib.contextmanager
    def compressor(self) -> Iterator[Any]:
        """Lend a `zstandard.ZstdCompressor` (content size in every frame) to the caller."""
        with self._lock:
            compressor = self._idle.pop() if self._idle else None
        if compressor is None:
            compressor = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
        try:
            yield compressor
        finally:
            with self._lock:
                self._idle.append(compressor)

    @property
    def decompressor(self) -> Any:
        """This thread's `zstandard.ZstdDecompressor`."""
        decompressor = getattr(self._local, "decompressor", None)
        if decompressor is None:
            decompressor = zstandard.ZstdDecompressor()
            self._local.decompressor = decompressor
        return decompressor

    def seal(self, project_keys: keys.ProjectKeys, chunk_id: str, plaintext: bytes) -> bytearray:
        """`seal` with a compression context of this codec's."""
        with self.compressor() as compressor:
            return seal(project_keys, chunk_id, plaintext, compressor)

    def seal_into(
        self,
        project_keys: keys.ProjectKeys,
        chunk_id: str,
        plaintext: bytes,
        out: mmap.mmap | bytearray,
        *,
        delta: bool = False,
    ) -> int:
        """`seal_into` with a compression context of this codec's."""
        with self.compressor() as compressor:
            return seal_into(project_keys, chunk_id, plaintext, compressor, out, delta=delta)

    def open(
        self,
        project_keys: keys.ProjectKeys,
        expected_chunk_id: str,
        blob: bytes,
        *,
        max_size: int = chunking.MAX_CHUNK_SIZE,
    ) -> bytes:
        """`open_` with this thread's decompressor."""
        return open_(project_keys, expected_chunk_id, blob, self.decompressor, max_size=max_size)

    def open_stored(
        self, project_keys: keys.ProjectKeys, expected_chunk_id: str, blob: bytes
    ) -> tuple[bytes, bool]:
        """`open_stored` with this thread's decompressor."""
        return open_stored(project_keys, expected_chunk_id, blob, self.decompressor)

    def open_stored_held(
        self,
        project_keys: keys.ProjectKeys,
        expected_chunk_id: str,
        holder: list[bytes],
        *,
        verify: bool = True,
    ) -> tuple[bytes, bool]:
        """`open_stored_held` with this thread's decompressor."""
        return open_stored_held(
            project_keys, expected_chunk_id, holder, self.decompressor, verify=verify
        )

    def open_held(
        self, project_keys: keys.ProjectKeys, expected_chunk_id: str, holder: list[bytes]
    ) -> bytes:
        """`open_held` with this thread's decompressor."""
        return open_held(project_keys, expected_chunk_id, holder, self.decompressor)

    def release(self) -> None:
        """Drop the idle compression contexts (made again at the next seal): a pipeline
        that is done gives their memory back."""
        with self._lock:
            self._idle.clear()
