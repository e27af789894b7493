"""`csbs worker --host NAME` on a machine with libvirt keeps the inventory in step with
the real libvirtd's domains, as a process of its own (setting `libvirt_uri` = auto)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from csbs.domain.inventory import Server, ServerSource, ServerStatus
from tests.support.libvirt import libvirt_domains
from tests.support.processes import clean_env
from tests.support.runtime import make_env

pytestmark = pytest.mark.slow


def test_a_worker_with_a_host_name_follows_its_libvirt(tmp_path: Path, db_url: str) -> None:
    env = make_env(tmp_path, db_url)
    host = f"kvm-{uuid.uuid4().hex[:8]}"
    s = env.runtime.settings

    def server(sid: str) -> Server | None:
        return next((x for x in env.services.inventory.servers(None) if x.id == sid), None)

    def until(ok: Callable[[], bool], within: float = 15.0) -> float:
        start = time.monotonic()
        while not ok():
            assert worker.poll() is None, "the worker exited"
            assert time.monotonic() - start < within, "not seen in time"
            time.sleep(0.1)
        return time.monotonic() - start

    with libvirt_domains() as vms:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "csbs",
                "worker",
                "--host",
                host,
                "--data-dir",
                str(s.data_dir),
                "--database-url",
                str(s.database_url),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=clean_env(
                CSBS_LOG_LEVEL="WARNING",
                CSBS_LIBVIRT_URI="auto",
                CSBS_LIBVIRT_RESYNC_SECONDS="3",
            ),
        )
        try:
            dom = vms.define()
            sid = dom.UUIDString()
            until(lambda: server(sid) is not None, within=30.0)  # the worker's start-up too
            found = server(sid)
            assert found is not None and found.host == host and found.name == dom.name()
            assert found.source is ServerSource.LIBVIRT and found.status is ServerStatus.STOPPED
            assert [d.target for d in found.disks] == ["vda"]
            dom.create()
            took = until(lambda: (x := server(sid)) is not None and x.status.value == "running")
            assert took < 5
            vms.undefine(dom)
            took = until(lambda: server(sid) is None)
            assert took < 5
        finally:
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=60)
            env.client.close()
            env.runtime.close()
        assert worker.returncode == 0, err.decode()
