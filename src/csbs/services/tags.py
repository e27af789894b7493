"""Tags of backups and policies (CSBS T1-T12), one service for every kind of tagged resource."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import orm

from csbs.db.engine import Database
from csbs.db.queries import backups as backup_q
from csbs.db.queries import tags as q
from csbs.domain import errors
from csbs.domain.backups import MAX_TAGS, Tag, too_many_tags
from csbs.domain.tags import (
    ProjectTag,
    QueryAction,
    TaggedResource,
    TagKind,
    TagNotFound,
    TagQuery,
    TagQueryResult,
    check_create,
    check_delete,
    check_key,
    merged_count,
)


def _backup_not_found(resource_id: str) -> errors.CsbsError:
    return errors.BackupNotFound(resource_id)


def _policy_not_found(_resource_id: str) -> errors.CsbsError:
    return errors.PolicyNotFound()


#: What a missing (or another project's) resource of each kind answers.
NOT_FOUND: dict[TagKind, Callable[[str], errors.CsbsError]] = {
    TagKind.BACKUP: _backup_not_found,
    TagKind.POLICY: _policy_not_found,
}


def _backup_details(s: orm.Session, ids: Sequence[str]) -> dict[str, object]:
    return {b.id: b for b in backup_q.backups_by_ids(s, ids)}


#: What a tag query returns as `detail` of each resource (a domain object), per kind.
DETAILS: dict[TagKind, Callable[[orm.Session, Sequence[str]], dict[str, object]]] = {
    TagKind.BACKUP: _backup_details,
}


class TagService:
    def __init__(self, db: Database) -> None:
        self._db = db

    def _require(
        self,
        s: orm.Session,
        kind: TagKind,
        project_id: str,
        resource_id: str,
        *,
        for_update: bool = False,
    ) -> None:
        if not q.owner_exists(s, kind, project_id, resource_id, for_update=for_update):
            raise NOT_FOUND[kind](resource_id)

    def add(
        self,
        kind: TagKind,
        project_id: str,
        resource_id: str,
        tags: Sequence[tuple[str, str | None]],
    ) -> None:
        """T2 `create` and T3: add or overwrite tags.

        Raises:
            InvalidInput: create rules broken (CSBS.9001), or more than 10 tags in the
                request or on the resource afterwards (CSBS.7000).
            NotFound: no such resource in this project (backups CSBS.3001, policies 3000).
        """
        clean = check_create(tags)
        with self._db.write() as s:
            self._require(s, kind, project_id, resource_id, for_update=True)
            existing = q.tags_of(s, kind, [resource_id])[resource_id]
            if merged_count(existing, clean) > MAX_TAGS:
                raise too_many_tags()
            q.put(s, kind, resource_id, clean, {t.key for t in existing})

    def remove(
        self,
        kind: TagKind,
        project_id: str,
        resource_id: str,
        tags: Sequence[tuple[str, str | None]],
    ) -> None:
        """T2 `delete`: tags that are not there are ignored."""
        deletions = check_delete(tags)
        with self._db.write() as s:
            self._require(s, kind, project_id, resource_id, for_update=True)
            for d in deletions:
                q.delete(s, kind, resource_id, d.key, d.value)

    def remove_key(self, kind: TagKind, project_id: str, resource_id: str, key: str) -> None:
        """T4: delete one tag by key; a missing one is 404 CSBS.7001."""
        key = check_key(key)
        with self._db.write() as s:
            self._require(s, kind, project_id, resource_id, for_update=True)
            if not q.delete(s, kind, resource_id, key, None):
                raise TagNotFound()

    def tags(self, kind: TagKind, project_id: str, resource_id: str) -> tuple[Tag, ...]:
        """T5: the tags of one resource, by key."""
        with self._db.read() as s:
            self._require(s, kind, project_id, resource_id)
            return tuple(q.tags_of(s, kind, [resource_id])[resource_id])

    def project_tags(self, kind: TagKind, project_id: str) -> list[ProjectTag]:
        """T6: every key the project's resources use, with its distinct values."""
        with self._db.read() as s:
            return q.project_tags(s, kind, project_id)

    def query(
        self, kind: TagKind, project_id: str, action: QueryAction, query: TagQuery
    ) -> TagQueryResult:
        """T1: the matching resources (one page, newest first) and their total count."""
        with self._db.read() as s:
            total = q.count(s, kind, project_id, query)
            if action is QueryAction.COUNT:
                return TagQueryResult(total=total)
            found = q.find(s, kind, project_id, query)
            ids = [i for i, _ in found]
            tags = q.tags_of(s, kind, ids)
            details = DETAILS[kind](s, ids) if kind in DETAILS else {}
        return TagQueryResult(
            total=total,
            resources=tuple(
                TaggedResource(id=i, name=name, tags=tuple(tags[i]), detail=details.get(i))
                for i, name in found
            ),
        )
