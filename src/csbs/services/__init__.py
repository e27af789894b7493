"""Use cases: one module per aggregate, orchestrating database, task queue and repository."""

from __future__ import annotations
