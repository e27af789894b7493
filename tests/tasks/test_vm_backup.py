"""Backups and restores of a running libvirt domain through the API and a worker.

A real libvirtd and QEMU: the tiny test guest (tests/support/vmguest.py) writes its
pattern while it is backed up. The domain is discovered into the inventory, assigned to
the project, backed up (full, then incremental reading only what changed), and restored
onto another stopped domain, which is then powered on. On SQLite and PostgreSQL: the
chain of checkpoints is kept in the database.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from csbs.domain.clock import SystemClock
from csbs.hypervisor import backup as vmb
from csbs.hypervisor.discovery import list_domains
from csbs.hypervisor.errors import HypervisorError, NbdError
from csbs.queue import TaskStatus
from csbs.services.discovery import sync_host
from tests.hypervisor.test_pull_backup import DISK, STATIC, check_image, make_disk, static_bytes
from tests.support import vmguest
from tests.support.processes import clean_env, csbs_command
from tests.tasks.conftest import Cloud, _cloud

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def guest() -> vmguest.GuestImage:
    return vmguest.build_guest()


@pytest.fixture
def host() -> str:
    return f"kvm-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = vmguest.run_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def vm_cloud(workdir: Path, db_url: str, host: str) -> Iterator[Cloud]:
    for cloud in _cloud(workdir, db_url, worker_host=host, libvirt_uri="qemu:///system"):
        # The data directory (VM scratch space) must be reachable by QEMU's user.
        data = cloud.env.runtime.settings.data_dir
        data.chmod(data.stat().st_mode | 0o001)
        yield cloud


def _sync(cloud: Cloud, host: str, conn: Any, *domains: Any) -> None:
    """What the worker's host watcher does, at once: the inventory follows libvirt."""
    uuids = {d.UUIDString() for d in domains}
    infos = [i for i in list_domains(conn) if i.uuid in uuids]
    sync_host(cloud.worker_runtime.services.db, SystemClock(), host, infos)


def _discover(cloud: Cloud, host: str, conn: Any, *domains: Any) -> list[dict[str, Any]]:
    _sync(cloud, host, conn, *domains)
    out = []
    for d in domains:
        r = cloud.env.client.post(
            f"/v1/{cloud.pid}/servers/{d.UUIDString()}/assign", headers=cloud.headers(cloud.admin)
        )
        assert r.status_code == 200, r.text
        out.append(dict(r.json()["server"]))
    return out


def _backup(cloud: Cloud, server_id: str, **param: Any) -> dict[str, Any]:
    r = cloud.protect(server_id, **param)
    assert r.status_code == 200, r.text
    done = cloud.wait_backup(cloud.item_of(r.json()["checkpoint"]["id"])["id"], timeout=300)
    assert done["status"] == "available", done["extend_info"]["fail_reason"]
    return done


def _restore(
    cloud: Cloud,
    item: dict[str, Any],
    target: dict[str, Any],
    power_on: bool,
    expect: str = "success",
) -> Any:
    r = cloud.start_restore(item, target, power_on=power_on)
    if r.status_code != 200:
        return r
    done = cloud.wait_restore(r.json()["restore"]["id"], timeout=300)
    assert done["status"] == expect, done
    return r


def test_live_vm_backup_incremental_and_restore_to_another_domain(
    vm_cloud: Cloud, guest: vmguest.GuestImage, workdir: Path, host: str
) -> None:
    cloud = vm_cloud
    conn: Any = vmguest.connect()
    disk = make_disk(workdir)
    target_disk = workdir / "target.raw"
    vmguest.qemu_img("create", "-q", "-f", "raw", str(target_disk), str(DISK))
    try:
        with (
            vmguest.running_domain(conn, guest, [(disk, "qcow2")], workdir) as (domain, console),
            vmguest.running_domain(conn, guest, [(target_disk, "raw")], workdir, start=False) as (
                other,
                other_console,
            ),
        ):
            server, target = _discover(cloud, host, conn, domain, other)
            assert server["status"] == "running" and target["status"] == "stopped"
            vmguest.wait_rounds(console, 1)

            first = _backup(cloud, server["id"])
            info = first["extend_info"]
            assert info["consistency"] == "crash_consistent"  # no guest agent in this guest
            assert info["incremental"] is False
            assert info["incremental_reason"] == "no earlier backup of this server to build on"
            static = STATIC[1] - STATIC[0]
            assert static <= info["bytes_read"] <= static + 2 * MiB
            assert vmb.csbs_checkpoints(domain) == [f"csbs-{first['id']}"]

            vmguest.wait_rounds(console, vmguest.rounds_done(console) + 1)
            second = _backup(cloud, server["id"])
            info = second["extend_info"]
            assert info["incremental"] is True, info["incremental_reason"]
            assert info["volume_backups"][0]["incremental"] is True
            # Only the guest's chunks were read (256 KiB chunks: 2 MiB of them at most).
            assert 0 < info["bytes_read"] <= 2 * MiB
            # The first backup's checkpoint is not needed any more: removed.
            assert vmb.csbs_checkpoints(domain) == [f"csbs-{second['id']}"]

            # A full read asked for is one, and says so.
            third = _backup(cloud, server["id"], incremental=False)
            assert third["extend_info"]["incremental"] is False
            assert third["extend_info"]["incremental_reason"] == "a full read was asked for"
            assert third["extend_info"]["bytes_read"] >= static

            # Restore the incremental onto the other (stopped, raw) domain and start it.
            assert _restore(cloud, second, target, power_on=True).status_code == 200
            assert other.isActive()
            vmguest.wait_rounds(other_console, 0)  # it boots and its guest writes again
            other.destroy()
            image = vmguest.guest_bytes(target_disk, "raw")
            # The guest of the restored domain wrote over its blocks: check the rest.
            assert image[STATIC[0] : STATIC[1]] == static_bytes()
            assert vmguest.qemu_img_info(target_disk)["format"] == "raw"

            # The same backup restored without power-on is the point-in-time image.
            _sync(cloud, host, conn, domain, other)  # the inventory sees it stopped
            assert _restore(cloud, second, target, power_on=False).status_code == 200
            assert not other.isActive()
            check_image(vmguest.guest_bytes(target_disk, "raw"))

            # A running domain is no restore target (the spec's restore needs it stopped).
            refused = _restore(cloud, second, server, power_on=False)
            assert refused.status_code == 400, refused.text
    finally:
        conn.close()


def _failed_task(cloud: Cloud, operation_type: str) -> dict[str, Any]:
    r = cloud.env.client.get(
        f"/v1/{cloud.pid}/operation_logs?operation_type={operation_type}",
        headers=cloud.headers(),
    )
    assert r.status_code == 200, r.text
    (failed,) = [log for log in r.json()["operation_logs"] if log["status"] == "failed"]
    return dict(failed)


def _assert_tenant_safe(message: str, task_id: str, *internals: str) -> None:
    """What the project reads: our sentence and where the log has the rest, nothing else."""
    assert f"operation log {task_id}" in message, message
    assert "/" not in message, message  # no host path, socket or URI
    for internal in ("qemu", "libvirt", "nbd_", *internals):
        assert internal not in message, message


def _logged(caplog: pytest.LogCaptureFixture, task_id: str) -> BaseException:
    """The error the log holds, in full, under the task's id."""
    (record,) = [r for r in caplog.records if getattr(r, "task_id", None) == task_id and r.exc_info]
    assert record.exc_info is not None
    error = record.exc_info[1]
    assert isinstance(error, BaseException)
    assert str(error) in (record.exc_text or ""), record.exc_text
    return error


def test_hypervisor_failures_read_plainly_and_the_log_has_the_detail(
    vm_cloud: Cloud,
    guest: vmguest.GuestImage,
    workdir: Path,
    host: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """qemu-nbd refusing a disk (a backup) and libvirt refusing to start a domain (a
    restore's power-on): the tenant reads a CSBS code and a sentence of ours."""
    cloud = vm_cloud
    conn: Any = vmguest.connect()
    broken = workdir / "broken.qcow2"
    shutil.copyfile(make_disk(workdir), broken)
    good = make_disk(workdir, "raw")
    kernel = workdir / "vmlinuz"  # the restore target boots this copy, removed below
    shutil.copyfile(guest.kernel, kernel)
    kernel.chmod(0o644)
    try:
        with (
            vmguest.running_domain(conn, guest, [(broken, "qcow2")], workdir, start=False) as (
                stopped,
                _,
            ),
            vmguest.running_domain(
                conn,
                vmguest.GuestImage(kernel, guest.initrd),
                [(good, "raw")],
                workdir,
                start=False,
            ) as (unbootable, _),
            caplog.at_level(logging.ERROR, logger="csbs.tasks"),
        ):
            server, target = _discover(cloud, host, conn, stopped, unbootable)

            # The disk is no qcow2 any more: qemu-nbd cannot open it.
            broken.write_bytes(b"not a qcow2 image " * 4096)
            r = cloud.protect(server["id"])
            assert r.status_code == 200, r.text
            item = cloud.wait_backup(cloud.item_of(r.json()["checkpoint"]["id"])["id"])
            assert item["status"] == "error"
            task_id = _failed_task(cloud, "backup")["id"]
            reason = item["extend_info"]["fail_reason"]
            assert reason.startswith(NbdError.tenant_message), reason
            assert item["extend_info"]["fail_code"]["Code"] == NbdError.code == "CSBS.6050"
            _assert_tenant_safe(reason, task_id, broken.name)
            # qemu-nbd's own words (refused, or not a qcow2 file at its path) are logged.
            logged = _logged(caplog, task_id)
            assert isinstance(logged, NbdError) and str(logged) not in reason

            # The restore writes the disk, then libvirt cannot start the domain: its
            # kernel is gone.
            backup = _backup(cloud, target["id"])
            kernel.unlink()
            r = _restore(cloud, backup, target, power_on=True, expect="fail")
            assert r.status_code == 200, r.text
            failed = _failed_task(cloud, "restore")
            message = failed["error_info"]["message"]
            assert failed["error_info"]["code"] == HypervisorError.code == "CSBS.6042"
            assert message.startswith(f"The hypervisor did not start server {unbootable.name()}.")
            _assert_tenant_safe(message, failed["id"], kernel.name)
            logged = _logged(caplog, failed["id"])
            assert isinstance(logged, HypervisorError) and str(kernel) in str(logged)
    finally:
        conn.close()


def test_a_redefined_domain_lost_its_checkpoints_and_is_read_in_full(
    vm_cloud: Cloud, guest: vmguest.GuestImage, workdir: Path, host: str
) -> None:
    """Undefined and defined again (same UUID), a domain has none of csbs's checkpoints:
    the next backup reads it in full and says why, and the chain starts again from it."""
    import libvirt

    cloud = vm_cloud
    conn: Any = vmguest.connect()
    disk = make_disk(workdir)
    try:
        with vmguest.running_domain(conn, guest, [(disk, "qcow2")], workdir) as (domain, console):
            (server,) = _discover(cloud, host, conn, domain)
            vmguest.wait_rounds(console, 1)
            first = _backup(cloud, server["id"])
            assert vmb.csbs_checkpoints(domain) == [f"csbs-{first['id']}"]

            # What a host's tooling does to change a domain (or what a host rebuilt from
            # its domain XML does): stop, undefine with the checkpoints' metadata, define
            # from the same XML, start. The qcow2 file keeps the old checkpoint's bitmap.
            xml = domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            domain.destroy()
            domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
            redefined = conn.defineXML(xml)
            redefined.create()
            assert redefined.UUIDString() == server["id"]
            assert vmb.csbs_checkpoints(redefined) == []

            # The API's clock is frozen: "newest" needs the backups created apart.
            cloud.env.clock.advance(60)
            second = _backup(cloud, server["id"])
            info = second["extend_info"]
            assert info["incremental"] is False
            assert info["incremental_reason"] == f"checkpoint csbs-{first['id']} is gone"
            assert info["volume_backups"][0]["incremental"] is False
            static = STATIC[1] - STATIC[0]
            assert info["bytes_read"] >= static
            assert vmb.csbs_checkpoints(redefined) == [f"csbs-{second['id']}"]

            # The chain goes on from the full read.
            cloud.env.clock.advance(60)
            third = _backup(cloud, server["id"])
            assert third["extend_info"]["incremental"] is True, third["extend_info"]
            assert vmb.csbs_checkpoints(redefined) == [f"csbs-{third['id']}"]
    finally:
        conn.close()


# A `csbs worker` whose restores stop at one point (argv[1]): after qemu-nbd started on
# the target image but before the worker connected to it ("connecting"), or after the
# first write over NBD ("writing"). Killed there, it is a worker that died in the middle
# of a VM's restore.
_HELD_WORKER = """
import sys, time
from csbs.hypervisor import nbd
from csbs.cli import main
point = sys.argv.pop(1)
init, write_at = nbd.NbdExport.__init__, nbd.NbdExport.write_at
def hold(where):
    if where == point:
        print(where, flush=True)
        time.sleep(600)
def connecting(self, *args, **kw):
    hold("connecting")
    init(self, *args, **kw)
def writing(self, offset, data):
    write_at(self, offset, data)
    hold("writing")
nbd.NbdExport.__init__ = connecting
nbd.NbdExport.write_at = writing
main()
"""


def _wait_line(process: subprocess.Popen[bytes], line: bytes, timeout: float = 120) -> None:
    """Wait until `process` prints `line` (its other lines are passed over)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], deadline - time.monotonic())
        if not ready:
            break
        got = process.stdout.readline()
        assert got, f"the worker ended ({process.wait()}) before printing {line!r}"
        if got.strip() == line:
            return
    raise AssertionError(f"the worker did not print {line!r} in {timeout} s")


def _qemu_nbd_on(image: Path) -> list[int]:
    """The qemu-nbd processes serving `image`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"qemu-nbd") and str(image).encode() in argv:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("killed_at", ["connecting", "writing"])
def test_a_worker_killed_mid_restore_leaves_nothing_and_the_retry_restores_exactly(
    vm_cloud: Cloud, guest: vmguest.GuestImage, workdir: Path, host: str, killed_at: str
) -> None:
    """kill -9 of the worker process restoring a VM's disk (qemu-nbd started on the image,
    before or after the first write): its lease runs out, the next worker runs the restore
    again from the start (an interruption, not a failure), no qemu-nbd nor its socket
    directory is left, and the image is the backup's, byte for byte."""
    cloud = vm_cloud
    conn: Any = vmguest.connect()
    disk = make_disk(workdir)
    target_disk = workdir / "target.qcow2"
    vmguest.qemu_img("create", "-q", "-f", "qcow2", str(target_disk), str(DISK))
    tmp = workdir / "tmp"  # the workers' temporary directory: what they leave shows here
    tmp.mkdir()
    settings = cloud.env.runtime.settings

    def worker(*prefix: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*prefix, "worker", "--data-dir", str(settings.data_dir)],
            stdout=subprocess.PIPE,
            env=clean_env(
                PYTHONPATH=os.pathsep.join(sys.path),
                TMPDIR=str(tmp),
                CSBS_DATABASE_URL=str(settings.database_url),
                CSBS_CHUNK_SIZE=str(settings.chunk_size),
                CSBS_LIBVIRT_URI="qemu:///system",
                CSBS_WORKER_HOST=host,
                CSBS_TASK_LEASE_SECONDS="1",
                CSBS_LOG_LEVEL="WARNING",
            ),
        )

    try:
        with (
            vmguest.running_domain(conn, guest, [(disk, "qcow2")], workdir) as (domain, console),
            vmguest.running_domain(conn, guest, [(target_disk, "qcow2")], workdir, start=False) as (
                other,
                _,
            ),
        ):
            server, target = _discover(cloud, host, conn, domain, other)
            vmguest.wait_rounds(console, 1)
            backup = _backup(cloud, server["id"])
            cloud.worker.stop(grace=2)  # from here on, only worker processes run tasks

            r = cloud.start_restore(backup, target)
            assert r.status_code == 200, r.text
            restore_id = r.json()["restore"]["id"]
            task_id = _task_of_restore(cloud)

            held = worker(sys.executable, "-c", _HELD_WORKER, killed_at)
            try:
                _wait_line(held, killed_at.encode())
                assert _qemu_nbd_on(target_disk), "the restore writes through qemu-nbd"
            finally:
                held.kill()
                held.wait()
            store = cloud.env.services.tasks
            assert store.get(task_id).status is TaskStatus.RUNNING  # type: ignore[union-attr]

            retry = worker(*csbs_command())
            try:
                done = cloud.wait_restore(restore_id, timeout=300)
            finally:
                retry.send_signal(signal.SIGTERM)
                retry.wait(timeout=60)
            assert done["status"] == "success", done
            task = store.get(task_id)
            assert task is not None and task.status is TaskStatus.SUCCESS
            assert task.attempts == 2  # the killed run, then the one that finished
            assert _qemu_nbd_on(target_disk) == []
            assert list(tmp.iterdir()) == []
            assert not other.isActive()

            # Byte for byte what the backup holds, and one instant of the guest's writes.
            image = vmguest.guest_bytes(target_disk, "qcow2")
            held_backup = cloud.env.services.backups.get(None, backup["id"])
            expected = workdir / "expected.raw"
            expected.touch()
            cloud.worker_runtime.services.repository.restore(
                cloud.pid,
                str(held_backup.extra["repository_backup_id"]),
                held_backup.disks[0].disk_id,
                expected,
            )
            assert image == expected.read_bytes()
            check_image(image)
    finally:
        conn.close()


def _task_of_restore(cloud: Cloud) -> str:
    r = cloud.env.client.get(
        f"/v1/{cloud.pid}/operation_logs?operation_type=restore", headers=cloud.headers()
    )
    (log,) = r.json()["operation_logs"]
    return str(log["id"])


def test_a_backup_job_the_hypervisor_refuses_reads_plainly(
    vm_cloud: Cloud,
    guest: vmguest.GuestImage,
    workdir: Path,
    host: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """libvirt refuses the pull-mode backup of a running domain whose disk is in another
    block job (a copy): the tenant reads CSBS.6042 and a sentence, the log libvirt's."""
    import libvirt

    cloud = vm_cloud
    conn: Any = vmguest.connect()
    disk = make_disk(workdir)
    copy = workdir / "copy.qcow2"
    try:
        with (
            vmguest.running_domain(conn, guest, [(disk, "qcow2")], workdir) as (domain, _),
            caplog.at_level(logging.ERROR, logger="csbs.tasks"),
        ):
            (server,) = _discover(cloud, host, conn, domain)
            domain.blockCopy(
                "vda",
                f"<disk type='file'><source file='{copy}'/><driver type='qcow2'/></disk>",
                None,
                libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB,
            )
            try:
                r = cloud.protect(server["id"])
                assert r.status_code == 200, r.text
                item = cloud.wait_backup(cloud.item_of(r.json()["checkpoint"]["id"])["id"])
            finally:
                domain.blockJobAbort("vda", 0)
            assert item["status"] == "error"
            task_id = _failed_task(cloud, "backup")["id"]
            reason = item["extend_info"]["fail_reason"]
            assert reason.startswith("The hypervisor refused the backup job."), reason
            assert item["extend_info"]["fail_code"]["Code"] == HypervisorError.code
            _assert_tenant_safe(reason, task_id, "vda", copy.name)
            logged = _logged(caplog, task_id)
            assert isinstance(logged, HypervisorError) and str(logged) not in reason
            assert "the backup could not begin" in str(logged)
            assert vmb.csbs_checkpoints(domain) == []  # the refused job made none
    finally:
        conn.close()
