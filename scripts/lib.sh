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
