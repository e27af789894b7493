"""Wire shapes of the tag APIs (spec §4.16, §6.7), the same for backups and policies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from csbs.domain.backups import Tag
from csbs.domain.tags import ProjectTag, TagQueryResult


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TagItem(_Lenient):
    key: StrictStr
    #: mandatory when creating (may be empty), optional when deleting
    value: StrictStr | None = None


class OneTagBody(_Lenient):
    """T3."""

    tag: TagItem


class BatchBody(_Lenient):
    """T2: `action` is `create` or `delete`."""

    action: StrictStr
    tags: list[TagItem]


class FilterTag(_Lenient):
    key: StrictStr
    values: list[StrictStr] = []


class MatchItem(_Lenient):
    key: StrictStr
    value: StrictStr


class QueryBody(_Lenient):
    """T1: `limit` and `offset` are strings ("1".."1000", "0"...); numbers are accepted too."""

    action: StrictStr
    tags: list[FilterTag] | None = None
    tags_any: list[FilterTag] | None = None
    not_tags: list[FilterTag] | None = None
    not_tags_any: list[FilterTag] | None = None
    matches: list[MatchItem] | None = None
    limit: StrictStr | StrictInt | None = None
    offset: StrictStr | StrictInt | None = None


def pairs(items: Sequence[TagItem]) -> list[tuple[str, str | None]]:
    return [(t.key, t.value) for t in items]


def filter_pairs(items: Sequence[FilterTag] | None) -> list[tuple[str, list[str]]] | None:
    return None if items is None else [(t.key, list(t.values)) for t in items]


def tag_list(tags: Sequence[Tag]) -> list[dict[str, str]]:
    return [{"key": t.key, "value": t.value} for t in tags]


def project_tags_body(tags: Sequence[ProjectTag]) -> dict[str, Any]:
    return {"tags": [{"key": t.key, "values": list(t.values)} for t in tags]}


def query_body(result: TagQueryResult, detail: Any) -> dict[str, Any]:
    """T1 `filter`; `detail(resource)` builds each `resource_detail`."""
    return {
        "resources": [
            {
                "resource_id": r.id,
                "resource_name": r.name,
                "resource_detail": detail(r),
                "tags": tag_list(r.tags),
            }
            for r in result.resources
        ],
        "total_count": result.total,
    }
