"""The multi-host deployment test's S3-protocol server: moto's, shared with the store tests."""

from __future__ import annotations

from tests.blobstore.conftest import moto_endpoint

__all__ = ["moto_endpoint"]
