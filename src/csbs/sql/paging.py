"""Keyset paging over any sort order, for the list queries of `db` and `queue`.

A marker is the id of the last row of the previous page. The next page holds the rows that
sort strictly after the marker row under the requested keys, with a unique tiebreak column
last, so pages never overlap or skip rows even when sort values repeat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from csbs.domain import errors
from csbs.domain.paging import PageRequest


def fetch_page(
    s: orm.Session,
    entity: Any,
    where: Sequence[sa.ColumnElement[bool]],
    page: PageRequest,
    *,
    columns: Mapping[str, sa.ColumnElement[Any]],
    tiebreak: sa.ColumnElement[Any],
    noun: str,
) -> tuple[list[Any], bool]:
    """One page of ORM rows of `entity` matching `where`, and whether more follow.

    The marker's sort values are looked up among the rows `where` matches, so a marker from
    another list (or another project) is refused rather than silently seeked past.
    """
    marker_values = None
    if page.marker is not None:
        row = s.execute(
            sa.select(*[columns[k.key] for k in page.sort], tiebreak).where(
                tiebreak == page.marker, *where
            )
        ).first()
        marker_values = list(row) if row else None
    stmt = apply_page(
        sa.select(entity).where(*where),
        page,
        columns=columns,
        tiebreak=tiebreak,
        marker_values=marker_values,
        not_found=errors.InvalidInput(f"marker {page.marker} is not a {noun} of this list"),
    )
    rows = list(s.scalars(stmt))
    return rows[: page.limit], len(rows) > page.limit


def apply_page(
    stmt: sa.Select[Any],
    page: PageRequest,
    *,
    columns: Mapping[str, sa.ColumnElement[Any]],
    tiebreak: sa.ColumnElement[Any],
    marker_values: Sequence[Any] | None,
    not_found: errors.CsbsError,
) -> sa.Select[Any]:
    """Order, seek past the marker, offset and limit `stmt` (fetching one extra row).

    Args:
        stmt: the filtered select.
        page: the validated paging request.
        columns: sort key name -> column.
        tiebreak: a unique column, ordered in the direction of the last sort key.
        marker_values: the marker row's values of the sort columns then the tiebreak, or None
            when there is no marker; the caller looks them up.
        not_found: raised when a marker was given but its row is unknown.
    """
    keys = [(columns[k.key], k.descending) for k in page.sort]
    last_desc = keys[-1][1] if keys else True
    keys.append((tiebreak, last_desc))
    if page.marker is not None:
        if marker_values is None:
            raise not_found
        stmt = stmt.where(_after(keys, list(marker_values)))
    # NULL sorts lowest on both engines (PostgreSQL's default is highest).
    stmt = stmt.order_by(
        *[(c.desc().nulls_last() if d else c.asc().nulls_first()) for c, d in keys]
    )
    if page.offset:
        stmt = stmt.offset(page.offset)
    return stmt.limit(page.limit + 1)


def _after(
    keys: list[tuple[sa.ColumnElement[Any], bool]], values: list[Any]
) -> sa.ColumnElement[bool]:
    """Rows strictly after `values` in the order of `keys` (NULLs sort as the lowest)."""
    clauses: list[sa.ColumnElement[bool]] = []
    for i, (col, desc) in enumerate(keys):
        equal_prefix = [
            (c.is_(None) if v is None else c == v)
            for (c, _), v in zip(keys[:i], values[:i], strict=True)
        ]
        v = values[i]
        if v is None:
            # NULL is the lowest value: after it ascending is any non-NULL; descending, nothing.
            step: sa.ColumnElement[bool] = col.is_not(None) if not desc else sa.false()
        elif desc:
            step = sa.or_(col < v, col.is_(None))
        else:
            step = col > v
        clauses.append(sa.and_(*equal_prefix, step))
    return sa.or_(*clauses)
