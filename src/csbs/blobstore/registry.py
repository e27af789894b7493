"""Open a blob store from a URL: `file:///abs/path`, `memory://`, `s3://bucket/prefix?...`."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable

from csbs.blobstore import base, errors, local, memory

Factory = Callable[[urllib.parse.SplitResult], base.BlobStore]

_S3_PARAMS = frozenset(
    {"endpoint_url", "region", "access_key", "secret_key", "addressing_style", "checksums"}
)


def open_store(url: str) -> base.BlobStore:
    """Return a new store for `url`; raises `InvalidStoreUrl` if it cannot be understood.

    - `file:///abs/path`: `LocalStore` rooted at the absolute path (created if missing).
    - `memory://`: a fresh, empty `MemoryStore` (each call gets its own).
    - `s3://bucket[/prefix][?endpoint_url=...&region=...&access_key=...&secret_key=...]`:
      `S3Store`. Without `access_key`/`secret_key`, credentials come from boto3's usual
      chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, config
      files, instance metadata). Also `addressing_style=path|virtual|auto` and
      `checksums=when_supported|when_required`.

    The store is not wrapped: add `RetryingStore` / `ReadOnlyStore` as needed.
    """
    parts = urllib.parse.urlsplit(url)
    factory = _FACTORIES.get(parts.scheme)
    if factory is None:
        known = ", ".join(sorted(_FACTORIES))
        raise errors.InvalidStoreUrl(f"unknown blob store scheme {parts.scheme!r} (known: {known})")
    return factory(parts)


def register_scheme(scheme: str, factory: Factory) -> None:
    """Make `open_store` build stores for `scheme://...` URLs with `factory`."""
    _FACTORIES[scheme] = factory


def _open_file(parts: urllib.parse.SplitResult) -> base.BlobStore:
    if parts.netloc not in ("", "localhost"):
        raise errors.InvalidStoreUrl(f"file URLs name a local path, not host {parts.netloc!r}")
    if parts.query or parts.fragment:
        raise errors.InvalidStoreUrl("file URLs take no query or fragment")
    path = urllib.parse.unquote(parts.path)
    if not os.path.isabs(path):
        raise errors.InvalidStoreUrl(f"file URL needs an absolute path, got {path!r}")
    return local.LocalStore(path)


def _open_memory(parts: urllib.parse.SplitResult) -> base.BlobStore:
    if parts.netloc or parts.path.strip("/") or parts.query:
        raise errors.InvalidStoreUrl("memory URLs take no host, path or query: use memory://")
    return memory.MemoryStore()


def _open_s3(parts: urllib.parse.SplitResult) -> base.BlobStore:
    bucket = parts.netloc
    if not bucket:
        raise errors.InvalidStoreUrl("s3 URL needs a bucket: s3://bucket/prefix")
    try:
        params = dict(urllib.parse.parse_qsl(parts.query, strict_parsing=bool(parts.query)))
    except ValueError as exc:
        raise errors.InvalidStoreUrl(f"malformed s3 URL query: {exc}") from exc
    unknown = set(params) - _S3_PARAMS
    if unknown:
        raise errors.InvalidStoreUrl(f"unknown s3 URL parameters: {', '.join(sorted(unknown))}")
    addressing = params.get("addressing_style")
    if addressing not in (None, "auto", "path", "virtual"):
        raise errors.InvalidStoreUrl(
            f"addressing_style must be auto, path or virtual: {addressing}"
        )
    checksums = params.get("checksums", "when_supported")
    if checksums not in ("when_supported", "when_required"):
        raise errors.InvalidStoreUrl(
            f"checksums must be when_supported or when_required: {checksums}"
        )
    prefix = urllib.parse.unquote(parts.path).strip("/")
    # Imported here: boto3 takes a noticeable time to import and most processes that
    # open a store (tests, a single-machine install) never talk to S3.
    from csbs.blobstore import s3

    try:
        return s3.S3Store(
            bucket,
            prefix=prefix,
            endpoint_url=params.get("endpoint_url"),
            region=params.get("region"),
            access_key=params.get("access_key"),
            secret_key=params.get("secret_key"),
            addressing_style=addressing,  # type: ignore[arg-type]  # checked above
            checksums=checksums,  # type: ignore[arg-type]  # checked above
        )
    except errors.InvalidBlobName as exc:
        raise errors.InvalidStoreUrl(f"invalid s3 key prefix {prefix!r}: {exc.reason}") from exc


_FACTORIES: dict[str, Factory] = {
    "file": _open_file,
    "memory": _open_memory,
    "s3": _open_s3,
}
