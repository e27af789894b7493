"""A tiny test guest for libvirt: Debian's cloud kernel and a busybox initramfs.

The guest's `/init` writes a known pattern into its disk for ever, 4 KiB blocks through
O_DIRECT: `BLOCKS` blocks, block `b` at byte `b * BLOCK_SPACING`, written round after
round in the fixed order `b = (k * 37) % BLOCKS` for k = 0 .. BLOCKS-1. Each block holds
one 64-byte line repeated, `CSBS g=<round> b=<block> k=<k>`, so a block read back says
which write put it there: its place in the guest's sequence of writes is
`round * BLOCKS + k`. The guest prints `CSBS-GUEST round N` on its serial console after
each round.

A point-in-time copy of the disk holds, for every block, the last write before one
instant: its sequence numbers then all lie within BLOCKS of each other
(`check_point_in_time`). A copy read while the guest writes (a mixture) does not.

Nothing is installed on the host: the kernel package is downloaded (`apt-get download`)
and unpacked (`dpkg-deb -x`) into a cache directory, once.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BLOCK = 4096
BLOCKS = 32
BLOCK_SPACING = 64 * 1024  # one block per 64 KiB: the guest's writes span 2 MiB
STRIDE = 37  # the order of writes within a round: (k * STRIDE) % BLOCKS
MODULES = (
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/block/virtio_blk.ko",
)
BUSYBOX = "/bin/busybox"  # Debian's busybox-static

INIT = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox --install -s /bin
export PATH=/bin
for m in {" ".join(Path(m).stem for m in MODULES)}; do insmod /lib/$m.ko; done
n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
echo "CSBS-GUEST up"
g=0
while :; do
  k=0
  while [ $k -lt {BLOCKS} ]; do
    b=$(( (k * {STRIDE}) % {BLOCKS} ))
    s=$(printf '%-63s|' "$(printf 'CSBS g=%08d b=%04d k=%04d' $g $b $k)")
    s=$s$s; s=$s$s; s=$s$s; s=$s$s; s=$s$s; s=$s$s
    printf '%s' "$s" | dd of=/dev/vda bs={BLOCK} count=1 seek=$((b * {BLOCK_SPACING // BLOCK})) \\
      conv=notrunc iflag=fullblock oflag=direct 2>/dev/null
    k=$((k+1))
  done
  echo "CSBS-GUEST round $g"
  g=$((g+1))
done
"""

_LINE = re.compile(rb"CSBS g=(\d{8}) b=(\d{4}) k=(\d{4})")


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path


def cache_dir() -> Path:
    """Where the guest's kernel and initramfs are kept between test sessions."""
    path = Path(os.environ.get("CSBS_TEST_CACHE", "/var/tmp/csbs-test-cache")) / "vm-guest"
    path.mkdir(parents=True, exist_ok=True)
    return path


def world_readable(path: Path) -> None:
    """Let QEMU (which libvirt may run as another user) reach `path` and read it."""
    path.chmod(path.stat().st_mode | 0o755 if path.is_dir() else 0o644)
    for parent in path.parents:
        with contextlib.suppress(PermissionError):
            mode = parent.stat().st_mode
            if mode & 0o011 != 0o011:
                parent.chmod(mode | 0o011)


def build_guest(cache: Path | None = None, init: str = INIT) -> GuestImage:
    """Download the kernel and build the initramfs (with `init` as its /init) into `cache`,
    unless already there."""
    cache = cache or cache_dir()
    # The initramfs is named after its /init, so a changed guest is rebuilt.
    tag = hashlib.sha256(init.encode()).hexdigest()[:12]
    kernel, initrd = cache / "vmlinuz", cache / f"initrd-{tag}.gz"
    if kernel.exists() and initrd.exists():
        return GuestImage(kernel, initrd)
    work = cache / f"build-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        package = _kernel_package()
        subprocess.run(["apt-get", "download", package], cwd=work, check=True, capture_output=True)
        deb = next(work.glob("linux-image-*.deb"))
        root = work / "root"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        vmlinuz = next((root / "boot").glob("vmlinuz-*"))
        modules = next((root / "lib" / "modules").iterdir())
        tree = work / "initrd"
        (tree / "bin").mkdir(parents=True)
        (tree / "lib").mkdir()
        shutil.copy2(BUSYBOX, tree / "bin" / "busybox")
        for module in MODULES:
            shutil.copy2(modules / module, tree / "lib" / Path(module).name)
        (tree / "init").write_text(init)
        (tree / "init").chmod(0o755)
        names = subprocess.run(
            ["find", ".", "-mindepth", "1"], cwd=tree, check=True, capture_output=True
        ).stdout
        archive = subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet"],
            cwd=tree,
            input=names,
            check=True,
            capture_output=True,
        ).stdout
        tmp_initrd = work / "initrd.gz"
        tmp_initrd.write_bytes(gzip.compress(archive, 6))
        if not kernel.exists():
            shutil.copy2(vmlinuz, work / "vmlinuz")
            os.replace(work / "vmlinuz", kernel)
        os.replace(tmp_initrd, initrd)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for path in (cache, kernel, initrd):
        world_readable(path)
    return GuestImage(kernel, initrd)


def _kernel_package() -> str:
    out = subprocess.run(
        ["apt-cache", "depends", "linux-image-cloud-amd64"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-"):
            return line.split(": ", 1)[1]
    raise RuntimeError("no linux-image-*-cloud-amd64 package is known to apt")


def domain_xml(
    name: str,
    guest: GuestImage,
    disks: list[tuple[Path, str]],
    console_log: Path,
    *,
    memory_mib: int = 160,
    kvm: bool = False,
    serial: str = "file",
) -> str:
    """A domain (TCG unless `kvm`) booting the test guest, with `disks` as (path, format),
    vda first; its serial console goes to `console_log` (or a pty: `serial="pty"`)."""
    devices = "".join(
        f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='{fmt}' cache='none'/>
      <source file='{path}'/>
      <target dev='vd{chr(ord("a") + i)}' bus='virtio'/>
    </disk>"""
        for i, (path, fmt) in enumerate(disks)
    )
    console = (
        f"<serial type='file'><source path='{console_log}'/><target port='0'/></serial>"
        if serial == "file"
        else "<serial type='pty'><target port='0'/></serial>"
    )
    return f"""<domain type='{"kvm" if kvm else "qemu"}'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{guest.kernel}</kernel>
    <initrd>{guest.initrd}</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>{devices}
    {console}
    <memballoon model='none'/>
  </devices>
</domain>"""


def rounds_done(console_log: Path) -> int:
    """How many complete rounds of writes the guest reported (-1 before the first)."""
    try:
        text = console_log.read_text(errors="replace")
    except FileNotFoundError:
        return -1
    found = re.findall(r"CSBS-GUEST round (\d+)", text)
    return int(found[-1]) if found else -1


def wait_rounds(console_log: Path, at_least: int, timeout: float = 120.0) -> int:
    """Wait until the guest reported round `at_least`; return the last round reported."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = rounds_done(console_log)
        if done >= at_least:
            return done
        time.sleep(0.2)
    tail = console_log.read_text(errors="replace")[-2000:] if console_log.exists() else ""
    raise TimeoutError(f"the guest did not reach round {at_least}; its console:\n{tail}")


def block_sequences(image: bytes) -> list[int]:
    """The sequence number of the write each guest block holds (checks the block's bytes)."""
    out = []
    for b in range(BLOCKS):
        data = image[b * BLOCK_SPACING : b * BLOCK_SPACING + BLOCK]
        match = _LINE.match(data)
        if match is None:
            raise AssertionError(f"block {b} holds no guest write: {data[:64]!r}")
        g, got_b, k = (int(x) for x in match.groups())
        line = data[:64]
        if got_b != b or data != line * (BLOCK // 64) or (k * STRIDE) % BLOCKS != b:
            raise AssertionError(f"block {b} is torn or misplaced: {data[:64]!r}")
        out.append(g * BLOCKS + k)
    return out


def check_point_in_time(image: bytes) -> int:
    """Assert that the guest's blocks in `image` are one instant of its writes.

    Returns the sequence number of the last write the instant includes.
    """
    seqs = block_sequences(image)
    if max(seqs) - min(seqs) >= BLOCKS:
        raise AssertionError(f"not one point in time: write sequence numbers {seqs}")
    return max(seqs)


def guest_region() -> tuple[int, int]:
    """[start, end) of the bytes the guest writes into."""
    return 0, (BLOCKS - 1) * BLOCK_SPACING + BLOCK


def run_dir() -> Path:
    """A fresh directory QEMU can reach (libvirt runs it as another user)."""
    path = cache_dir().parent / "runs" / uuid.uuid4().hex[:12]
    path.mkdir(parents=True)
    world_readable(path)
    return path


def connect() -> object:
    """The system libvirt connection, or a test failure that says how to get one."""
    import libvirt

    try:
        return libvirt.open("qemu:///system")
    except libvirt.libvirtError as exc:
        raise RuntimeError(
            f"libvirtd does not answer at qemu:///system ({exc}); "
            "start it: virtlogd -d; libvirtd -d"
        ) from exc


@contextlib.contextmanager
def running_domain(
    conn: object,
    guest: GuestImage,
    disks: list[tuple[Path, str]],
    workdir: Path,
    *,
    start: bool = True,
) -> Iterator[tuple[object, Path]]:
    """A persistent test domain (unique name) on `disks`; undefined with its checkpoints
    at the end. Yields (domain, console log)."""
    import libvirt

    name = f"csbs-test-{uuid.uuid4().hex[:10]}"
    console = workdir / f"{name}.console"
    for path, _ in disks:
        path.chmod(0o666)
    domain = conn.defineXML(domain_xml(name, guest, disks, console))  # type: ignore[attr-defined]
    try:
        if start:
            domain.create()
        yield domain, console
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            if domain.isActive():
                with contextlib.suppress(libvirt.libvirtError):
                    domain.abortJob()
                domain.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def guest_bytes(path: Path, fmt: str) -> bytes:
    """The guest's view of an image (qcow2 converted), read whole (test images are small)."""
    if fmt == "raw":
        return path.read_bytes()
    out = path.with_name(path.name + f".{uuid.uuid4().hex[:6]}.raw")
    try:
        qemu_img("convert", "-U", "-f", fmt, "-O", "raw", str(path), str(out))
        return out.read_bytes()
    finally:
        out.unlink(missing_ok=True)


def qemu_img_info(path: Path) -> dict[str, object]:
    import json

    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)], check=True, capture_output=True
    ).stdout
    info: dict[str, object] = json.loads(out)
    return info
