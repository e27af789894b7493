"""Metadata persistence: the SQLAlchemy engine, the tables, and the queries per aggregate."""

from __future__ import annotations
