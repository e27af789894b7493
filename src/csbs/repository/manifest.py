"""The manifest of one disk backup: geometry, ordered chunk ids and holes, image digest.

Encoding, integers little-endian and unsigned:

    offset  size  field
    0       8     magic b"CSBSMNFT"
    8       1     format version (MANIFEST_V1, MANIFEST_V2 or MANIFEST_V3)
    9       8     logical size of the disk image, in bytes
    17      4     chunk size, in bytes (a power of two, 64 KiB .. 8 MiB)
    21      8     entry count = ceil(logical size / chunk size)
    29      32    image digest: v2 `TableDigest` of the image's chunk table; v1 plain BLAKE3
                  of the whole image, holes included as zeros (`ImageDigest`)
    61      ...   runs, until the end (v3: until `runs end`):
                    1 byte kind (1 = chunks, 2 = holes), 8 bytes count (> 0),
                    then for a chunk run `count` chunk ids of 32 bytes each.

v3 (written since 2026-12) adds, between the header and the runs, 4 bytes sub-block size
and 8 bytes `runs end` (the byte offset where the runs end); after the runs come the
per-sub-block digests of every chunk entry in image order (`delta.SUB_DIGEST_SIZE` bytes
each, ceil(chunk length / sub-block) per entry; all zeros: not known): what the next
backup of the disk compares with to store only the sub-blocks that changed (`delta.py`).
The image digest is v2's.

The encoding is canonical: runs are never empty, two runs in a row never have the same
kind, the counts add up to the entry count and nothing follows the last run. So equal
manifests have equal bytes, and `decode(m.encode()) == m`.

A `Manifest` keeps just its encoding (32 bytes per stored chunk, a few per hole run):
a 4 TiB disk at 4 MiB chunks is about 32 MiB. Entries are decoded lazily.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

import blake3

from csbs.repository import chunking, envelope, errors, keys

MAGIC = b"CSBSMNFT"
MANIFEST_V1 = 1  # v1: fixed-size chunks, hole runs, BLAKE3 of the whole image
MANIFEST_V2 = 2  # v2: the same, with the digest of the chunk table (written since 2026-11)
MANIFEST_V3 = 3  # v3: v2 with per-sub-block digests (written since 2026-12)
_VERSIONS = (MANIFEST_V1, MANIFEST_V2, MANIFEST_V3)
SUB_DIGEST_SIZE = 16  # bytes of a sub-block digest (delta.SUB_DIGEST_SIZE)

# Bound on a manifest's plaintext when reading it back: 32 Mi entries (128 TiB at 4 MiB
# chunks, 2 TiB at 64 KiB chunks) plus run headers.
MAX_MANIFEST_SIZE = 1024 * 1024 * 1024  # bytes

DIGEST_SIZE = 32  # bytes of the image digest

_HEADER = struct.Struct("<8sBQIQ32s")
HEADER_SIZE = _HEADER.size  # 61 bytes
_V3 = struct.Struct("<IQ")  # sub-block size, runs end
_RUN = struct.Struct("<BQ")
_RUN_CHUNKS = 1
_RUN_HOLES = 2
_ID_SIZE = keys.CHUNK_ID_SIZE

# Zeros fed to the image digest in pieces, so a hole of any length needs no more memory.
_ZEROS = bytes(1024 * 1024)

Entry = keys.ChunkId | None
"""A manifest entry: the chunk's id, or None for a hole (an all-zero chunk)."""


class Manifest:
    """An immutable, validated manifest, held as its canonical encoding."""

    __slots__ = (
        "_encoded",
        "_runs_at",
        "_runs_end",
        "chunk_size",
        "entry_count",
        "image_digest",
        "logical_size",
        "sub_block",
        "version",
    )

    def __init__(self, encoded: bytes) -> None:
        """Wrap `encoded` after validating it completely; raises `InvalidManifest`.

        Prefer `decode`, `from_entries` or `ManifestBuilder`.
        """
        (
            self.version,
            self.logical_size,
            self.chunk_size,
            self.entry_count,
            self.image_digest,
        ) = _parse_header(encoded)
        self.sub_block, self._runs_at, self._runs_end = _bounds(encoded, self.version)
        for _ in _iter_runs(encoded, self.entry_count, self._runs_at, self._runs_end):
            pass
        self._encoded = encoded
        if self.sub_block:
            expected = sum(
                -(-min(self.chunk_size, self.logical_size - i * self.chunk_size) // self.sub_block)
                for i, entry in enumerate(self.entries())
                if entry is not None
            )
            expected *= SUB_DIGEST_SIZE
            if self._runs_end + expected != len(encoded):
                raise errors.InvalidManifest("sub-block digests do not match the chunk entries")

    @classmethod
    def from_entries(
        cls,
        logical_size: int,
        chunk_size: int,
        entries: Iterable[str | None],
        image_digest: bytes,
        version: int = MANIFEST_V2,
    ) -> Manifest:
        """Build a manifest from every entry in order (None for a hole)."""
        builder = ManifestBuilder(logical_size, chunk_size)
        for entry in entries:
            builder.add(entry)
        return builder.finish(image_digest, version)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Manifest):
            return NotImplemented
        return self._encoded == other._encoded

    def __hash__(self) -> int:
        return hash(self._encoded)

    def __repr__(self) -> str:
        return (
            f"Manifest(v{self.version}, logical_size={self.logical_size}, "
            f"chunk_size={self.chunk_size}, "
            f"entries={self.entry_count}, image_digest={self.image_digest.hex()})"
        )

    def encode(self) -> bytes:
        """Return the canonical encoding (no copy is made)."""
        return self._encoded

    def entries(self) -> Iterator[Entry]:
        """Yield every entry in order: a chunk id, or None for a hole."""
        return iter_entries(self._encoded)

    def entries_with_digests(self) -> Iterator[tuple[Entry, memoryview | None]]:
        """Yield every entry with its sub-block digests (None for a hole, or when this
        manifest keeps none: v1, v2)."""
        if not self.sub_block:
            for entry in self.entries():
                yield entry, None
            return
        yield from self._entries_digests()

    def _entries_digests(self) -> Iterator[tuple[Entry, memoryview | None]]:
        view = memoryview(self._encoded)
        at = self._runs_end
        for index, entry in enumerate(
            _entries_of(self._encoded, self.entry_count, self._runs_at, self._runs_end)
        ):
            if entry is None:
                yield None, None
                continue
            length = min(self.chunk_size, self.logical_size - index * self.chunk_size)
            size = -(-length // self.sub_block) * SUB_DIGEST_SIZE
            yield entry, view[at : at + size]
            at += size

    def chunk_ids(self) -> Iterator[keys.ChunkId]:
        """Yield the chunk id of every non-hole entry in order (repeats included)."""
        for kind, _count, ids in _iter_runs(
            self._encoded, self.entry_count, self._runs_at, self._runs_end
        ):
            if kind == _RUN_CHUNKS:
                for start in range(0, len(ids), _ID_SIZE):
                    yield keys.ChunkId(ids[start : start + _ID_SIZE].hex())

    @property
    def hole_count(self) -> int:
        """How many entries are holes."""
        return sum(
            count
            for kind, count, _ in _iter_runs(
                self._encoded, self.entry_count, self._runs_at, self._runs_end
            )
            if kind == _RUN_HOLES
        )


def decode(encoded: bytes) -> Manifest:
    """Return the manifest encoded in `encoded`; raises `InvalidManifest` if malformed."""
    return Manifest(bytes(encoded))


def iter_entries(encoded: bytes) -> Iterator[Entry]:
    """Yield the entries of an encoded manifest one by one, without building a Manifest.

    Memory stays constant beyond `encoded` itself. The header is checked before the
    first entry; a malformed run raises `InvalidManifest` when reached (possibly after
    some entries were yielded), as does trailing garbage, at the end.
    """
    version, _, _, entry_count, _ = _parse_header(encoded)
    _, start, end = _bounds(encoded, version)
    return _entries_of(encoded, entry_count, start, end)


def _entries_of(encoded: bytes, entry_count: int, start: int, end: int) -> Iterator[Entry]:
    for kind, count, ids in _iter_runs(encoded, entry_count, start, end):
        if kind == _RUN_HOLES:
            for _ in range(count):
                yield None
        else:
            for start in range(0, len(ids), _ID_SIZE):
                yield keys.ChunkId(ids[start : start + _ID_SIZE].hex())


def _parse_header(encoded: bytes) -> tuple[int, int, int, int, bytes]:
    if len(encoded) < HEADER_SIZE:
        raise errors.InvalidManifest(f"manifest too short ({len(encoded)} bytes)")
    magic, version, logical_size, chunk_size, entry_count, digest = _HEADER.unpack_from(encoded)
    if magic != MAGIC:
        raise errors.InvalidManifest("not a manifest (bad magic)")
    if version not in _VERSIONS:
        raise errors.InvalidManifest(f"unsupported manifest version {version}")
    try:
        chunking.validate_chunk_size(chunk_size)
    except ValueError as exc:
        raise errors.InvalidManifest(str(exc)) from exc
    expected = chunking.chunk_count(logical_size, chunk_size)
    if entry_count != expected:
        raise errors.InvalidManifest(
            f"{entry_count} entries for {logical_size} bytes in chunks of {chunk_size}; "
            f"expected {expected}"
        )
    return version, logical_size, chunk_size, entry_count, digest


def _bounds(encoded: bytes, version: int) -> tuple[int, int, int]:
    """(sub-block size or 0, where the runs start, where they end)."""
    if version != MANIFEST_V3:
        return 0, HEADER_SIZE, len(encoded)
    if len(encoded) < HEADER_SIZE + _V3.size:
        raise errors.InvalidManifest("manifest too short for v3")
    sub_block, runs_end = _V3.unpack_from(encoded, HEADER_SIZE)
    if (
        sub_block < 512
        or sub_block & (sub_block - 1)
        or not HEADER_SIZE + _V3.size <= runs_end <= len(encoded)
    ):
        raise errors.InvalidManifest("bad v3 sub-block size or runs end")
    return sub_block, HEADER_SIZE + _V3.size, runs_end


def _iter_runs(
    encoded: bytes, entry_count: int, start: int = HEADER_SIZE, end: int | None = None
) -> Iterator[tuple[int, int, memoryview]]:
    """Yield `(kind, count, ids)` per run, checking the canonical form as it goes."""
    view = memoryview(encoded)[: len(encoded) if end is None else end]
    position = start
    seen = 0
    previous = 0
    while position < len(view):
        if len(view) - position < _RUN.size:
            raise errors.InvalidManifest(f"truncated run header at byte {position}")
        kind, count = _RUN.unpack_from(view, position)
        position += _RUN.size
        if kind not in (_RUN_CHUNKS, _RUN_HOLES):
            raise errors.InvalidManifest(f"unknown run kind {kind} at byte {position}")
        if count == 0 or kind == previous:
            raise errors.InvalidManifest(f"non-canonical run at byte {position}")
        if count > entry_count - seen:
            raise errors.InvalidManifest("runs hold more entries than the header says")
        ids = view[position:position]
        if kind == _RUN_CHUNKS:
            end = position + count * _ID_SIZE
            if end > len(view):
                raise errors.InvalidManifest(f"truncated chunk run at byte {position}")
            ids = view[position:end]
            position = end
        seen += count
        previous = kind
        yield kind, count, ids
    if seen != entry_count:
        raise errors.InvalidManifest(f"runs hold {seen} entries, the header says {entry_count}")


class ManifestBuilder:
    """Builds a manifest entry by entry, in order, straight into its encoding.

    Memory is the encoding's size; nothing per entry beyond its 32 bytes.
    """

    def __init__(self, logical_size: int, chunk_size: int, sub_block: int = 0) -> None:
        """`sub_block` > 0: a v3 manifest keeping the digests of sub-blocks that size."""
        chunking.validate_chunk_size(chunk_size)
        if logical_size < 0:
            raise ValueError(f"logical size must be >= 0, got {logical_size}")
        if sub_block and (sub_block < 512 or sub_block & (sub_block - 1)):
            raise ValueError(f"a sub-block is a power of two >= 512, got {sub_block}")
        self.logical_size = logical_size
        self.chunk_size = chunk_size
        self.sub_block = sub_block
        self.entry_count = chunking.chunk_count(logical_size, chunk_size)
        # Header written by finish(); v3's extension too.
        self._body = bytearray(_HEADER.size + (_V3.size if sub_block else 0))
        self._digests = bytearray()
        self._added = 0
        self._run_kind = 0
        self._run_count = 0
        self._run_at = 0  # offset of the current run's header in _body

    def add(self, entry: str | None) -> None:
        """Append one entry: a chunk id, or None for a hole."""
        if entry is None:
            self.add_holes(1)
        else:
            self.add_chunk(entry)

    def add_chunk(self, chunk_id: str, sub_digests: bytes | memoryview | None = None) -> None:
        """Append the entry of a stored chunk, with its sub-block digests (v3; None: not
        known, kept as zeros)."""
        try:
            raw = bytes.fromhex(chunk_id)
        except ValueError:
            raw = b""
        if len(raw) != _ID_SIZE or len(chunk_id) != 2 * _ID_SIZE:
            raise ValueError(f"a chunk id is {2 * _ID_SIZE} hex digits: {chunk_id!r}")
        if self.sub_block:
            length = min(self.chunk_size, self.logical_size - self._added * self.chunk_size)
            size = -(-length // self.sub_block) * SUB_DIGEST_SIZE
            if sub_digests is None:
                self._digests += bytes(size)
            elif len(sub_digests) != size:
                raise ValueError(f"{len(sub_digests)} bytes of sub-block digests, not {size}")
            else:
                self._digests += sub_digests
        self._reserve(1)
        if self._run_kind != _RUN_CHUNKS:
            self._start_run(_RUN_CHUNKS)
        self._body += raw
        self._run_count += 1

    def add_holes(self, count: int = 1) -> None:
        """Append `count` hole entries (all-zero chunks)."""
        if count < 0:
            raise ValueError(f"hole count must be >= 0, got {count}")
        if count == 0:
            return
        self._reserve(count)
        if self._run_kind != _RUN_HOLES:
            self._start_run(_RUN_HOLES)
        self._run_count += count

    def finish(self, image_digest: bytes, version: int | None = None) -> Manifest:
        """Return the manifest; every entry must have been added. The builder is spent.

        `image_digest` is of the kind `version` says (v2, v3: `TableDigest`); the version
        is v3 for a builder given a sub-block size, else v2 unless said."""
        if version is None:
            version = MANIFEST_V3 if self.sub_block else MANIFEST_V2
        if (version == MANIFEST_V3) != bool(self.sub_block):
            raise ValueError("a v3 manifest, and only it, has a sub-block size")
        if version not in _VERSIONS:
            raise ValueError(f"unknown manifest version {version}")
        if len(image_digest) != DIGEST_SIZE:
            raise ValueError(f"an image digest has {DIGEST_SIZE} bytes, not {len(image_digest)}")
        if self._added != self.entry_count:
            raise ValueError(f"{self._added} entries added, {self.entry_count} expected")
        self._close_run()
        _HEADER.pack_into(
            self._body,
            0,
            MAGIC,
            version,
            self.logical_size,
            self.chunk_size,
            self.entry_count,
            image_digest,
        )
        if self.sub_block:
            _V3.pack_into(self._body, HEADER_SIZE, self.sub_block, len(self._body))
            self._body += self._digests
            self._digests = bytearray()
        encoded = bytes(self._body)
        self._body = bytearray()
        return Manifest(encoded)

    def _reserve(self, count: int) -> None:
        if self._added + count > self.entry_count:
            raise ValueError(f"more than {self.entry_count} entries for this logical size")
        self._added += count

    def _start_run(self, kind: int) -> None:
        self._close_run()
        self._run_kind = kind
        self._run_count = 0
        self._run_at = len(self._body)
        self._body += bytes(_RUN.size)  # patched with the count when the run closes

    def _close_run(self) -> None:
        if self._run_kind:
            _RUN.pack_into(self._body, self._run_at, self._run_kind, self._run_count)


def _hash_zeros(hasher: blake3.blake3, count: int) -> None:
    """Feed `count` zero bytes to `hasher` from the shared buffer, in pieces."""
    full, rest = divmod(count, len(_ZEROS))
    for _ in range(full):
        hasher.update(_ZEROS)
    if rest:
        hasher.update(memoryview(_ZEROS)[:rest])


class ImageDigest:
    """Incremental BLAKE3 of a whole disk image, fed with data and with hole lengths.

    Holes are hashed as the zeros they stand for, from one shared 1 MiB zero buffer, so
    any hole length costs hashing time but no memory. The result is the plain BLAKE3 of
    the image: `b3sum` on a restored image prints the same digest.
    """

    def __init__(self, max_threads: int = 1) -> None:
        """`max_threads > 1` (or `blake3.blake3.AUTO`) lets BLAKE3 hash large updates on
        several cores; the digest is the same."""
        self._hasher = blake3.blake3(max_threads=max_threads)
        self.length = 0

    def update(self, data: bytes | memoryview) -> None:
        """Absorb the next bytes of the image."""
        self._hasher.update(data)
        self.length += len(data)

    def update_zeros(self, count: int) -> None:
        """Absorb `count` zero bytes (a hole)."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self.length += count
        _hash_zeros(self._hasher, count)

    def digest(self) -> bytes:
        """Return the 32-byte digest of everything absorbed so far."""
        return self._hasher.digest()

    def add_chunk(self, chunk_id: str, data: bytes | memoryview) -> None:
        """Absorb a chunk entry (the verifier interface `TableDigest` shares)."""
        self.update(data)

    def add_holes(self, count: int, length: int) -> None:
        """Absorb `count` hole entries, `length` bytes of the image."""
        self.update_zeros(length)


# What the chunk table digest hashes first: a label and the image's geometry.
_TABLE_HEADER = struct.Struct("<16sQI")
_TABLE_LABEL = b"csbs chunk table"


class TableDigest:
    """The v2 image digest: BLAKE3 of the image's chunk table, fed entry by entry.

    It hashes a label, the logical size and the chunk size, then each entry in image order:
    the 32-byte chunk id, or 32 zero bytes for a hole. A chunk id is the keyed BLAKE3 of
    the chunk's plaintext, which every read verifies, so the table commits to every byte
    of the image as the plain BLAKE3 of v1 did, at 32 bytes hashed per chunk instead of
    the whole image (a second full pass that cost a quarter of a first backup's CPU).

    The writer feeds it in the order it read the image, the reader in the order it writes
    the target: a chunk lost, repeated or moved between the two shows as a mismatch.
    Unlike v1, the digest is not what `b3sum` prints for the restored image.
    """

    def __init__(self, logical_size: int, chunk_size: int) -> None:
        self._hasher = blake3.blake3(_TABLE_HEADER.pack(_TABLE_LABEL, logical_size, chunk_size))

    def update_chunk(self, chunk_id: str) -> None:
        """Absorb the next entry: a stored chunk."""
        self._hasher.update(bytes.fromhex(chunk_id))

    def update_holes(self, count: int) -> None:
        """Absorb the next `count` entries: holes."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        _hash_zeros(self._hasher, count * _ID_SIZE)

    def digest(self) -> bytes:
        """Return the 32-byte digest of every entry absorbed so far."""
        return self._hasher.digest()

    def add_chunk(self, chunk_id: str, data: bytes | memoryview) -> None:
        """Absorb a chunk entry whose data has been checked against `chunk_id`."""
        self.update_chunk(chunk_id)

    def add_holes(self, count: int, length: int) -> None:
        """Absorb `count` hole entries (`length` bytes of the image)."""
        self.update_holes(count)


def restore_digest(the_manifest: Manifest) -> ImageDigest | TableDigest:
    """What a restore feeds each entry to, to compare with `the_manifest.image_digest`."""
    if the_manifest.version == MANIFEST_V1:
        return ImageDigest()
    return TableDigest(the_manifest.logical_size, the_manifest.chunk_size)


def seal_manifest(
    project_keys: keys.ProjectKeys, manifest: Manifest, codec: envelope.Codec
) -> tuple[keys.ChunkId, bytearray]:
    """Return `(manifest_id, envelope)`: the manifest sealed like a chunk.

    The id (keyed BLAKE3 of the encoding) can be recorded to detect a swapped manifest;
    the caller chooses the blob name (`layout.manifest_name`).
    """
    encoded = manifest.encode()
    manifest_id = project_keys.chunk_id(encoded)
    return manifest_id, codec.seal(project_keys, manifest_id, encoded)


def open_manifest(
    project_keys: keys.ProjectKeys,
    blob: bytes,
    codec: envelope.Codec,
    expected_id: str | None = None,
) -> Manifest:
    """Authenticate, decrypt and decode a sealed manifest.

    With `expected_id` the envelope must hold exactly that manifest; without it, any
    manifest sealed with this project's key is accepted. Raises `IntegrityError` if the
    envelope does not verify, `InvalidManifest` if its content is malformed.
    """
    manifest_id = expected_id if expected_id is not None else envelope.chunk_id_of(blob)
    encoded = codec.open(project_keys, manifest_id, blob, max_size=MAX_MANIFEST_SIZE)
    return decode(encoded)
