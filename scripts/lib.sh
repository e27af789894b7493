# Helpers shared by scripts/serve and scripts/test.

PYTHON=${PYTHON:-python3.11}

# ensure_venv EXTRAS: create .venv and install csbs (with EXTRAS, e.g. "[test]") when it is
# missing or pyproject.toml is newer than the last install.
ensure_venv() {
  local extras=$1
  local stamp=".venv/.installed${extras}"
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
  fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q -e ".${extras}"
    touch "$stamp"
  fi
}

# ensure_postgres: the tests need PostgreSQL at 127.0.0.1:5432; start the local cluster if it
# is installed and down.
ensure_postgres() {
  if [ -n "${CSBS_TEST_PG_URL:-}" ]; then return; fi
  if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then return; fi
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && return; sleep 1; done
  fi
  echo "PostgreSQL is not reachable at 127.0.0.1:5432; the PostgreSQL half of the tests will fail" >&2
}

# ensure_tools: Debian packages the tests use (mkfs.ext4 and e2fsck for real disk images).
ensure_tools() {
  if command -v mkfs.ext4 >/dev/null || [ -x /usr/sbin/mkfs.ext4 ] || [ -x /sbin/mkfs.ext4 ]; then return; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq e2fsprogs
  else
    echo "mkfs.ext4 is missing: install e2fsprogs (the end-to-end tests build ext4 images)" >&2
  fi
}

# ensure_browser: the console's tests drive Debian's chromium through Playwright (never a
# downloaded browser) and inject axe-core, installed from the npm registry by its lock file.
ensure_browser() {
  if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq chromium
    else
      echo "chromium is missing: install Debian's chromium package (the console's tests use it)" >&2
    fi
  fi
  if ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq npm
    else
      echo "npm is missing: install it (the console's tests install axe-core with it)" >&2
      return
    fi
  fi
  local dir=tests/console
  if [ ! -f "$dir/node_modules/.installed" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.installed" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund --silent) && touch "$dir/node_modules/.installed"
  fi
}

# What csbs needs to back up libvirt/QEMU domains, from Debian: QEMU and libvirt (the
# daemons the tests drive), the libvirt headers and pkg-config (PyPI's libvirt-python builds
# against them), libnbd's Python module (not on PyPI: linked into the venv by
# ensure_nbd_binding), and virtnbdbackup (the benchmark's reference).
HYPERVISOR_PACKAGES="qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients \
libvirt-dev pkg-config python3-libvirt python3-libnbd nbdkit virtnbdbackup"

# ensure_hypervisor: install HYPERVISOR_PACKAGES that are missing (as root, with apt-get).
ensure_hypervisor() {
  local missing=() p
  for p in $HYPERVISOR_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "missing Debian packages for libvirt domains: ${missing[*]} (install them as root)" >&2
  fi
}

# vm_extra: prints ",vm" when the libvirt headers are there to build libvirt-python.
vm_extra() {
  if command -v pkg-config >/dev/null && pkg-config --exists libvirt; then echo ",vm"; fi
}

# ensure_nbd_binding: link Debian's libnbd module (python3-libnbd) into .venv when it was
# built for the venv's Python (same minor version: the extension's suffix matches).
ensure_nbd_binding() {
  local dist=/usr/lib/python3/dist-packages
  [ -f "$dist/nbd.py" ] || return 0
  local site suffix
  site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['platlib'])")
  suffix=$(.venv/bin/python -c "import importlib.machinery as m; print(m.EXTENSION_SUFFIXES[0])")
  if [ ! -f "$dist/libnbdmod$suffix" ]; then
    echo "python3-libnbd has no libnbdmod$suffix for the venv's Python: VM backups are off" >&2
    return 0
  fi
  ln -sfn "$dist/nbd.py" "$site/nbd.py"
  ln -sfn "$dist/libnbdmod$suffix" "$site/libnbdmod$suffix"
}

# ensure_libvirtd: start virtlogd and libvirtd (no systemd here: both with -d) when they are
# installed and not running, and wait until qemu:///system answers.
ensure_libvirtd() {
  command -v libvirtd >/dev/null || return 0
  [ "$(id -u)" = 0 ] || return 0
  pgrep -x virtlogd >/dev/null || virtlogd -d
  pgrep -x libvirtd >/dev/null || libvirtd -d
  for _ in $(seq 50); do
    virsh -q -c qemu:///system uri >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "libvirtd does not answer at qemu:///system" >&2
}

# --- the test guest of the VM backup tests (tests/support/vmguest.py) -------------------
# ensure_vm_guest: Debian packages its busybox initramfs is built from (busybox-static,
# cpio), and the guest itself, built once into CSBS_TEST_CACHE (default
# /var/tmp/csbs-test-cache): Debian's cloud kernel fetched with `apt-get download` and
# unpacked there, nothing installed on the host.
ensure_vm_guest() {
  local missing=() p
  for p in busybox-static cpio; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} != 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
      echo "missing Debian packages for the VM test guest: ${missing[*]} (install them as root)" >&2
      return
    fi
  fi
  PYTHONPATH=. .venv/bin/python -c 'from tests.support.vmguest import build_guest; build_guest()' \
    || echo "the VM test guest could not be built (see above)" >&2
}
