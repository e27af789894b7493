"""Chunk envelopes: round trip, compression choice, tamper detection, per-thread codecs."""

from __future__ import annotations

import concurrent.futures
import os
import random
import threading
import time

import pytest
import zstandard

from csbs.repository import envelope, errors, keys


@pytest.fixture(scope="module")
def project_keys() -> keys.ProjectKeys:
    return keys.ProjectKeys(bytes(range(32)))


@pytest.fixture
def codec() -> envelope.Codec:
    return envelope.Codec(level=1)


def half_compressible(size: int, seed: int = 0) -> bytes:
    """Random bytes for one half, zeros for the other: zstd halves it."""
    return random.Random(seed).randbytes(size // 2) + bytes(size - size // 2)


@pytest.mark.parametrize(
    "plaintext",
    [
        b"",
        b"x",
        b"hello world" * 1000,
        os.urandom(100_000),
        bytes(64 * 1024),
        os.urandom(4 * 1024 * 1024),
        half_compressible(8 * 1024 * 1024),
    ],
    ids=["empty", "one-byte", "text", "random", "zeros", "random-4MiB", "mixed-8MiB"],
)
def test_round_trip(
    project_keys: keys.ProjectKeys, codec: envelope.Codec, plaintext: bytes
) -> None:
    chunk_id = project_keys.chunk_id(plaintext)
    blob = codec.seal(project_keys, chunk_id, plaintext)
    assert blob.startswith(envelope.MAGIC + bytes([envelope.ENVELOPE_V1]))
    assert envelope.chunk_id_of(blob) == chunk_id
    assert codec.open(project_keys, chunk_id, blob) == plaintext


def test_compressible_data_is_stored_compressed(
    project_keys: keys.ProjectKeys, codec: envelope.Codec
) -> None:
    plaintext = b"abcd" * 100_000
    blob = codec.seal(project_keys, project_keys.chunk_id(plaintext), plaintext)
    assert blob[9] == envelope.COMPRESSION_ZSTD
    assert len(blob) < len(plaintext) // 10


def test_incompressible_data_is_stored_uncompressed(
    project_keys: keys.ProjectKeys, codec: envelope.Codec
) -> None:
    plaintext = os.urandom(200_000)
    blob = codec.seal(project_keys, project_keys.chunk_id(plaintext), plaintext)
    assert blob[9] == envelope.COMPRESSION_NONE
    assert len(blob) == len(plaintext) + envelope.OVERHEAD


def test_no_compressor_means_no_compression(project_keys: keys.ProjectKeys) -> None:
    plaintext = bytes(10_000)
    chunk_id = project_keys.chunk_id(plaintext)
    blob = envelope.seal(project_keys, chunk_id, plaintext, None)
    assert blob[9] == envelope.COMPRESSION_NONE
    assert envelope.open_(project_keys, chunk_id, blob, zstandard.ZstdDecompressor()) == plaintext


@pytest.mark.parametrize("plaintext", [b"", b"x" * 5000, os.urandom(100_000)])
def test_seal_into_writes_the_envelope_at_the_start_of_a_buffer(
    project_keys: keys.ProjectKeys, codec: envelope.Codec, plaintext: bytes
) -> None:
    chunk_id = project_keys.chunk_id(plaintext)
    out = bytearray(b"\xee" * (len(plaintext) + envelope.OVERHEAD + 100))
    length = codec.seal_into(project_keys, chunk_id, plaintext, out)
    sealed = bytes(out[:length])
    assert codec.open(project_keys, chunk_id, sealed) == plaintext
    assert out[length:] == b"\xee" * (len(out) - length)  # nothing written past the end
    compressed = len(plaintext) == 5000
    assert (sealed[9] == envelope.COMPRESSION_ZSTD) is compressed
    assert length < len(plaintext) if compressed else length == len(plaintext) + 70


def test_seal_into_refuses_a_buffer_that_may_be_too_small(
    project_keys: keys.ProjectKeys, codec: envelope.Codec
) -> None:
    """Even a plaintext that compresses well needs room for its uncompressed envelope."""
    plaintext = bytes(10_000)
    chunk_id = project_keys.chunk_id(plaintext)
    with pytest.raises(ValueError):
        codec.seal_into(project_keys, chunk_id, plaintext, bytearray(10_000 + 69))


def test_sealing_is_randomised(project_keys: keys.ProjectKeys, codec: envelope.Codec) -> None:
    plaintext = b"same data"
    chunk_id = project_keys.chunk_id(plaintext)
    first = codec.seal(project_keys, chunk_id, plaintext)
    second = codec.seal(project_keys, chunk_id, plaintext)
    assert first[: envelope.HEADER_SIZE] == second[: envelope.HEADER_SIZE]
    assert first != second, "a fresh nonce per envelope"


@pytest.mark.parametrize("compressible", [True, False])
def test_flipping_any_byte_is_detected(
    project_keys: keys.ProjectKeys, codec: envelope.Codec, compressible: bool
) -> None:
    plaintext = b"z" * 300 if compressible else os.urandom(40)
    chunk_id = project_keys.chunk_id(plaintext)
    blob = codec.seal(project_keys, chunk_id, plaintext)
    for position in range(len(blob)):
        for flip in (0x01, 0x80, 0xFF):
            tampered = bytearray(blob)
            tampered[position] ^= flip
            with pytest.raises(errors.IntegrityError) as info:
                codec.open(project_keys, chunk_id, bytes(tampered))
            assert info.value.chunk_id == chunk_id
            assert chunk_id in str(info.value)


def test_truncated_or_extended_envelope_is_detected(
    project_keys: keys.ProjectKeys, codec: envelope.Codec
) -> None:
    plaintext = b"some chunk data" * 10
    chunk_id = project_keys.chunk_id(plaintext)
    blob = codec.seal(project_keys, chunk_id, plaintext)
    for length in (0, 5, envelope.HEADER_SIZE, envelope.OVERHEAD - 1, len(blob) - 1):
        with pytest.raises(errors.IntegrityError, match=chunk_id):
            codec.open(project_keys, chunk_id, blob[:length])
    with pytest.raises(errors.IntegrityError, match=chunk_id):
        codec.open(project_keys, chunk_id, blob + b"\x00")


def test_wrong_key_is_an_integrity_error(codec: envelope.Codec) -> None:
    mine, theirs = keys.ProjectKeys(bytes(32)), keys.ProjectKeys(bytes([1]) * 32)
    plaintext = b"tenant data"
    chunk_id = mine.chunk_id(plaintext)
    blob = codec.seal(mine, chunk_id, plaintext)
    with pytest.raises(errors.IntegrityError, match="authentication failed") as info:
        codec.open(theirs, chunk_id, blob)
    assert info.value.chunk_id == chunk_id


def test_another_chunks_envelope_is_refused(
    project_keys: keys.ProjectKeys, codec: envelope.Codec
) -> None:
    a, b = b"chunk a", b"chunk b"
    blob_b = codec.seal(project_keys, project_keys.chunk_id(b), b)
    id_a = project_keys.chunk_id(a)
    with pytest.raises(errors.IntegrityError, match="another chunk id") as info:
        codec.open(project_keys, id_a, blob_b)
    assert info.value.chunk_id == id_a


def test_plaintext_not_matching_its_id_is_refused(
    project_keys: keys.ProjectKeys, codec: envelope.Codec
) -> None:
    # A buggy writer that sealed data under the wrong id: authentic, but not that chunk.
    wrong_id = project_keys.chunk_id(b"something else")
    blob = codec.seal(project_keys, wrong_id, b"the actual data")
    with pytest.raises(errors.IntegrityError, match="does not match its id"):
        codec.open(project_keys, wrong_id, blob)


def test_decompressed_size_is_bounded(
    project_keys: keys.ProjectKeys, codec: envelope.Codec
) -> None:
    plaintext = bytes(1024 * 1024)
    chunk_id = project_keys.chunk_id(plaintext)
    blob = codec.seal(project_keys, chunk_id, plaintext)
    assert blob[9] == envelope.COMPRESSION_ZSTD
    with pytest.raises(errors.IntegrityError, match="larger than"):
        codec.open(project_keys, chunk_id, blob, max_size=1024 * 1024 - 1)
    assert codec.open(project_keys, chunk_id, blob, max_size=1024 * 1024) == plaintext
    noise = os.urandom(5000)
    noise_id = project_keys.chunk_id(noise)
    raw = codec.seal(project_keys, noise_id, noise)
    assert raw[9] == envelope.COMPRESSION_NONE
    with pytest.raises(errors.IntegrityError, match="larger than"):
        codec.open(project_keys, noise_id, raw, max_size=4999)


def test_frame_without_content_size_is_refused(project_keys: keys.ProjectKeys) -> None:
    plaintext = bytes(100_000)
    chunk_id = project_keys.chunk_id(plaintext)
    compressor = zstandard.ZstdCompressor(write_content_size=False)
    blob = envelope.seal(project_keys, chunk_id, plaintext, compressor)
    with pytest.raises(errors.IntegrityError, match="content size"):
        envelope.open_(project_keys, chunk_id, blob, zstandard.ZstdDecompressor())


def test_malformed_chunk_ids_are_caller_errors(
    project_keys: keys.ProjectKeys, codec: envelope.Codec
) -> None:
    for bad in ("", "ab", "g" * 64, "A" * 63):
        with pytest.raises(ValueError):
            codec.seal(project_keys, bad, b"x")
        with pytest.raises(ValueError):
            codec.open(project_keys, bad, b"x" * 100)


def test_chunk_id_of_refuses_non_envelopes() -> None:
    with pytest.raises(errors.RepositoryError):
        envelope.chunk_id_of(b"not an envelope at all, not even close to one")


def test_integrity_error_is_not_a_not_found_error() -> None:
    assert not issubclass(errors.IntegrityError, errors.ChunkNotFound)
    assert not issubclass(errors.IntegrityError, LookupError)
    assert issubclass(errors.IntegrityError, errors.RepositoryError)


def test_codec_gives_each_thread_its_own_decompression_context(codec: envelope.Codec) -> None:
    assert codec.decompressor is codec.decompressor
    seen: list[object] = []
    barrier = threading.Barrier(4)

    def grab() -> None:
        barrier.wait()
        seen.append(codec.decompressor)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(d) for d in seen} | {id(codec.decompressor)}) == 5


def test_codec_lends_a_compression_context_to_one_seal_at_a_time(
    codec: envelope.Codec,
) -> None:
    """Seals at once get distinct contexts; a context given back is lent again, so there
    are only as many as seals ran at once, however many threads sealed."""
    with codec.compressor() as first, codec.compressor() as second:
        assert first is not second
    with codec.compressor() as again:
        assert again in (first, second)
    lent: list[object] = []
    lock = threading.Lock()
    inside = threading.Semaphore(2)  # at most two seals at once, like a pipeline's sealers

    def seal_once() -> None:
        with inside, codec.compressor() as compressor:
            with lock:
                assert compressor not in lent, "lent to two seals at once"
                lent.append(compressor)
            time.sleep(0.01)
            with lock:
                lent.remove(compressor)

    threads = [threading.Thread(target=seal_once) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(codec._idle) == 2  # eight threads sealed, two contexts were ever made


def test_many_threads_hash_compress_encrypt_at_once(project_keys: keys.ProjectKeys) -> None:
    codec = envelope.Codec(level=3)
    inputs = [half_compressible(1024 * 1024 + i * 4099, seed=i + 1) for i in range(64)]
    barrier = threading.Barrier(8)

    def pipeline(worker: int) -> list[tuple[str, bytes, int]]:
        barrier.wait()  # maximise overlap: every thread starts together
        results: list[tuple[str, bytes, int]] = []
        for plaintext in inputs[worker::8]:
            chunk_id = project_keys.chunk_id(plaintext)
            results.append((chunk_id, codec.seal(project_keys, chunk_id, plaintext), worker))
        return results

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        sealed = [item for batch in pool.map(pipeline, range(8)) for item in batch]
        # Open on other threads than the sealing ones, all at once as well.
        opened = list(pool.map(lambda item: codec.open(project_keys, item[0], item[1]), sealed))
    by_id: dict[str, bytes] = {project_keys.chunk_id(p): p for p in inputs}
    assert len(sealed) == len(inputs)
    for (chunk_id, blob, _), plaintext in zip(sealed, opened, strict=True):
        assert blob[9] == envelope.COMPRESSION_ZSTD
        assert plaintext == by_id[chunk_id]


class _Counting:
    """A zstd compressor that counts the bytes it was given."""

    def __init__(self) -> None:
        self._zstd = zstandard.ZstdCompressor(level=1, write_content_size=True)
        self.seen = 0

    def compress(self, data: bytes | memoryview) -> bytes:
        self.seen += len(data)
        return self._zstd.compress(data)


def test_an_incompressible_chunk_is_probed_not_compressed(
    project_keys: keys.ProjectKeys,
) -> None:
    plaintext = random.Random(1).randbytes(4 * 1024 * 1024)
    compressor = _Counting()
    blob = envelope.seal(project_keys, project_keys.chunk_id(plaintext), plaintext, compressor)
    assert blob[9] == envelope.COMPRESSION_NONE
    assert compressor.seen <= 64 * 1024, "only the samples were compressed"
    opened = envelope.open_(
        project_keys, project_keys.chunk_id(plaintext), blob, zstandard.ZstdDecompressor()
    )
    assert opened == plaintext


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_chunk_compressible_in_any_sampled_part_is_compressed(
    project_keys: keys.ProjectKeys, where: str
) -> None:
    # A seventh of the chunk: the longest a compressible part can be and still be missed.
    size = 4 * 1024 * 1024
    text = (b"a log line that compresses well\n" * (size // 7 // 32 + 1))[: size // 7]
    noise = bytearray(random.Random(2).randbytes(size))
    at = {"start": 0, "middle": size // 2 - len(text) // 2, "end": size - len(text)}[where]
    noise[at : at + len(text)] = text
    plaintext = bytes(noise)
    compressor = _Counting()
    blob = envelope.seal(project_keys, project_keys.chunk_id(plaintext), plaintext, compressor)
    assert blob[9] == envelope.COMPRESSION_ZSTD
    assert compressor.seen > size, "the whole chunk was compressed after a sample said so"


def test_a_small_plaintext_is_compressed_without_a_probe(
    project_keys: keys.ProjectKeys,
) -> None:
    plaintext = os.urandom(100_000)
    compressor = _Counting()
    envelope.seal(project_keys, project_keys.chunk_id(plaintext), plaintext, compressor)
    assert compressor.seen == len(plaintext)
