"""csbs: a self-hosted Cloud Server Backup Service speaking the CSBS v1 API."""

from __future__ import annotations

__version__ = "0.1.0"
