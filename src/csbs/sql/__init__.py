"""The SQL helpers `db`, `queue` and `repository` share: column types, keyset paging,
read-only connections and what differs between SQLite and PostgreSQL. They import nothing
of csbs but `domain`."""

from __future__ import annotations
