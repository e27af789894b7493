"""Manifests: encoding round trip and validation, streaming decode, image digest, sealing."""

from __future__ import annotations

import os
import struct
import time

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csbs.repository import envelope, errors, keys, manifest

KIB = 1024
MIB = 1024 * KIB
CHUNK_SIZES = [64 * KIB, 128 * KIB, 1 * MIB, 4 * MIB, 8 * MIB]

chunk_ids = st.binary(min_size=32, max_size=32).map(lambda b: keys.ChunkId(b.hex()))
entry_lists = st.lists(st.one_of(st.none(), chunk_ids), max_size=200)


@st.composite
def manifests(draw: st.DrawFn) -> tuple[int, int, list[keys.ChunkId | None], bytes]:
    entries = draw(entry_lists)
    chunk_size = draw(st.sampled_from(CHUNK_SIZES))
    if entries:
        # Any size whose last chunk is partial or full gives the same entry count.
        tail = draw(st.integers(min_value=1, max_value=chunk_size))
        logical_size = (len(entries) - 1) * chunk_size + tail
    else:
        logical_size = 0
    digest = draw(st.binary(min_size=32, max_size=32))
    return logical_size, chunk_size, entries, digest


def an_id(n: int) -> keys.ChunkId:
    return keys.ChunkId(f"{n:02x}" * 32)


@given(manifests())
def test_round_trip(case: tuple[int, int, list[keys.ChunkId | None], bytes]) -> None:
    logical_size, chunk_size, entries, digest = case
    built = manifest.Manifest.from_entries(logical_size, chunk_size, entries, digest)
    encoded = built.encode()
    decoded = manifest.decode(encoded)
    assert decoded == built
    assert decoded.encode() == encoded, "canonical: one encoding per manifest"
    assert list(decoded.entries()) == entries
    assert list(manifest.iter_entries(encoded)) == entries
    assert list(decoded.chunk_ids()) == [e for e in entries if e is not None]
    assert decoded.hole_count == entries.count(None)
    assert (decoded.logical_size, decoded.chunk_size) == (logical_size, chunk_size)
    assert decoded.entry_count == len(entries)
    assert decoded.image_digest == digest
    assert decoded.version == manifest.MANIFEST_V2


def test_a_v1_manifest_keeps_its_version() -> None:
    entries = [an_id(1), None]
    v1 = manifest.Manifest.from_entries(2 * MIB, MIB, entries, bytes(32), manifest.MANIFEST_V1)
    decoded = manifest.decode(v1.encode())
    assert decoded.version == manifest.MANIFEST_V1
    assert isinstance(manifest.restore_digest(decoded), manifest.ImageDigest)
    v2 = manifest.Manifest.from_entries(2 * MIB, MIB, entries, bytes(32))
    assert isinstance(manifest.restore_digest(v2), manifest.TableDigest)
    with pytest.raises(ValueError, match="unknown manifest version"):
        manifest.ManifestBuilder(0, MIB).finish(bytes(32), version=9)


@given(manifests(), st.data())
@settings(max_examples=300)
def test_corrupted_encodings_are_refused_or_still_valid(
    case: tuple[int, int, list[keys.ChunkId | None], bytes], data: st.DataObject
) -> None:
    """Any damage either yields another valid manifest or InvalidManifest, nothing else."""
    logical_size, chunk_size, entries, digest = case
    encoded = bytearray(
        manifest.Manifest.from_entries(logical_size, chunk_size, entries, digest).encode()
    )
    action = data.draw(st.sampled_from(["flip", "truncate", "append"]))
    if action == "flip":
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] ^= data.draw(st.integers(1, 255))
    elif action == "truncate":
        del encoded[data.draw(st.integers(0, len(encoded) - 1)) :]
    else:
        encoded += data.draw(st.binary(min_size=1, max_size=40))
    try:
        decoded = manifest.decode(bytes(encoded))
    except errors.InvalidManifest:
        with pytest.raises(errors.InvalidManifest):
            list(manifest.iter_entries(bytes(encoded)))
        return
    assert decoded.encode() == bytes(encoded)
    assert len(list(decoded.entries())) == decoded.entry_count


def test_holes_are_stored_as_runs() -> None:
    entries: list[keys.ChunkId | None] = [None] * 100_000 + [an_id(1)] + [None] * 100_000
    built = manifest.Manifest.from_entries(len(entries) * 64 * KIB, 64 * KIB, entries, bytes(32))
    assert len(built.encode()) == manifest.HEADER_SIZE + 3 * 9 + 32


def test_empty_image() -> None:
    built = manifest.Manifest.from_entries(0, 4 * MIB, [], bytes(32))
    assert len(built.encode()) == manifest.HEADER_SIZE
    assert list(built.entries()) == []
    assert manifest.decode(built.encode()) == built


def test_large_manifest_builds_and_streams() -> None:
    # A 1 TiB disk in 4 MiB chunks: 256 Ki entries, a few MiB encoded.
    count = 256 * 1024
    ids = [an_id(i % 200) for i in range(count)]
    started = time.monotonic()
    builder = manifest.ManifestBuilder(count * 4 * MIB, 4 * MIB)
    for i, chunk_id in enumerate(ids):
        if i % 10 == 0:
            builder.add_holes()
        else:
            builder.add_chunk(chunk_id)
    built = builder.finish(bytes(32))
    decoded = manifest.decode(built.encode())
    streamed = sum(1 for _ in manifest.iter_entries(decoded.encode()))
    assert streamed == count
    assert decoded.hole_count == count // 10 + 1
    assert time.monotonic() - started < 30


def _header(
    magic: bytes = manifest.MAGIC,
    version: int = manifest.MANIFEST_V1,
    logical_size: int = 3 * 64 * KIB,
    chunk_size: int = 64 * KIB,
    entry_count: int = 3,
) -> bytes:
    return struct.pack(
        "<8sBQIQ32s", magic, version, logical_size, chunk_size, entry_count, bytes(32)
    )


def _chunks(*ids: int) -> bytes:
    return struct.pack("<BQ", 1, len(ids)) + b"".join(bytes([i]) * 32 for i in ids)


def _holes(count: int) -> bytes:
    return struct.pack("<BQ", 2, count)


def test_hand_made_encoding_decodes() -> None:
    decoded = manifest.decode(_header() + _chunks(1) + _holes(1) + _chunks(2))
    assert list(decoded.entries()) == ["01" * 32, None, "02" * 32]


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        (b"", "too short"),
        (_header()[:-1], "too short"),
        (_header(magic=b"CSBSCHNK") + _holes(3), "bad magic"),
        (_header(version=4) + _holes(3), "unsupported manifest version"),
        (_header(version=3) + _holes(3), "v3"),
        (_header(chunk_size=3 * 64 * KIB) + _holes(3), "power of two"),
        (_header(chunk_size=32 * KIB, logical_size=96 * KIB) + _holes(3), "power of two"),
        (_header(entry_count=4) + _holes(4), "expected 3"),
        (_header() + _holes(2), "runs hold 2 entries"),
        (_header() + _holes(4), "more entries"),
        (_header() + _holes(1) + _holes(2), "non-canonical"),
        (_header() + _chunks(1) + _chunks(2, 3), "non-canonical"),
        (_header() + _holes(0) + _holes(3), "non-canonical"),
        (_header() + struct.pack("<BQ", 3, 3), "unknown run kind"),
        (_header() + _holes(3) + b"\x02", "truncated run header"),
        (_header() + _chunks(1, 2, 3)[:-1], "truncated chunk run"),
        (_header() + _holes(3) + _holes(1), "non-canonical"),
        (_header() + _holes(3) + _chunks(1), "more entries"),
    ],
)
def test_malformed_encodings_are_refused(encoded: bytes, message: str) -> None:
    with pytest.raises(errors.InvalidManifest, match=message):
        manifest.decode(encoded)
    with pytest.raises(errors.InvalidManifest):
        list(manifest.iter_entries(encoded))


def test_builder_checks_its_input() -> None:
    with pytest.raises(ValueError):
        manifest.ManifestBuilder(100, 1000)
    with pytest.raises(ValueError):
        manifest.ManifestBuilder(-1, 64 * KIB)
    builder = manifest.ManifestBuilder(2 * 64 * KIB, 64 * KIB)
    for bad in ("", "ab", "g" * 64, "AB" * 32 + "0", "0" * 66):
        with pytest.raises(ValueError):
            builder.add_chunk(bad)
    with pytest.raises(ValueError):
        builder.add_holes(-1)
    builder.add_holes(0)
    builder.add(an_id(1))
    with pytest.raises(ValueError, match="1 entries added"):
        builder.finish(bytes(32))
    with pytest.raises(ValueError, match="more than 2"):
        builder.add_holes(2)
    builder.add(None)
    with pytest.raises(ValueError, match="more than 2"):
        builder.add(None)
    with pytest.raises(ValueError, match="digest"):
        builder.finish(bytes(31))
    assert list(builder.finish(bytes(32)).entries()) == [an_id(1), None]


def test_upper_case_ids_are_normalised() -> None:
    built = manifest.Manifest.from_entries(64 * KIB, 64 * KIB, ["AB" * 32], bytes(32))
    assert list(built.entries()) == ["ab" * 32]


# --- ImageDigest ----------------------------------------------------------------------


@given(st.lists(st.one_of(st.binary(max_size=3000), st.integers(0, 3 * MIB + 7)), max_size=8))
@settings(deadline=None, max_examples=50)
def test_image_digest_is_blake3_of_the_image(pieces: list[bytes | int]) -> None:
    digest = manifest.ImageDigest()
    reference = blake3.blake3()
    for piece in pieces:
        if isinstance(piece, int):
            digest.update_zeros(piece)
            reference.update(bytes(piece))
        else:
            digest.update(piece)
            reference.update(piece)
    assert digest.digest() == reference.digest()
    assert digest.length == sum(p if isinstance(p, int) else len(p) for p in pieces)


def test_image_digest_of_a_long_hole_without_a_big_buffer() -> None:
    digest = manifest.ImageDigest(max_threads=blake3.blake3.AUTO)
    digest.update(b"start")
    digest.update_zeros(64 * MIB + 1)
    digest.update(b"end")
    reference = blake3.blake3(b"start")
    for _ in range(64):
        reference.update(bytes(MIB))
    reference.update(b"\0end")
    assert digest.digest() == reference.digest()
    with pytest.raises(ValueError):
        digest.update_zeros(-1)


def _table_reference(logical_size: int, chunk_size: int, entries: list[str | None]) -> bytes:
    hasher = blake3.blake3(struct.pack("<16sQI", b"csbs chunk table", logical_size, chunk_size))
    for entry in entries:
        hasher.update(bytes(32) if entry is None else bytes.fromhex(entry))
    return hasher.digest()


@given(manifests(), st.data())
@settings(max_examples=100)
def test_table_digest_hashes_the_geometry_and_each_entry(
    case: tuple[int, int, list[keys.ChunkId | None], bytes], data: st.DataObject
) -> None:
    logical_size, chunk_size, entries, _ = case
    digest = manifest.TableDigest(logical_size, chunk_size)
    i = 0
    while i < len(entries):  # holes fed in runs of any length
        if entries[i] is None:
            run = data.draw(st.integers(1, len(entries) - i))
            run = next((k for k in range(run) if entries[i + k] is not None), run)
            digest.update_holes(run)
            i += run
        else:
            digest.update_chunk(str(entries[i]))
            i += 1
    assert digest.digest() == _table_reference(logical_size, chunk_size, entries)


def test_table_digest_tells_order_holes_and_geometry_apart() -> None:
    def of(entries: list[str | None], size: int = 3 * MIB, chunk: int = MIB) -> bytes:
        digest = manifest.TableDigest(size, chunk)
        for entry in entries:
            if entry is None:
                digest.add_holes(1, chunk)
            else:
                digest.add_chunk(entry, b"")
        return digest.digest()

    base = of([an_id(1), an_id(2), None])
    assert base == _table_reference(3 * MIB, MIB, [an_id(1), an_id(2), None])
    assert base != of([an_id(2), an_id(1), None])  # moved
    assert base != of([an_id(1), an_id(1), None])  # repeated
    assert base != of([an_id(1), None, None])  # lost
    assert base != of([an_id(1), an_id(2), None], size=3 * MIB - 1)
    assert base != of([an_id(1), an_id(2), None], chunk=2 * MIB, size=6 * MIB)
    holes = manifest.TableDigest(64 * 1024 * MIB, MIB)  # 64 Ki holes: 2 MiB of zeros fed
    holes.update_holes(64 * 1024)
    assert holes.digest() == _table_reference(64 * 1024 * MIB, MIB, [None] * 64 * 1024)
    with pytest.raises(ValueError):
        holes.update_holes(-1)


# --- Sealed manifests -----------------------------------------------------------------


def test_sealed_manifest_round_trip() -> None:
    project_keys = keys.ProjectKeys(os.urandom(32))
    codec = envelope.Codec()
    built = manifest.Manifest.from_entries(
        5 * MIB, 1 * MIB, [an_id(1), None, an_id(2), an_id(1), None], bytes(32)
    )
    manifest_id, blob = manifest.seal_manifest(project_keys, built, codec)
    assert manifest_id == project_keys.chunk_id(built.encode())
    assert manifest.open_manifest(project_keys, blob, codec) == built
    assert manifest.open_manifest(project_keys, blob, codec, manifest_id) == built
    other = manifest.Manifest.from_entries(0, 1 * MIB, [], bytes(32))
    other_id, _ = manifest.seal_manifest(project_keys, other, codec)
    with pytest.raises(errors.IntegrityError):
        manifest.open_manifest(project_keys, blob, codec, other_id)
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(errors.IntegrityError):
        manifest.open_manifest(project_keys, bytes(tampered), codec)
    with pytest.raises(errors.IntegrityError):
        manifest.open_manifest(keys.ProjectKeys(os.urandom(32)), blob, codec)


def test_a_chunk_is_not_a_manifest() -> None:
    project_keys = keys.ProjectKeys(os.urandom(32))
    codec = envelope.Codec()
    data = b"plain chunk data, not a manifest" * 3
    blob = codec.seal(project_keys, project_keys.chunk_id(data), data)
    with pytest.raises(errors.InvalidManifest):
        manifest.open_manifest(project_keys, blob, codec)
