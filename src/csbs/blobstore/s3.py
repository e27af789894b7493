"""Blobs as objects in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW), through boto3."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal, cast

import boto3.session
import botocore.config
import botocore.exceptions

from csbs.blobstore import base, errors
from csbs.blobstore.aligned import AlignedBlob

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_REGION = "us-east-1"  # what S3-compatible servers expect when none is configured

# Error codes S3 and its look-alikes use for "slow down / try again"; retried by botocore
# first, and reported as StoreUnavailable if they persist.
_TRANSIENT_CODES = frozenset(
    {
        "BandwidthLimitExceeded",
        "InternalError",
        "PriorRequestNotComplete",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestTimeTooSkewed",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
    }
)
# HEAD responses carry no body, so a missing key only shows as the status code "404".
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_NO_BUCKET_CODES = frozenset({"NoSuchBucket", "NotFound", "404"})


class S3Store:
    """Blobs as objects `<prefix><name>` in one bucket.

    S3 gives the contract's guarantees itself: a PUT is atomic (readers see the old or the
    new object, never a mix) and, on AWS and on current MinIO/Ceph, strongly consistent
    for read-after-write and list-after-write. The boto3 client is thread-safe, so one
    store serves all threads; its connection pool is sized by `max_pool_connections`.

    botocore retries throttling, 5xx and connection failures with exponential back-off
    (`retry_mode`; `max_attempts` counts all tries, the first included); what still
    fails surfaces as `StoreUnavailable`.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        max_attempts: int = 8,
        retry_mode: Literal["standard", "adaptive"] = "standard",
        connect_timeout: float = 10.0,  # seconds
        read_timeout: float = 60.0,  # seconds
        max_pool_connections: int = 32,
        addressing_style: Literal["auto", "path", "virtual"] | None = None,
        checksums: Literal["when_supported", "when_required"] = "when_supported",
    ) -> None:
        """Create a client; no request is made until the first operation.

        Credentials left as None come from boto3's usual chain (AWS_* environment
        variables, shared config files, instance metadata). With a custom
        `endpoint_url` the region defaults to `us-east-1` and addressing to path style,
        which is what MinIO, Ceph RGW and moto expect. `checksums="when_required"`
        turns off the CRC trailers boto3 sends by default, for older servers that
        reject them (the envelope authenticates every chunk anyway).
        """
        if not bucket:
            raise errors.InvalidStoreUrl("an S3 store needs a bucket name")
        prefix = prefix.strip("/")
        if prefix:
            base.validate_name(prefix)
            prefix += "/"
        self.bucket = bucket
        self.prefix = prefix
        if endpoint_url and region is None:
            region = DEFAULT_REGION
        if addressing_style is None:
            addressing_style = "path" if endpoint_url else "auto"
        config = botocore.config.Config(
            retries={"total_max_attempts": max_attempts, "mode": retry_mode},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
            s3={"addressing_style": addressing_style},
            request_checksum_calculation=checksums,
            response_checksum_validation=checksums,
        )
        # A private session: the default boto3 session is shared global state and its
        # creation is not thread-safe; the client made from it is.
        session = boto3.session.Session(
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            aws_session_token=session_token,
            region_name=region,
        )
        self._client: S3Client = session.client("s3", endpoint_url=endpoint_url, config=config)
        self._region = region

    def __repr__(self) -> str:
        return f"S3Store(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _key(self, name: str) -> str:
        return self.prefix + base.validate_name(name)

    def put(self, name: str, data: base.BlobValue) -> None:
        key = self._key(name)
        with translate_errors(name):
            # botocore takes a bytearray as it is (its stubs say bytes only): no copy. An
            # aligned blob's memory is reused after put, so it goes as bytes of its own.
            body = bytes(data) if isinstance(data, AlignedBlob) else cast(bytes, data)
            self._client.put_object(Bucket=self.bucket, Key=key, Body=body)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        key = self._key(name)
        base.check_range(offset, length)
        if length == 0:
            # An empty Range is not expressible; still honour "missing -> BlobNotFound".
            if not self.exists(name):
                raise errors.BlobNotFound(name)
            return b""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if offset or length is not None:
            last = "" if length is None else str(offset + length - 1)
            kwargs["Range"] = f"bytes={offset}-{last}"
        with translate_errors(name):
            try:
                response = self._client.get_object(**kwargs)
            except botocore.exceptions.ClientError as exc:
                if _error_code(exc) == "InvalidRange":
                    return b""  # the object exists; the range starts at or past its end
                raise
            body = response["Body"]
            try:
                # StreamingBody checks the received length against Content-Length and
                # raises IncompleteReadError on a short body, so no truncated blob escapes.
                return body.read()
            finally:
                body.close()

    def exists(self, name: str) -> bool:
        try:
            self.size(name)
        except errors.BlobNotFound:
            return False
        return True

    def delete(self, name: str) -> None:
        key = self._key(name)
        with translate_errors(name):
            # S3 answers 204 for a missing key too, which is exactly the contract.
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def list(self, prefix: str) -> Iterator[str]:
        base.validate_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        skip = len(self.prefix)
        with translate_errors(prefix or "/"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for obj in page.get("Contents", []):
                    name = obj.get("Key", "")[skip:]
                    if base.is_valid_name(name):
                        yield name

    def size(self, name: str) -> int:
        key = self._key(name)
        with translate_errors(name):
            response = self._client.head_object(Bucket=self.bucket, Key=key)
        return response["ContentLength"]

    def close(self) -> None:
        self._client.close()

    def create_bucket_if_missing(self) -> None:
        """Create the bucket unless it exists already (owned by us); idempotent."""
        with translate_errors(self.bucket):
            try:
                self._client.head_bucket(Bucket=self.bucket)
                return
            except botocore.exceptions.ClientError as exc:
                if _error_code(exc) not in _NO_BUCKET_CODES:
                    raise
            try:
                if self._region and self._region != DEFAULT_REGION:
                    self._client.create_bucket(
                        Bucket=self.bucket,
                        CreateBucketConfiguration={"LocationConstraint": self._region},  # type: ignore[typeddict-item]
                    )
                else:
                    self._client.create_bucket(Bucket=self.bucket)
            except botocore.exceptions.ClientError as exc:
                # Someone (maybe another worker) created it between our two requests.
                if _error_code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise


@contextlib.contextmanager
def translate_errors(name: str) -> Iterator[None]:
    """Re-raise botocore failures as blob store errors (`from` the original).

    NoSuchKey / 404 become `BlobNotFound(name)`; throttling, 5xx, timeouts and
    connection failures become `StoreUnavailable`; every other client or botocore error
    becomes a plain `BlobStoreError` (bad credentials, missing bucket, access denied:
    retrying would not help).
    """
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        code = _error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = f"S3 {exc.operation_name} {name!r}: {code} ({status})"
        if code in _NOT_FOUND_CODES:
            raise errors.BlobNotFound(name) from exc
        if code in _TRANSIENT_CODES or status == 429 or status >= 500:
            raise errors.StoreUnavailable(message) from exc
        raise errors.BlobStoreError(message) from exc
    except (
        botocore.exceptions.ConnectionError,
        botocore.exceptions.HTTPClientError,
        botocore.exceptions.IncompleteReadError,
    ) as exc:
        raise errors.StoreUnavailable(f"S3 {name!r}: {exc}") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise errors.BlobStoreError(f"S3 {name!r}: {exc}") from exc


def _error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
