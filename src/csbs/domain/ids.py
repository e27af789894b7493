"""Identifier generation. All public ids are UUID strings, as CSBS clients expect."""

from __future__ import annotations

import re
import uuid

_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)


def new_id() -> str:
    """Return a fresh random UUID in its canonical string form."""
    return str(uuid.uuid4())


def new_hex_id() -> str:
    """Return a fresh random UUID as 32 hex characters (Keystone-style ids)."""
    return uuid.uuid4().hex


def looks_like_uuid(value: str) -> bool:
    """Tell whether `value` is a UUID, with or without dashes."""
    return bool(_UUID_RE.match(value))
