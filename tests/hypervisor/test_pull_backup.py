"""Live backups of a running libvirt domain, read over NBD, and restores onto VM disks.

Real libvirtd and QEMU: a tiny guest (tests/support/vmguest.py) writes a known pattern
into its disk without pause while it is backed up, so a restored image shows whether the
backup is one point in time of the guest's writes or a mixture.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from csbs.blobstore import LocalStore
from csbs.db.engine import create_engine
from csbs.domain import errors
from csbs.domain.clock import FrozenClock
from csbs.hypervisor import backup as vmb
from csbs.hypervisor.errors import HypervisorError
from csbs.hypervisor.restore import create_disk, disk_target, power_on, require_stopped
from csbs.repository import Repository, RepositorySettings, schema
from csbs.tasks.vmsource import ExportChunks
from tests.support import vmguest

MiB = 1024 * 1024
CHUNK = MiB  # 64 chunks on the 64 MiB disk; the guest writes into chunks 0 and 1
DISK = 64 * MiB
STATIC = (8 * MiB, 40 * MiB)  # written before the domain starts, never by the guest
PROJECT = "p1"


@pytest.fixture(scope="module")
def guest() -> vmguest.GuestImage:
    return vmguest.build_guest()


@pytest.fixture(scope="module")
def conn() -> Iterator[Any]:
    made = vmguest.connect()
    yield made
    made.close()  # type: ignore[attr-defined]


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = vmguest.run_dir()
    yield path
    for child in sorted(path.rglob("*"), reverse=True):
        if child.is_dir():
            child.rmdir()
        else:
            child.unlink()
    path.rmdir()


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    engine = create_engine(f"sqlite:///{tmp_path / 'repo.db'}")
    schema.metadata.create_all(engine)
    store = LocalStore(tmp_path / "blobs")
    yield Repository(
        engine,
        store,
        FrozenClock(),
        bytes(range(32)),
        RepositorySettings(chunk_size=CHUNK, threads=2, io_threads=4),  # type: ignore[call-arg]
    )
    store.close()
    engine.dispose()


def static_bytes() -> bytes:
    rng = random.Random(20)
    # Compressible but not dedupable: numbered text lines.
    text = b"".join(
        b"line %08d of the static region %s\n" % (i, rng.randbytes(8).hex().encode())
        for i in range((STATIC[1] - STATIC[0]) // 50 + 1)
    )
    return text[: STATIC[1] - STATIC[0]]


def make_disk(workdir: Path, fmt: str = "qcow2") -> Path:
    """A 64 MiB image holding the static region (and nothing where the guest writes)."""
    raw = workdir / "prep.raw"
    with open(raw, "wb") as f:
        f.truncate(DISK)
        f.seek(STATIC[0])
        f.write(static_bytes())
    path = workdir / f"disk.{fmt}"
    vmguest.qemu_img("convert", "-f", "raw", "-O", fmt, str(raw), str(path))
    raw.unlink()
    return path


def check_image(image: bytes) -> int:
    """Assert the restored image is the guest's view at one instant; return its last write."""
    assert len(image) == DISK
    last = vmguest.check_point_in_time(image)
    assert image[STATIC[0] : STATIC[1]] == static_bytes()
    _, end = vmguest.guest_region()
    # Between the guest's blocks, and outside both regions: zeros.
    for b in range(vmguest.BLOCKS):
        gap = image[b * vmguest.BLOCK_SPACING + vmguest.BLOCK : (b + 1) * vmguest.BLOCK_SPACING]
        assert gap.count(0) == len(gap)
    assert image[end : STATIC[0]].count(0) == STATIC[0] - end
    assert image[STATIC[1] :].count(0) == DISK - STATIC[1]
    return last


def run_backup(
    repo: Repository, job: Any, backup_id: str, previous: str | None = None
) -> tuple[Any, ExportChunks]:
    manifest = repo.reader(PROJECT).load_manifest(previous, "vda") if previous else None
    source = ExportChunks(job.export("vda"), manifest)
    result = repo.backup_writer(PROJECT, backup_id).write_disk("vda", source)
    repo.seal_backup(PROJECT, backup_id)
    return result, source


def slow_after_first_chunk(export: Any, console: Path, rounds: int) -> None:
    """Hold the reads of everything after the first chunk until the guest did `rounds`."""
    read_ranges = export.read_ranges

    def held(offset: int, length: int, ranges: list[tuple[int, int]]) -> bytes:
        if offset >= CHUNK:
            vmguest.wait_rounds(console, rounds)
        return read_ranges(offset, length, ranges)

    export.read_ranges = held


def restored(repo: Repository, backup_id: str, path: Path) -> bytes:
    repo.restore(PROJECT, backup_id, "vda", path)
    return path.read_bytes()


def no_leftovers(domain: Any, scratch: Path) -> None:
    with pytest.raises(libvirt.libvirtError):
        domain.backupGetXMLDesc(0)  # no backup job
    assert not scratch.exists() or not any(scratch.iterdir())


def test_live_full_then_incremental_backups_are_points_in_time(
    guest: vmguest.GuestImage, conn: Any, workdir: Path, repo: Repository
) -> None:
    scratch = workdir / "scratch"
    disk = make_disk(workdir)
    with vmguest.running_domain(conn, guest, [(disk, "qcow2")], workdir) as (domain, console):
        vmguest.wait_rounds(console, 1)

        # Full: the guest keeps writing while the export is read, and the read of its
        # second chunk waits until the guest has rewritten every block at least once: a
        # copy of the live disk would mix two rounds (sequence numbers 32 or more apart).
        with vmb.PullBackup(domain, scratch, "b1") as job:
            assert vmb.scratch_dir(scratch, "b1").is_dir()
            before = vmguest.rounds_done(console)
            slow_after_first_chunk(job.export("vda"), console, before + 2)
            first, source = run_backup(repo, job, "b1")
            assert vmguest.rounds_done(console) >= before + 2
            assert job.outcome.incremental is False
            # No guest agent in this guest: crash-consistent, and it says why.
            assert job.outcome.consistency == vmb.CRASH_CONSISTENT
            assert "not frozen" in (job.outcome.consistency_note or "")
        no_leftovers(domain, scratch)
        assert vmb.csbs_checkpoints(domain) == ["csbs-b1"]
        # Only what block status says holds data was read: the guest's 2 MiB (its 64 KiB
        # clusters) and the static region, not the 64 MiB disk.
        static = STATIC[1] - STATIC[0]
        assert static <= source.export.bytes_read <= static + 2 * MiB
        assert first.progress.read_bytes == source.export.bytes_read
        seq1 = check_image(restored(repo, "b1", workdir / "r1.raw"))
        vmguest.wait_rounds(console, vmguest.rounds_done(console) + 1)

        # Incremental: only the chunks the dirty bitmap marks are read.
        with vmb.PullBackup(domain, scratch, "b2", since="csbs-b1") as job:
            assert job.outcome.incremental is True, job.outcome.incremental_note
            second, source = run_backup(repo, job, "b2", previous="b1")
        no_leftovers(domain, scratch)
        assert source.export.bytes_read <= 2 * MiB  # chunks 0 and 1 only
        assert second.progress.read_bytes == source.export.bytes_read
        assert source.chunks_unchanged == DISK // CHUNK - 2
        assert second.progress.reused_bytes >= static  # the static chunks, from b1's manifest
        seq2 = check_image(restored(repo, "b2", workdir / "r2.raw"))
        assert seq2 > seq1

        # The checkpoint no backup needs is removed; the newest stays.
        assert vmb.prune_checkpoints(domain, {"csbs-b2"}) == ["csbs-b1"]
        assert vmb.csbs_checkpoints(domain) == ["csbs-b2"]

        # Chain breaks, each read in full and said why.
        # 1. the checkpoint is gone (a redefined domain, a lost host).
        vmb.delete_checkpoint(domain, "csbs-b2")
        with vmb.PullBackup(domain, scratch, "b3", since="csbs-b2") as job:
            assert job.outcome.incremental is False
            assert "gone" in (job.outcome.incremental_note or "")
            _, source = run_backup(repo, job, "b3")
        assert source.export.bytes_read >= static
        check_image(restored(repo, "b3", workdir / "r3.raw"))
        # 2. the checkpoint is recorded but its bitmap is gone from the image (a crash).
        _drop_bitmap(domain, "csbs-b3")
        with vmb.PullBackup(domain, scratch, "b4", since="csbs-b3") as job:
            assert job.outcome.incremental is False
            assert "unusable" in (job.outcome.incremental_note or "")
            _, source = run_backup(repo, job, "b4")
        no_leftovers(domain, scratch)
        assert source.export.bytes_read >= static
        check_image(restored(repo, "b4", workdir / "r4.raw"))
        assert "csbs-b4" in vmb.csbs_checkpoints(domain)


def _drop_bitmap(domain: Any, name: str) -> None:
    import json

    import libvirt_qemu

    blocks = json.loads(
        libvirt_qemu.qemuMonitorCommand(domain, '{"execute":"query-named-block-nodes"}', 0)
    )["return"]
    node = next(
        b["node-name"]
        for b in blocks
        if b.get("drv") == "qcow2"
        and any(m.get("name") == name for m in b.get("dirty-bitmaps", []))
    )
    command = {
        "execute": "block-dirty-bitmap-remove",
        "arguments": {"node": node, "name": name},
    }
    libvirt_qemu.qemuMonitorCommand(domain, json.dumps(command), 0)


def test_a_failed_backup_leaves_no_job_scratch_or_checkpoint(
    guest: vmguest.GuestImage, conn: Any, workdir: Path
) -> None:
    scratch = workdir / "scratch"
    disk = make_disk(workdir)
    with vmguest.running_domain(conn, guest, [(disk, "qcow2")], workdir) as (domain, console):
        vmguest.wait_rounds(console, 0)
        with pytest.raises(RuntimeError, match="boom"):
            with vmb.PullBackup(domain, scratch, "f1") as job:
                job.export("vda").read(0, MiB)
                raise RuntimeError("boom")
        no_leftovers(domain, scratch)
        assert vmb.csbs_checkpoints(domain) == []
        # A worker killed mid-backup leaves the job running and its scratch behind: the
        # retry cleans both up before it begins.
        job = vmb.PullBackup(domain, scratch, "f2")
        job.__enter__()  # and never exits, as after kill -9
        assert (vmb.scratch_dir(scratch, "f2") / "vda.scratch").exists()
        with vmb.PullBackup(domain, scratch, "f2") as again:
            assert again.export("vda").size == DISK
        no_leftovers(domain, scratch)
        assert vmb.csbs_checkpoints(domain) == ["csbs-f2"]


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_restore_onto_a_stopped_domain_then_power_on(
    guest: vmguest.GuestImage, conn: Any, workdir: Path, repo: Repository, fmt: str
) -> None:
    scratch = workdir / "scratch"
    disk = make_disk(workdir)
    with vmguest.running_domain(conn, guest, [(disk, "qcow2")], workdir) as (domain, console):
        vmguest.wait_rounds(console, 1)
        with vmb.PullBackup(domain, scratch, "b1") as job:
            run_backup(repo, job, "b1")
        expected = restored(repo, "b1", workdir / "expected.raw")
        check_image(expected)

    # Another domain, stopped, whose disk (qcow2 or raw) holds other bytes.
    target = workdir / f"target.{fmt}"
    create_disk(target, fmt, DISK)
    with pytest.raises(errors.InvalidInput):
        create_disk(target, fmt, DISK)  # never over an existing file
    with disk_target(target, fmt) as export:
        export.write_at(0, b"\xff" * MiB)
        export.write_at(STATIC[1] + MiB, b"\xee" * MiB)
        export.flush()
    with vmguest.running_domain(conn, guest, [(target, fmt)], workdir, start=False) as (
        other,
        console,
    ):
        require_stopped(other)
        with disk_target(target, fmt) as export:
            repo.restore(PROJECT, "b1", "vda", export)
        assert vmguest.qemu_img_info(target)["format"] == fmt
        assert vmguest.guest_bytes(target, fmt) == expected
        power_on(other)
        assert other.isActive()
        with pytest.raises(errors.InvalidState):
            require_stopped(other)
        # The guest boots from the restored disk's domain and writes again.
        vmguest.wait_rounds(console, 0)


def test_a_stopped_domain_is_read_through_qemu(
    guest: vmguest.GuestImage, conn: Any, workdir: Path, repo: Repository
) -> None:
    disk = make_disk(workdir)
    with vmguest.running_domain(conn, guest, [(disk, "qcow2")], workdir, start=False) as (
        domain,
        _,
    ):
        with vmb.OfflineRead(domain) as job:
            _, source = run_backup(repo, job, "s1")
        assert "stopped" in (job.outcome.incremental_note or "")
        image = restored(repo, "s1", workdir / "s1.raw")
        # The guest's bytes (the qcow2 container's would differ from the first byte on).
        assert image == vmguest.guest_bytes(disk, "qcow2")
        assert image[STATIC[0] : STATIC[1]] == static_bytes()
        assert source.export.bytes_read == STATIC[1] - STATIC[0]


class _FakeDomain:
    """Enough of virDomain for the freeze/thaw paths (no libvirt behind it)."""

    def __init__(self, *, freeze: bool = True, begin: bool = True, thaw: int = 0) -> None:
        self.calls: list[str] = []
        self._freeze, self._begin, self._thaw_failures = freeze, begin, thaw

    def XMLDesc(self, flags: int) -> str:
        return (
            "<domain><name>fake</name><devices><disk type='file' device='disk'>"
            "<driver type='qcow2'/><source file='/nowhere.qcow2'/><target dev='vda'/>"
            "</disk></devices></domain>"
        )

    def name(self) -> str:
        return "fake"

    def backupGetXMLDesc(self, flags: int) -> str:
        raise libvirt.libvirtError("no job")

    def checkpointLookupByName(self, name: str) -> Any:
        raise libvirt.libvirtError("no checkpoint")

    def agentSetResponseTimeout(self, timeout: int, flags: int) -> int:
        return 0

    def fsFreeze(self, mountpoints: Any, flags: int) -> int:
        self.calls.append("freeze")
        if not self._freeze:
            raise libvirt.libvirtError("Guest agent is not responding")
        return 1

    def fsThaw(self, mountpoints: Any, flags: int) -> int:
        self.calls.append("thaw")
        if self._thaw_failures:
            self._thaw_failures -= 1
            raise libvirt.libvirtError("thaw failed")
        return 1

    def backupBegin(self, xml: str, checkpoint: str | None, flags: int) -> int:
        self.calls.append("begin")
        if not self._begin:
            raise libvirt.libvirtError("backup refused")
        return 0


def test_freeze_only_around_the_checkpoint_and_thaw_on_every_path(tmp_path: Path) -> None:
    ok = _FakeDomain()
    with vmb.PullBackup(ok, tmp_path, "a") as job:
        assert ok.calls == ["freeze", "begin", "thaw"]
        assert job.outcome.consistency == vmb.APP_CONSISTENT

    refused = _FakeDomain(begin=False)
    with pytest.raises(HypervisorError):
        vmb.PullBackup(refused, tmp_path, "b").__enter__()
    assert refused.calls == ["freeze", "begin", "thaw"]
    assert not vmb.scratch_dir(tmp_path, "b").exists()

    no_agent = _FakeDomain(freeze=False)
    with vmb.PullBackup(no_agent, tmp_path, "c") as job:
        assert job.outcome.consistency == vmb.CRASH_CONSISTENT
        assert "not responding" in (job.outcome.consistency_note or "")
    assert no_agent.calls[0] == "freeze" and "begin" in no_agent.calls

    stuck = _FakeDomain(thaw=vmb.THAW_ATTEMPTS)
    with vmb.PullBackup(stuck, tmp_path, "d") as job:
        assert stuck.calls.count("thaw") == vmb.THAW_ATTEMPTS
        assert job.outcome.consistency == vmb.CRASH_CONSISTENT
    assert os.listdir(tmp_path) == []


_CHILD = """
import sys, time
from csbs.hypervisor import backup as vmb
from csbs.hypervisor.errors import HypervisorError
from tests.support import vmguest
conn = vmguest.connect()
domain = conn.lookupByUUIDString(sys.argv[1])
with vmb.PullBackup(domain, sys.argv[2], "k1") as job:
    job.export("vda").read(0, 1024 * 1024)
    print("reading", flush=True)
    time.sleep(600)
"""


def test_a_worker_killed_mid_backup_leaves_nothing_after_the_retry(
    guest: vmguest.GuestImage, conn: Any, workdir: Path, repo: Repository
) -> None:
    import signal
    import subprocess
    import sys

    scratch = workdir / "scratch"
    disk = make_disk(workdir)
    with vmguest.running_domain(conn, guest, [(disk, "qcow2")], workdir) as (domain, console):
        vmguest.wait_rounds(console, 1)
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, domain.UUIDString(), str(scratch)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == b"reading"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        # What the killed attempt left: libvirt's job, its scratch, its checkpoint.
        assert domain.backupGetXMLDesc(0)
        assert (vmb.scratch_dir(scratch, "k1") / "vda.scratch").exists()
        assert vmb.csbs_checkpoints(domain) == ["csbs-k1"]
        # The retry (the same backup) cleans up first, then backs up in full.
        with vmb.PullBackup(domain, scratch, "k1") as job:
            run_backup(repo, job, "k1")
        no_leftovers(domain, scratch)
        assert vmb.csbs_checkpoints(domain) == ["csbs-k1"]
        check_image(restored(repo, "k1", workdir / "k1.raw"))
