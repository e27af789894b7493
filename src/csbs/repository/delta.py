"""Sub-chunk increments: a chunk stored as the sub-blocks that changed over a base chunk.

A chunk of a disk that changed only in part since the same disk's previous backup is
stored as a *delta*: the changed sub-blocks over the previous version of that chunk (its
*base*). Its id stays the keyed BLAKE3 of the whole new chunk, so manifests, deduplication
and the image digest do not change; only how the chunk's blob is stored does. The blob is
an envelope of version `envelope.ENVELOPE_DELTA` whose payload is:

    offset  size  field
    0       32    base chunk id (raw)
    32      8     base generation (the base's blob is `layout.chunk_name(.., base, gen)`)
    40      4     length of the chunk the delta rebuilds
    44      4     piece count n
    48      8n    pieces: (offset, length) in the chunk, in order, not overlapping
    ...           the pieces' bytes, concatenated

Rebuilding: the base's bytes (cut or zero-padded to the length), each piece copied over,
then the keyed hash of the result must equal the id, or it is an `IntegrityError`.

A delta's base is held by the delta's chunk row (`repo_chunks.base_id`: one reference on
the base while the row exists, released when the sweep removes the row), so deleting any
backup never breaks another. A chain is bounded: a delta stands on a base of depth
below `MAX_DEPTH` (a whole chunk is depth 0), otherwise the chunk is stored whole.

Which sub-blocks changed comes from the caller (changed-block tracking: `changed`
regions), or from comparing the per-sub-block digests of the new chunk with those the
previous manifest kept (`manifest.MANIFEST_V3`): the old data is never read back.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence

from csbs.blobstore import BlobNotFound, BlobStore
from csbs.repository import envelope, errors, keys, layout

#: The longest chain: a delta stands on a chunk of depth below this (whole chunks are 0).
MAX_DEPTH = 4
#: Bytes of one sub-block digest (a keyed BLAKE3, truncated).
SUB_DIGEST_SIZE = 16
#: A delta holding more than this share of its chunk is stored whole instead.
MAX_DELTA_SHARE = 0.5
#: Smallest sub-block, and the most sub-blocks per chunk.
MIN_SUB_BLOCK = 4096
SUB_BLOCKS_PER_CHUNK = 256
#: The most sub-block digests a manifest keeps (256 MiB of them).
MAX_SUB_BLOCKS = 16 * 1024 * 1024

_HEAD = struct.Struct("<32sQII")
_PIECE = struct.Struct("<II")

Pieces = Sequence[tuple[int, int]]


def leaf_size(chunk_size: int) -> int:
    """The sub-block of a disk in chunks of `chunk_size` before any doubling (see
    `sub_block_size`): the leaf of the tree chunk ids of a project with that chunk size."""
    return min(max(MIN_SUB_BLOCK, chunk_size // SUB_BLOCKS_PER_CHUNK), chunk_size)


def sub_block_size(chunk_size: int, logical_size: int) -> int:
    """The sub-block of a disk of `logical_size` in chunks of `chunk_size`: a 256th of
    the chunk (at least 4 KiB), doubled until the disk has at most `MAX_SUB_BLOCKS`."""
    size = leaf_size(chunk_size)
    while size < chunk_size and logical_size // size > MAX_SUB_BLOCKS:
        size *= 2
    return min(size, chunk_size)


def sub_count(length: int, sub_block: int) -> int:
    return -(-length // sub_block)


def sub_digests(project_keys: keys.ProjectKeys, data: bytes | memoryview, sub_block: int) -> bytes:
    """The digests of every sub-block of `data` (the last may be short), concatenated."""
    return _truncated(project_keys.leaf_digests(data, sub_block))


def digest_chunk(
    project_keys: keys.ProjectKeys, data: bytes | memoryview, sub_block: int
) -> tuple[keys.ChunkId, bytes]:
    """The chunk id of `data` and its `sub_digests`: one pass over the data where the
    project's chunk ids are trees whose leaves are these sub-blocks (decision 0027)."""
    chunk_id, leaves = project_keys.chunk_id_and_leaves(data, sub_block)
    return chunk_id, _truncated(leaves)


def _truncated(leaves: list[bytes]) -> bytes:
    return b"".join([leaf[:SUB_DIGEST_SIZE] for leaf in leaves])


def changed_pieces(
    length: int,
    sub_block: int,
    new: bytes,
    old: bytes | memoryview | None,
    regions: Iterable[tuple[int, int]] | None = None,
) -> list[tuple[int, int]] | None:
    """The pieces of a chunk of `length` bytes that differ from its previous version, as
    merged runs of whole sub-blocks; None when they cannot be known.

    `new` and `old` are the sub-block digests of the chunk and of its previous version
    (`old` None or all zeros: not known); `regions` are (offset, length) ranges in the
    chunk the caller knows changed (changed-block tracking). A sub-block differs when a
    region touches it, or its digests differ (a sub-block the previous version did not
    have, past its end, always does). Without old digests, the regions alone say what changed.
    """
    count = sub_count(length, sub_block)
    changed = bytearray(count)
    if old is not None and not any(old):
        old = None  # kept as zeros: not known (a chunk the source did not read)
    if old is None and regions is None:
        return None
    if old is not None:
        old_count = len(old) // SUB_DIGEST_SIZE
        for i in range(count):
            at = i * SUB_DIGEST_SIZE
            if i >= old_count or new[at : at + SUB_DIGEST_SIZE] != old[at : at + SUB_DIGEST_SIZE]:
                changed[i] = 1
    for offset, size in regions or ():
        if size <= 0:
            continue
        first = max(0, offset // sub_block)
        last = min(count - 1, (offset + size - 1) // sub_block)
        for i in range(first, last + 1):
            changed[i] = 1
    pieces: list[tuple[int, int]] = []
    i = 0
    while i < count:
        if not changed[i]:
            i += 1
            continue
        start = i
        while i < count and changed[i]:
            i += 1
        begin = start * sub_block
        pieces.append((begin, min(length, i * sub_block) - begin))
    return pieces


def encode(base_id: str, base_generation: int, data: bytes, pieces: Pieces) -> bytes:
    """The delta payload rebuilding `data` over chunk `base_id` from `pieces` of it."""
    view = memoryview(data)
    out = [_HEAD.pack(bytes.fromhex(base_id), base_generation, len(data), len(pieces))]
    out.extend(_PIECE.pack(offset, size) for offset, size in pieces)
    out.extend(bytes(view[offset : offset + size]) for offset, size in pieces)
    return b"".join(out)


def base_of(payload: bytes) -> tuple[str, int]:
    """The (base chunk id, base generation) a delta payload stands on."""
    if len(payload) < _HEAD.size:
        raise ValueError("delta too short")
    raw, generation, _, _ = _HEAD.unpack_from(payload)
    return raw.hex(), int(generation)


def apply(base: bytes, payload: bytes) -> bytes:
    """Rebuild the chunk from its base's bytes and its delta payload (unchecked)."""
    if len(payload) < _HEAD.size:
        raise ValueError("delta too short")
    _, _, length, count = _HEAD.unpack_from(payload)
    table_end = _HEAD.size + count * _PIECE.size
    if table_end > len(payload):
        raise ValueError("delta piece table truncated")
    keep = min(length, len(base))
    out = bytearray(memoryview(base)[:keep])  # a copy, not zeros then a copy
    if keep < length:
        out += bytes(length - keep)
    at = table_end
    for index in range(count):
        offset, size = _PIECE.unpack_from(payload, _HEAD.size + index * _PIECE.size)
        if offset + size > length or at + size > len(payload):
            raise ValueError("delta piece out of bounds")
        out[offset : offset + size] = memoryview(payload)[at : at + size]
        at += size
    if at != len(payload):
        raise ValueError("delta has trailing bytes")
    return bytes(out)


class ChunkFetcher:
    """Reads a stored chunk's plaintext, rebuilding a delta from its chain of bases.

    Every whole chunk is checked against its id by the envelope, every rebuilt one here;
    a base that is missing or corrupt fails each chunk standing on it, naming the base.
    """

    def __init__(
        self,
        store: BlobStore,
        project_id: str,
        project_keys: keys.ProjectKeys,
        codec: envelope.Codec,
        fetched: Callable[[int], None] | None = None,
    ) -> None:
        self._store = store
        self._project_id = project_id
        self._keys = project_keys
        self._codec = codec
        self._fetched = fetched

    def fetch(self, chunk_id: str, generation: int) -> bytes:
        return self._fetch(chunk_id, generation, 0, verify=True)

    def _fetch(self, chunk_id: str, generation: int, depth: int, *, verify: bool) -> bytes:
        """The chunk's plaintext; `verify` False leaves a whole chunk's hash to the caller
        (a base: the chunk rebuilt over it is checked, and proves it)."""
        name = layout.chunk_name(self._project_id, chunk_id, generation)
        try:
            # Only the holder refers to the envelope: it is freed once decrypted.
            holder = [self._store.get(name)]
        except BlobNotFound as exc:
            raise errors.ChunkNotFound(chunk_id) from exc
        if self._fetched is not None:
            self._fetched(len(holder[0]))
        payload, is_delta = self._codec.open_stored_held(
            self._keys, chunk_id, holder, verify=verify
        )
        if not is_delta:
            return payload
        if depth >= MAX_DEPTH:
            raise errors.IntegrityError(chunk_id, f"delta chain deeper than {MAX_DEPTH}")
        try:
            base_id, base_generation = base_of(payload)
            layout.chunk_name(self._project_id, base_id, base_generation)
        except ValueError as exc:
            raise errors.IntegrityError(chunk_id, f"malformed delta: {exc}") from exc
        # The base's own hash is skipped: the rebuilt chunk's hash covers what the delta
        # takes from it, and restores of deltas paid for two hashes a chunk. Only when the
        # rebuilt chunk fails is the base checked, to name the chunk that is bad.
        base = self._base(chunk_id, base_id, base_generation, depth, verify=False)
        try:
            data = apply(base, payload)
        except ValueError as exc:
            raise errors.IntegrityError(chunk_id, f"malformed delta: {exc}") from exc
        del base
        if verify and self._keys.chunk_id(data) != chunk_id:
            self._base(chunk_id, base_id, base_generation, depth, verify=True)
            raise errors.IntegrityError(chunk_id, "the rebuilt chunk does not match its id")
        return data

    def _base(
        self, chunk_id: str, base_id: str, base_generation: int, depth: int, *, verify: bool
    ) -> bytes:
        try:
            return self._fetch(base_id, base_generation, depth + 1, verify=verify)
        except errors.ChunkNotFound as exc:
            raise errors.IntegrityError(
                chunk_id, f"its base {exc.chunk_id} is missing", exc.chunk_id
            ) from exc
        except errors.IntegrityError as exc:
            raise errors.IntegrityError(
                chunk_id, f"its base {exc.root} does not verify ({exc.reason})", exc.root
            ) from exc
