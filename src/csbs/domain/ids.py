"""Identifier generation. All public ids are UUID strings, as CSBS clients expect."""

from __future__ import annotations

import uuid


def new_id() -> str:
    """Return a fresh random UUID in its canonical string form."""
    return str(uuid.uuid4())


def new_hex_id() -> str:
    """Return a fresh random UUID as 32 hex characters (Keystone-style ids)."""
    return uuid.uuid4().hex
