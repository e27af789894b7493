"""The SQL helpers `db`, `queue` and `repository` share: column types, keyset paging and
read-only connections. They import nothing of csbs but `domain`."""

from __future__ import annotations
