"""How fast the command line answers, with `csbs serve` running as a real process.

    python -m bench.cli [--runs 7] [--engines sqlite,postgresql] [--pg-url URL]

For each metadata engine: starts `csbs serve` (its worker child embedded, loopback only) on
a fresh data directory (SQLite) or a fresh schema (PostgreSQL), registers one server with a
16 MiB disk through the command line, then times whole command-line processes as a user
runs them: `csbs --help`, `csbs backup list` and `csbs backup create SERVER --wait`
(enqueue, the worker's wake-up, the backup, the wait loop and the progress bar), which ask
the service over its control socket (decision 0018), and `csbs backup list` once more
with the database named by another URL, which no service's socket is named after: the
command line working on the database itself, as it does without `csbs serve`. Also
times a bare `python -c pass` and `python -c "import typer, pydantic_settings,
sqlalchemy.orm"` (the libraries a command that reads the database cannot do without), so
that the figures can be told apart from the machine's speed.

The children run from bytecode cached in the work directory, as an installed package does
(a development shell's PYTHONDONTWRITEBYTECODE would have them compile csbs on every
start); one untimed run of each command fills that cache.
Targets: `--help` and `backup list` under 0.3 s, `backup create --wait` under 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

PG_URL = "postgresql://postgres@127.0.0.1:5432/csbs_cli_bench"
DISK_BYTES = 16 * 1024 * 1024
TARGETS = {"--help": 0.3, "backup list": 0.3, "backup create --wait": 0.5}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _pg_schema(pg_url: str) -> Iterator[str]:
    """A fresh schema in `pg_url`'s database, dropped afterwards."""
    schema = f"bench_cli_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(
        pg_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{pg_url}?options=-csearch_path%3D{schema}"
    finally:
        try:
            with admin.connect() as c:
                c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        except sa.exc.DBAPIError as e:  # PostgreSQL restarted meanwhile: say what is left
            print(f"schema {schema} not dropped: {type(e).__name__}", file=sys.stderr)
        admin.dispose()


class Cli:
    """Runs `python -m csbs ...` as a user would, against one data directory."""

    def __init__(self, work: Path, database_url: str) -> None:
        self.data = work / "data"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CSBS_") and k != "PYTHONDONTWRITEBYTECODE"
        }
        self.env.update(
            PYTHONPYCACHEPREFIX=str(work.parent / "pycache"),
            CSBS_DATA_DIR=str(self.data),
            CSBS_DATABASE_URL=database_url,
            CSBS_LOG_LEVEL="WARNING",
        )

    def run(self, *args: str) -> tuple[float, float, str]:
        """Run one command to completion: its wall time, its CPU time (user and system) and
        its standard output."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, *args], env=self.env, capture_output=True, text=True, check=False
        )
        seconds = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr[-2000:]}")
        return seconds, cpu, done.stdout

    def csbs(self, *args: str) -> str:
        return self.run("-m", "csbs", *args)[2]


def _serve(cli: Cli, port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "csbs", "serve", "--port", str(port)],
            # Only the service is given the admin password: a command given it sets it again
            # (a password hash, a third of a second), which is not what a user's commands do.
            env={**cli.env, "CSBS_ADMIN_PASSWORD": "bench-admin-pw"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if serve.poll() is not None:
            raise RuntimeError(f"csbs serve exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return serve
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    serve.kill()
    raise RuntimeError("csbs serve did not become ready")


def _another_spelling(url: str) -> str:
    """The same database under another URL (no control socket is named after it)."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return f"sqlite:///{path.parent}/./{path.name}"
    return f"{url}&application_name=csbs-bench-direct"


def measure(database_url: str, work: Path, runs: int) -> dict[str, list[tuple[float, float]]]:
    cli = Cli(work, database_url)
    cli.data.mkdir(mode=0o700)
    disks = cli.data / "disks"
    disks.mkdir()
    image = disks / "disk.img"
    with open(image, "wb") as f:  # half random, half zeros
        f.write(os.urandom(DISK_BYTES // 2))
        f.truncate(DISK_BYTES)
    cli.csbs("db", "upgrade")
    serve = _serve(cli, _free_port(), work / "serve.log")
    try:
        if not any((cli.data / "run").glob("api-*.sock")):
            raise RuntimeError("csbs serve made no control socket")
        cli.csbs("admin", "project", "create", "bench")
        out = cli.csbs("server", "add", "--project", "bench", "--name", "vm", "--disk", str(image))
        server = out.split()[-1]
        commands = {
            "python -c pass": ("-c", "pass"),
            "python, libraries only": ("-c", "import typer, pydantic_settings, sqlalchemy.orm"),
            "--help": ("-m", "csbs", "--help"),
            "backup list": ("-m", "csbs", "backup", "list"),
            "backup create --wait": ("-m", "csbs", "backup", "create", server, "--wait"),
            "backup list, on the database": (
                *("-m", "csbs", "backup", "list"),
                *("--database-url", _another_spelling(database_url)),
            ),
        }
        for args in commands.values():  # fills the bytecode cache; the first backup
            cli.run(*args)
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, args in commands.items():
                figures[name].append(cli.run(*args)[:2])
        return figures
    finally:
        serve.terminate()
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()


def _cell(values: list[tuple[float, float]]) -> str:
    wall = sorted(w * 1000 for w, _ in values)
    cpu = sorted(c * 1000 for _, c in values)
    return (
        f"{wall[0]:.0f}-{wall[-1]:.0f} (median {statistics.median(wall):.0f}); "
        f"CPU {cpu[0]:.0f}-{cpu[-1]:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each command")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=PG_URL, help="a PostgreSQL database to use a schema of")
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="csbs-bench-cli-", dir=args.work_dir))
    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    try:
        for engine in (e.strip() for e in args.engines.split(",") if e.strip()):
            print(f"{engine}: {args.runs} runs of each command ...", flush=True)
            where = work / engine
            where.mkdir()
            try:
                if engine == "sqlite":
                    url = f"sqlite:///{where / 'data' / 'csbs.db'}"
                    results[engine] = measure(url, where, args.runs)
                elif engine == "postgresql":
                    with _pg_schema(args.pg_url) as url:
                        results[engine] = measure(url, where, args.runs)
                else:
                    parser.error(f"unknown engine {engine!r}")
            except (RuntimeError, sa.exc.DBAPIError) as e:  # reported; the other engine stays
                print(f"{engine}: failed: {str(e)[-500:]}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    engines = list(results)
    if not engines:
        raise SystemExit("no figures")
    names = list(next(iter(results.values())))
    print(
        "\nwhole processes, ms: wall time fastest-slowest (median); the command line's own CPU"
        " time (user + system) fastest-slowest\n"
    )
    print("| command | " + " | ".join(engines) + " | target |")
    print("|---|" + "---|" * len(engines) + "---|")
    for name in names:
        target = TARGETS.get(name)
        cells = " | ".join(_cell(results[e][name]) for e in engines)
        print(f"| {name} | {cells} | {f'< {target * 1000:.0f}' if target else ''} |")
    cpu = os.getloadavg()
    print(f"\n{os.cpu_count()} cores; load average at the end {cpu[0]:.2f}")


if __name__ == "__main__":
    main()
