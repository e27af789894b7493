"""Fixtures for the conformance suites: one blob store of each kind per test.

The S3 variant speaks real HTTP. By default the session starts moto's standalone S3
server (`moto.server.ThreadedMotoServer`) on a free 127.0.0.1 port, gives every test a
fresh bucket, and stops the server at the end; nothing outside the process is needed.

To run the same suite against a real S3-compatible server (MinIO, Ceph RGW, AWS S3), set
`CSBS_TEST_S3_URL` to an `s3://` URL understood by `csbs.blobstore.open_store`, e.g.

    # MinIO:   minio server /tmp/minio  (then create the bucket: mc mb local/csbs-test)
    CSBS_TEST_S3_URL='s3://csbs-test?endpoint_url=http://127.0.0.1:9000&access_key=minioadmin&secret_key=minioadmin'
    # Ceph RGW (credentials from `radosgw-admin user create`):
    CSBS_TEST_S3_URL='s3://csbs-test?endpoint_url=http://rgw.example:7480&access_key=...&secret_key=...'

The bucket is created if missing and the credentials allow it. Each test then works
below a fresh random key prefix inside that bucket and deletes what it wrote.
"""

from __future__ import annotations

import logging
import os
import pathlib
import urllib.parse
import uuid
from collections.abc import Callable, Iterator

import pytest
from moto.server import ThreadedMotoServer

from csbs.blobstore import base, local, memory, s3

S3_URL_ENV = "CSBS_TEST_S3_URL"
MOTO_CREDENTIALS = {"access_key": "testing", "secret_key": "testing"}

S3Factory = Callable[..., s3.S3Store]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto S3 server running for the whole session."""
    # werkzeug logs every request at INFO; keep test output readable.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_store_factory(request: pytest.FixtureRequest) -> Iterator[S3Factory]:
    """Build S3 stores on a fresh bucket (moto) or a fresh prefix (`CSBS_TEST_S3_URL`).

    Keyword arguments are passed on to `S3Store` (timeouts, retries, ...). Every store
    made for one test shares its bucket and prefix.
    """
    external = os.environ.get(S3_URL_ENV)
    made: list[s3.S3Store] = []
    if external:
        parts = urllib.parse.urlsplit(external)
        params = dict(urllib.parse.parse_qsl(parts.query))
        bucket = parts.netloc
        prefix = "/".join(p for p in (parts.path.strip("/"), f"t-{uuid.uuid4().hex}") if p)
        settings = {
            "endpoint_url": params.get("endpoint_url"),
            "region": params.get("region"),
            "access_key": params.get("access_key"),
            "secret_key": params.get("secret_key"),
        }
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        bucket = f"csbs-test-{uuid.uuid4().hex[:16]}"
        prefix = ""
        settings = {"endpoint_url": endpoint, "region": "us-east-1", **MOTO_CREDENTIALS}

    def make(**overrides: object) -> s3.S3Store:
        options = {"prefix": prefix, **settings, **overrides}
        store = s3.S3Store(bucket, **options)  # type: ignore[arg-type]
        made.append(store)
        return store

    make().create_bucket_if_missing()
    yield make
    for store in made:
        store.close()
    if external:
        cleaner = make()
        for name in list(cleaner.list("")):
            cleaner.delete(name)
        cleaner.close()


@pytest.fixture(params=["memory", "local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[base.BlobStore]:
    """One store of each kind, empty, closed after the test."""
    kind = request.param
    made: base.BlobStore
    if kind == "memory":
        made = memory.MemoryStore()
    elif kind == "local":
        made = local.LocalStore(tmp_path / "blobs")
    else:
        made = request.getfixturevalue("s3_store_factory")()
    yield made
    made.close()
