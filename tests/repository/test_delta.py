"""Sub-chunk increments: a chunk that changed in part is stored as its changed sub-blocks
over the previous version, every backup restores bit-exact whatever else is deleted, the
audit counts what a delta stands on and names every backup a bad base breaks."""

from __future__ import annotations

import pathlib
import random
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csbs.blobstore import BlobStore
from csbs.domain.clock import FrozenClock
from csbs.repository import Repository, delta, keys, layout, manifest
from tests.repository.conftest import SMALL_CHUNK, RepoFactory

SUB = delta.sub_block_size(SMALL_CHUNK, 0)  # 4 KiB sub-blocks of 64 KiB chunks


def _restores(
    repo: Repository, project: str, backup_id: str, expected: bytes, tmp: pathlib.Path
) -> None:
    out = tmp / f"{backup_id}.out"
    repo.restore(project, backup_id, "vda", out)
    assert out.read_bytes() == expected, f"backup {backup_id} does not restore bit-exact"


def _clean(repo: Repository, project: str, *, read_data: bool = False) -> None:
    report = repo.check(project, read_data=read_data)
    assert report.ok, report
    assert not report.affected


def test_changed_pieces_from_digests_and_regions() -> None:
    project_keys = keys.ProjectKeys(bytes(32))
    old = bytes(range(256)) * 256  # 64 KiB
    new = bytearray(old)
    new[5 * SUB + 10] ^= 1
    new[6 * SUB] ^= 1
    new[15 * SUB + 1] ^= 1
    a = delta.sub_digests(project_keys, old, SUB)
    b = delta.sub_digests(project_keys, bytes(new), SUB)
    assert delta.changed_pieces(len(new), SUB, b, a) == [(5 * SUB, 2 * SUB), (15 * SUB, SUB)]
    # Regions only (changed-block tracking, no digests kept): exactly the sub-blocks touched.
    assert delta.changed_pieces(len(new), SUB, b, None, [(SUB - 1, 2)]) == [(0, 2 * SUB)]
    assert delta.changed_pieces(len(new), SUB, b, None) is None
    assert delta.changed_pieces(len(new), SUB, b, bytes(len(a))) is None  # zeros: unknown
    assert delta.changed_pieces(len(new), SUB, b, bytes(len(a)), [(0, 1)]) == [(0, SUB)]
    # A chunk grown past the old one's end: the new sub-blocks are changed.
    assert delta.changed_pieces(len(new), SUB, b, a[: 4 * delta.SUB_DIGEST_SIZE]) == [
        (4 * SUB, len(new) - 4 * SUB)
    ]
    payload = delta.encode("ab" * 32, 7, bytes(new), [(5 * SUB, 2 * SUB), (15 * SUB, SUB)])
    assert delta.base_of(payload) == ("ab" * 32, 7)
    assert delta.apply(old, payload) == bytes(new)
    assert delta.apply(old[:100], delta.encode("ab" * 32, 7, b"x" * 50, [(10, 5)])) == (
        old[:10] + b"x" * 5 + old[15:50]
    )


def test_a_v3_manifest_keeps_sub_block_digests() -> None:
    size = 2 * SMALL_CHUNK + 5000
    builder = manifest.ManifestBuilder(size, SMALL_CHUNK, SUB)
    builder.add_chunk("01" * 32, b"\x01" * 16 * 16)
    builder.add_holes(1)
    builder.add_chunk("02" * 32, b"\x02" * 16 * 2)  # 5000 bytes: two sub-blocks
    built = builder.finish(bytes(32))
    decoded = manifest.decode(built.encode())
    assert decoded.version == manifest.MANIFEST_V3 and decoded.sub_block == SUB
    got = [(e, None if d is None else bytes(d)) for e, d in decoded.entries_with_digests()]
    assert got == [("01" * 32, b"\x01" * 256), (None, None), ("02" * 32, b"\x02" * 32)]
    assert list(decoded.chunk_ids()) == ["01" * 32, "02" * 32]
    for cut in (1, 16, 100):
        with pytest.raises(manifest.errors.InvalidManifest):
            manifest.decode(built.encode()[:-cut])
    with pytest.raises(manifest.errors.InvalidManifest):
        manifest.decode(built.encode() + b"\0")


def test_scattered_writes_store_only_the_changed_sub_blocks(
    make_repo: RepoFactory, local_store: BlobStore, tmp_path: pathlib.Path, clock: FrozenClock
) -> None:
    repo = make_repo(local_store)
    rng = random.Random(1)
    image = tmp_path / "disk.img"
    first = rng.randbytes(32 * SMALL_CHUNK)
    image.write_bytes(first)
    repo.backup_writer("p1", "b1").write_disk("vda", image)
    repo.seal_backup("p1", "b1")
    second = bytearray(first)
    for index in range(0, 32, 2):  # one 4 KiB block in every other chunk
        at = index * SMALL_CHUNK + rng.randrange(0, SMALL_CHUNK - 4096)
        second[at : at + 4096] = rng.randbytes(4096)
    image.write_bytes(second)
    stored_before = repo.usage("p1").stored_bytes
    result = repo.backup_writer("p1", "b2").write_disk("vda", image, previous="b1")
    repo.seal_backup("p1", "b2")
    assert result.progress.delta_chunks == 16
    changed = 16 * 4096
    # A 4 KiB write touches at most two 4 KiB sub-blocks.
    assert result.progress.new_bytes <= 2 * changed
    assert repo.usage("p1").stored_bytes - stored_before <= 2 * changed + 16 * 200
    _restores(repo, "p1", "b2", bytes(second), tmp_path)
    _clean(repo, "p1", read_data=True)
    # Deleting the backup the deltas stand on breaks nothing: their rows hold the bases.
    repo.delete_backup("p1", "b1")
    clock.advance(3600)
    repo.sweep("p1")
    _restores(repo, "p1", "b2", bytes(second), tmp_path)
    assert repo.verify("p1", "b2")
    _clean(repo, "p1", read_data=True)
    # Once nothing needs them, the deltas and then their bases go in one sweep.
    repo.delete_backup("p1", "b2")
    clock.advance(3600)
    repo.sweep("p1")
    assert repo.usage("p1").stored_bytes == 0
    assert not list(local_store.list(layout.chunks_prefix("p1")))
    _clean(repo, "p1")


def test_chains_are_bounded_then_rebased(
    make_repo: RepoFactory, local_store: BlobStore, tmp_path: pathlib.Path
) -> None:
    repo = make_repo(local_store)
    rng = random.Random(2)
    image = tmp_path / "disk.img"
    data = bytearray(rng.randbytes(4 * SMALL_CHUNK))
    image.write_bytes(data)
    repo.backup_writer("p1", "b0").write_disk("vda", image)
    repo.seal_backup("p1", "b0")
    counts = []
    for n in range(1, delta.MAX_DEPTH + 3):
        at = rng.randrange(0, SMALL_CHUNK - 100)
        data[at : at + 100] = rng.randbytes(100)  # chunk 0 changes a little each time
        image.write_bytes(data)
        result = repo.backup_writer("p1", f"b{n}").write_disk("vda", image, previous=f"b{n - 1}")
        repo.seal_backup("p1", f"b{n}")
        counts.append(result.progress.delta_chunks)
        _restores(repo, "p1", f"b{n}", bytes(data), tmp_path)
    # Deltas until the chain is MAX_DEPTH long, then the chunk is stored whole again.
    assert counts[: delta.MAX_DEPTH] == [1] * delta.MAX_DEPTH
    assert counts[delta.MAX_DEPTH] == 0
    assert counts[delta.MAX_DEPTH + 1] == 1
    depths = {r.chunk_id: int(r.depth) for r in repo.index.chunk_rows("p1")}
    assert max(depths.values()) == delta.MAX_DEPTH
    _clean(repo, "p1", read_data=True)


def test_a_corrupt_base_is_reported_for_every_backup_standing_on_it(
    make_repo: RepoFactory, local_store: BlobStore, tmp_path: pathlib.Path
) -> None:
    repo = make_repo(local_store)
    rng = random.Random(3)
    image = tmp_path / "disk.img"
    data = bytearray(rng.randbytes(3 * SMALL_CHUNK))
    image.write_bytes(data)
    repo.backup_writer("p1", "b0").write_disk("vda", image)
    repo.seal_backup("p1", "b0")
    base = repo.reader("p1").load_manifest("b0", "vda")
    victim = next(iter(base.chunk_ids()))
    for n in (1, 2):
        data[100 * n : 100 * n + 10] = rng.randbytes(10)  # chunk 0 changes a little
        image.write_bytes(data)
        repo.backup_writer("p1", f"b{n}").write_disk("vda", image, previous=f"b{n - 1}")
        repo.seal_backup("p1", f"b{n}")
    unrelated = tmp_path / "other.img"
    unrelated.write_bytes(rng.randbytes(2 * SMALL_CHUNK))
    repo.backup_writer("p1", "other").write_disk("vda", unrelated)
    repo.seal_backup("p1", "other")
    name = next(n for n in local_store.list(layout.chunks_prefix("p1")) if victim in n)
    blob = bytearray(local_store.get(name))
    blob[-20] ^= 0xFF
    local_store.put(name, bytes(blob))

    report = repo.check("p1", read_data=True)
    assert len(report.corrupt) == 1 and victim in report.corrupt[0]
    affected = {line.split()[2].rstrip(":") for line in report.affected}
    assert affected == {"b0", "b1", "b2"}, report.affected
    assert all(victim in line for line in report.affected)
    for backup_id in ("b0", "b1", "b2"):
        with pytest.raises(manifest.errors.IntegrityError):
            repo.verify("p1", backup_id)
    repo.verify("p1", "other")
    # A base's blob gone: each dependent backup is named too, without reading data.
    local_store.delete(name)
    report = repo.check("p1")
    assert len(report.missing) == 1 and victim in report.missing[0]
    assert {line.split()[2].rstrip(":") for line in report.affected} == {"b0", "b1", "b2"}


# -- property: random write patterns, random deletion orders -------------------------------

_CHUNKS = 6


@st.composite
def _changes(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    """One incremental's writes: (kind, a, b) with kind scattered/run/chunk/resize."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["scattered", "run", "chunk", "resize"]))
        if kind == "scattered":
            out.append((kind, draw(st.integers(0, 2**31)), draw(st.integers(1, 12))))
        elif kind == "run":
            out.append(
                (
                    kind,
                    draw(st.integers(0, (_CHUNKS + 2) * SMALL_CHUNK)),
                    draw(st.integers(1, 3 * SMALL_CHUNK)),
                )
            )
        elif kind == "chunk":
            out.append((kind, draw(st.integers(0, _CHUNKS + 1)), 0))
        else:
            out.append((kind, draw(st.integers(SMALL_CHUNK // 2, (_CHUNKS + 3) * SMALL_CHUNK)), 0))
    return out


def _apply(data: bytearray, changes: list[tuple[str, int, int]], rng: random.Random) -> bytearray:
    for kind, a, b in changes:
        if kind == "scattered":
            for _ in range(b):
                if len(data) > 4096:
                    at = rng.randrange(0, len(data) - 4096) // 4096 * 4096
                    data[at : at + 4096] = rng.randbytes(4096)
        elif kind == "run":
            at = a % max(1, len(data))
            data[at : at + b] = rng.randbytes(min(b, len(data) - at))
        elif kind == "chunk":
            at = (a * SMALL_CHUNK) % max(1, len(data))
            data[at : at + SMALL_CHUNK] = rng.randbytes(min(SMALL_CHUNK, len(data) - at))
        elif a < len(data):  # shrunk
            del data[a:]
        else:  # grown: new bytes partly data, partly zeros
            grown = a - len(data)
            data += rng.randbytes(grown // 2) + bytes(grown - grown // 2)
    return data


@given(
    history=st.lists(_changes(), min_size=1, max_size=4),
    deletions=st.permutations(range(5)),
    keep=st.integers(0, 4),
    seed=st.integers(0, 2**16),
)
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_backup_restores_after_any_deletions(
    make_repo: RepoFactory,
    local_store: BlobStore,
    tmp_path: pathlib.Path,
    clock: FrozenClock,
    history: list[list[tuple[str, int, int]]],
    deletions: list[int],
    keep: int,
    seed: int,
) -> None:
    repo = make_repo(local_store, batch_chunks=3)
    project = f"p{uuid.uuid4().hex[:12]}"
    rng = random.Random(seed)
    image = tmp_path / f"{project}.img"
    data = bytearray(rng.randbytes(_CHUNKS * SMALL_CHUNK - 1000))
    images: dict[str, bytes] = {}
    previous = None
    for n, changes in enumerate([[], *history]):
        data = _apply(data, changes, rng)
        image.write_bytes(data)
        backup_id = f"b{n}"
        repo.backup_writer(project, backup_id).write_disk("vda", image, previous=previous)
        repo.seal_backup(project, backup_id)
        images[backup_id] = bytes(data)
        previous = backup_id
    _clean(repo, project)
    # Delete all but `keep` of them in a random order, sweeping after each deletion.
    order = [f"b{i}" for i in deletions if f"b{i}" in images]
    for backup_id in order[: max(0, len(order) - keep)]:
        repo.delete_backup(project, backup_id)
        del images[backup_id]
        clock.advance(3600)
        repo.sweep(project)
        for left, expected in images.items():
            _restores(repo, project, left, expected, tmp_path)
        _clean(repo, project)
    _clean(repo, project, read_data=True)
    # A random chunk corrupted: the audit names exactly the backups that no longer verify.
    names = sorted(local_store.list(layout.chunks_prefix(project)))
    if names:
        victim = rng.choice(names)
        original = local_store.get(victim)
        local_store.put(victim, original[:-1] + bytes([original[-1] ^ 1]))
        report = repo.check(project, read_data=True)
        assert len(report.corrupt) == 1
        named = {line.split()[2].rstrip(":") for line in report.affected}
        broken = set()
        for left in images:
            try:
                repo.verify(project, left)
            except manifest.errors.IntegrityError:
                broken.add(left)
        assert broken and named == broken, (report.affected, broken)
        local_store.put(victim, original)
    for left in list(images):
        repo.delete_backup(project, left)
    clock.advance(3600)
    repo.sweep(project)
    assert repo.usage(project).stored_bytes == 0
    assert not list(local_store.list(layout.chunks_prefix(project)))
    _clean(repo, project)


def test_regions_a_source_tracks_are_enough_without_digests(
    make_repo: RepoFactory,
    local_store: BlobStore,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Changed-block tracking: the source says which regions of a chunk changed
    (`chunking.Data.changed`), which is all the writer has when the previous manifest
    keeps no sub-block digests."""
    from csbs.repository import chunking, writer

    repo = make_repo(local_store)
    rng = random.Random(5)
    image = tmp_path / "disk.img"
    first = rng.randbytes(8 * SMALL_CHUNK)
    image.write_bytes(first)
    real_digests = delta.sub_digests
    with monkeypatch.context() as m:  # a first backup whose manifest keeps no digests
        m.setattr(writer.delta, "sub_digests", lambda k, d, s: bytes(-(-len(d) // s) * 16))
        repo.backup_writer("p1", "b1").write_disk("vda", image)
        repo.seal_backup("p1", "b1")
    assert delta.sub_digests is real_digests
    second = bytearray(first)
    writes = {i: i * SMALL_CHUNK + 3 * SUB + 100 for i in (1, 4, 6)}
    for at in writes.values():
        second[at : at + 200] = rng.randbytes(200)
    image.write_bytes(second)
    real_runs = chunking.iter_runs

    def tracked(source: int, chunk_size: int) -> object:
        for item in real_runs(source, chunk_size):
            if isinstance(item, chunking.Data):
                at = writes.get(item.index)
                regions = () if at is None else ((at - item.index * SMALL_CHUNK, 200),)
                item = chunking.Data(item.index, item.data, regions)
            yield item

    monkeypatch.setattr(writer.chunking, "iter_runs", tracked)
    result = repo.backup_writer("p1", "b2").write_disk("vda", image, previous="b1")
    repo.seal_backup("p1", "b2")
    assert result.progress.delta_chunks == 3
    assert result.progress.new_bytes == 3 * SUB  # one sub-block per region
    _restores(repo, "p1", "b2", bytes(second), tmp_path)
    _clean(repo, "p1", read_data=True)


def test_repair_removes_a_leaked_delta_and_never_a_base(
    make_repo: RepoFactory, local_store: BlobStore, tmp_path: pathlib.Path
) -> None:
    repo = make_repo(local_store)
    rng = random.Random(7)
    image = tmp_path / "disk.img"
    data = bytearray(rng.randbytes(4 * SMALL_CHUNK))
    image.write_bytes(data)
    repo.backup_writer("p1", "b0").write_disk("vda", image)
    repo.seal_backup("p1", "b0")
    data[10:20] = rng.randbytes(10)
    image.write_bytes(data)
    repo.backup_writer("p1", "b1").write_disk("vda", image, previous="b0")
    repo.seal_backup("p1", "b1")
    repo.delete_backup("p1", "b0")  # its chunk 0 is now only a base
    delta_row = next(r for r in repo.index.chunk_rows("p1") if r.base_id is not None)
    kept = layout.chunk_name("p1", delta_row.chunk_id, int(delta_row.generation))
    leaked = layout.chunk_name("p1", delta_row.chunk_id, int(delta_row.generation) + 999)
    local_store.put(leaked, local_store.get(kept))  # a delta blob no row names
    report = repo.check("p1")
    assert report.leaked == [leaked]
    assert repo.repair(report) == 1
    _clean(repo, "p1", read_data=True)
    _restores(repo, "p1", "b1", bytes(data), tmp_path)
