"""Live VM backups: csbs against virtnbdbackup on the same running domain, in one run.

    python -m bench.vm [--size 2GiB] [--work-dir /var/tmp] [--content /usr/share]

A KVM domain boots Debian's cloud kernel with a busybox initramfs (the test guest's,
tests/support/vmguest.py) and a qcow2 disk holding an ext4 file system of real files
(`mkfs.ext4 -d CONTENT`). Its /init takes commands on the serial console (a pty), so
every change is written inside the guest, by the guest. The steps, each run by
virtnbdbackup and then by csbs (engine level: a libvirt pull-mode job read over NBD into a
repository that deduplicates, compresses and encrypts, on the local disk):

1. full backup;
2. incremental with nothing changed;
3. incremental after 5 % of the files were rewritten in the guest (mounted ext4);
4. incremental after 1 % of the disk's 4 KiB blocks were written at random places
   (`--skip-scatter` leaves it out: about half an hour in an emulated guest);
5. restore of the last backup into a new qcow2 file (csbs through qemu-nbd; virtnbdbackup
   with virtnbdrestore), both compared with the guest's disk (`qemu-img compare`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import termios
import time
import tty
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from csbs.blobstore import LocalStore
from csbs.cli.bench import parse_size
from csbs.db.engine import create_engine
from csbs.domain.clock import SystemClock
from csbs.hypervisor import backup as vmb
from csbs.hypervisor.restore import create_disk, disk_target
from csbs.repository import Repository, RepositorySettings, schema
from csbs.tasks.vmsource import ExportChunks

MB = 1_000_000
_ROOT = Path(__file__).resolve().parents[1]

INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /mnt
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox --install -s /bin
export PATH=/bin
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk
do insmod /lib/$m.ko; done
n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
echo "CSBS-BENCH ready"
while read cmd arg; do
  case "$cmd" in
    ping) echo "CSBS-BENCH ready" ;;
    files)
      mount -t ext4 /dev/vda /mnt
      n=0
      for f in $(find /mnt -type f | awk "NR % $arg == 0"); do
        s=$(stat -c %s "$f")
        dd if=/dev/urandom of="$f" bs=4096 count=$(( (s + 4095) / 4096 )) 2>/dev/null
        truncate -s "$s" "$f"
        n=$((n+1))
      done
      umount /mnt
      sync
      echo "CSBS-BENCH done files $n"
      ;;
    scatter)
      blocks=$(( $(blockdev --getsize64 /dev/vda) / 4096 ))
      count=$(( blocks * arg / 100 ))
      awk -v n=$count -v b=$blocks \\
        'BEGIN { srand(7); for (i = 0; i < n; i++) print int(rand() * b) }' | while read blk; do
            dd if=/dev/urandom of=/dev/vda bs=4096 seek=$blk count=1 conv=notrunc 2>/dev/null
          done
      sync
      echo "CSBS-BENCH done scatter $count"
      ;;
  esac
done
"""


class Console:
    """The guest's serial console, through the pty libvirt gives it."""

    def __init__(self, domain: Any) -> None:
        root = ET.fromstring(domain.XMLDesc(0))
        source = root.find("./devices/serial/source")
        assert source is not None
        self.fd = os.open(source.get("path", ""), os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        termios.tcflush(self.fd, termios.TCIOFLUSH)
        self.buffer = b""

    def wait_for(self, pattern: str, timeout: float = 1800) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            text = self.buffer.decode(errors="replace")
            found = regex.search(text)
            if found:
                self.buffer = self.buffer[found.end() :]
                return found
            os.set_blocking(self.fd, False)
            with contextlib.suppress(BlockingIOError):
                self.buffer += os.read(self.fd, 65536)
            time.sleep(0.05)
        raise TimeoutError(f"the guest did not say {pattern!r}: {self.buffer[-500:]!r}")

    def command(self, line: str, done: str, timeout: float = 1800) -> re.Match[str]:
        os.write(self.fd, line.encode() + b"\n")
        return self.wait_for(done, timeout)

    def close(self) -> None:
        os.close(self.fd)


def run(args: list[str], **kw: Any) -> float:
    start = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, check=False, **kw)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {(done.stderr or done.stdout)[-3000:]}")
    return time.monotonic() - start


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="2GiB")
    parser.add_argument("--work-dir", default="/var/tmp")
    parser.add_argument("--content", default="/usr/share")
    parser.add_argument("--memory-mib", type=int, default=512)
    # Under KVM on these (nested) machines the guest stopped with "resetting the virtual
    # machine is required" during its file rewrites: software emulation by default.
    parser.add_argument("--kvm", action="store_true")
    # The 1 % step writes each block with a dd of its own inside the guest: about half an
    # hour under software emulation for a 2 GiB disk. The restore then uses the 5 % step's.
    parser.add_argument("--skip-scatter", action="store_true")
    opts = parser.parse_args()
    sys.path.insert(0, str(_ROOT))
    import libvirt
    from tests.support import vmguest  # the test guest's kernel and initramfs builder

    size = parse_size(opts.size)
    work = Path(opts.work_dir) / f"csbs-bench-vm-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    vmguest.world_readable(work)
    conn = libvirt.open("qemu:///system")
    domain = None
    results: list[tuple[str, float, float, str]] = []
    try:
        guest = vmguest.build_guest(init=INIT)
        raw = work / "disk.raw"
        print(f"building a {opts.size} ext4 disk of {opts.content} ...", flush=True)
        # mke2fs reads a size without a suffix as KiB: name the unit.
        run(["mkfs.ext4", "-q", "-F", "-d", opts.content, str(raw), f"{size // 1024}k"])
        disk = work / "disk.qcow2"
        run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(disk)])
        raw.unlink()
        disk.chmod(0o666)
        name = f"csbs-bench-{uuid.uuid4().hex[:8]}"
        xml = vmguest.domain_xml(
            name,
            guest,
            [(disk, "qcow2")],
            work / "console.log",
            memory_mib=opts.memory_mib,
            kvm=opts.kvm,
            serial="pty",
        )
        domain = conn.defineXML(xml)
        domain.create()
        console = Console(domain)
        # QEMU drops what the guest writes to its pty before anyone opens it: ask.
        for _ in range(120):
            try:
                console.command("ping", "CSBS-BENCH ready", 1)
                break
            except TimeoutError:
                continue

        # csbs's repository (local disk), and its scratch space.
        (work / "data").mkdir(mode=0o755)
        engine = create_engine(f"sqlite:///{work / 'data' / 'repo.db'}")
        schema.metadata.create_all(engine)
        store = LocalStore(work / "data" / "blobs")
        repo = Repository(engine, store, SystemClock(), os.urandom(32), RepositorySettings())
        scratch = work / "data" / "vm-scratch"
        scratch.mkdir(mode=0o711)
        vnb = work / "virtnbdbackup"

        def csbs_backup(backup_id: str, previous: str | None) -> tuple[float, int, str]:
            os.sync()
            start = time.monotonic()
            since = f"csbs-{previous}" if previous else None
            with vmb.PullBackup(domain, scratch, backup_id, since=since) as job:
                begun = time.monotonic()
                manifest = (
                    repo.reader("p").load_manifest(previous, "vda")
                    if previous and job.outcome.incremental
                    else None
                )
                source = ExportChunks(job.export("vda"), manifest)
                repo.backup_writer("p", backup_id).write_disk("vda", source)
                data = time.monotonic() - begun  # the data time: read, stored, recorded
                repo.seal_backup("p", backup_id)
                note = "incremental" if manifest else f"full ({job.outcome.incremental_note})"
                ending = time.monotonic()
            vmb.prune_checkpoints(domain, {f"csbs-{backup_id}"})
            end = time.monotonic()
            note += (
                f"; job start {begun - start:.2f} s, data {data:.2f} s, "
                f"job end and checkpoint pruning {end - ending:.2f} s"
            )
            return end - start, source.export.bytes_read, note

        def virtnbd(level: str) -> float:
            # virtnbdbackup refuses to run beside checkpoints it did not create: csbs's
            # are set aside (libvirt's record only; their bitmaps stay and keep tracking)
            # and defined again afterwards.
            kept = []
            for cp in domain.listAllCheckpoints(0):
                if cp.getName().startswith(vmb.CHECKPOINT_PREFIX):
                    kept.append(cp.getXMLDesc(0))
                    cp.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
            try:
                os.sync()
                return run(["virtnbdbackup", "-d", name, "-l", level, "-o", str(vnb)])
            finally:
                for xml in kept:
                    domain.checkpointCreateXML(xml, libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE)

        def step(label: str, level: str, backup_id: str, previous: str | None) -> None:
            theirs = virtnbd(level)
            ours, read, note = csbs_backup(backup_id, previous)
            results.append((label, theirs, ours, f"csbs read {read / MB:,.0f} MB, {note}"))
            print(
                f"{label}: virtnbdbackup {theirs:.2f} s, csbs {ours:.2f} s ({note}, "
                f"read {read / MB:,.1f} MB)",
                flush=True,
            )

        step("full backup", "full", "b1", None)
        step("incremental, nothing changed", "inc", "b2", "b1")
        files = console.command("files 20", r"CSBS-BENCH done files (\d+)")
        step(f"incremental, 5 % of files rewritten ({files.group(1)})", "inc", "b3", "b2")
        last = "b3"
        if not opts.skip_scatter:
            blocks = console.command("scatter 1", r"CSBS-BENCH done scatter (\d+)")
            step(f"incremental, 1 % of 4 KiB blocks ({blocks.group(1)})", "inc", "b4", "b3")
            last = "b4"

        # Restores of the last backup into new qcow2 files, compared with the disk as the
        # last backup saw it (the guest is idle: its disk has not changed since).
        console.close()
        domain.destroy()
        out = work / "restore-csbs.qcow2"
        os.sync()
        start = time.monotonic()
        create_disk(out, "qcow2", size)
        with disk_target(out, "qcow2") as export:
            repo.restore("p", last, "vda", export)
        ours = time.monotonic() - start
        theirs_dir = work / "restore-virtnbd"
        os.sync()
        theirs = run(["virtnbdrestore", "-i", str(vnb), "-o", str(theirs_dir)])
        run(["sync"])
        run(["qemu-img", "compare", "-q", str(disk), str(out)])
        # virtnbdrestore names the image after the domain's disk file (disk.qcow2 here)
        # or its target, by version: the largest file it wrote is the image.
        restored = max(
            (p for p in theirs_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
        )
        run(["qemu-img", "compare", "-q", str(disk), str(restored)])
        results.append(("restore (both bit-exact)", theirs, ours, ""))
        print(f"restore: virtnbdrestore {theirs:.2f} s, csbs {ours:.2f} s", flush=True)
        stored = tree_bytes(work / "data" / "blobs")
        print(
            f"stored: csbs {stored / MB:,.0f} MB (deduplicated, compressed, encrypted), "
            f"virtnbdbackup {tree_bytes(vnb) / MB:,.0f} MB",
            flush=True,
        )
        print("\n| step | virtnbdbackup | csbs | ratio | |\n|---|---|---|---|---|")
        for label, theirs_s, ours_s, note in results:
            print(
                f"| {label} | {theirs_s:.2f} s | {ours_s:.2f} s | "
                f"{theirs_s / ours_s:.1f}x | {note} |"
            )
        store.close()
        engine.dispose()
    finally:
        if domain is not None:
            with contextlib.suppress(libvirt.libvirtError):
                if domain.isActive():
                    domain.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        conn.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
