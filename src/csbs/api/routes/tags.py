"""Tags (T1-T12): one set of routes per tagged kind, built by `tag_router`.

`/v1/{project_id}/csbs_backup/...` (T1-T6) tags backups, `/csbs_backup_policy/...` (T7-T12)
tags policies. Writes answer 204, reads 200.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from csbs.api.deps import ActorDep, EdgeDep, ReaderDep, ServicesDep
from csbs.api.edge import ApiEdge
from csbs.api.schemas.backups import backup_body
from csbs.api.schemas.tags import (
    BatchBody,
    OneTagBody,
    QueryBody,
    filter_pairs,
    pairs,
    project_tags_body,
    query_body,
    tag_list,
)
from csbs.domain import errors
from csbs.domain.backups import Backup
from csbs.domain.tags import (
    QueryAction,
    TaggedResource,
    TagKind,
    TagQuery,
    check_filter_tags,
    check_matches,
    parse_action,
    parse_limit,
    parse_offset,
)

IdPath = Annotated[str, Path(min_length=1, max_length=64)]
KeyPath = Annotated[str, Path(min_length=1, max_length=1024)]
#: Builds `resource_detail` of a T1 answer from a resource the service found.
Detail = Callable[[TaggedResource, ApiEdge], dict[str, Any]]


def backup_detail(r: TaggedResource, edge: ApiEdge) -> dict[str, Any]:
    """A backup's `resource_detail` is the full checkpoint_item (spec §6.2)."""
    if not isinstance(r.detail, Backup):
        return {}
    return backup_body(r.detail, edge.options.region)


def empty_detail(_r: TaggedResource, _edge: ApiEdge) -> dict[str, Any]:
    """A policy's `resource_detail` is `{}`."""
    return {}


def parse_query(body: QueryBody) -> tuple[QueryAction, TagQuery]:
    action = parse_action(body.action)
    paged = action is QueryAction.FILTER
    return action, TagQuery(
        tags=check_filter_tags("tags", filter_pairs(body.tags)),
        tags_any=check_filter_tags("tags_any", filter_pairs(body.tags_any)),
        not_tags=check_filter_tags("not_tags", filter_pairs(body.not_tags)),
        not_tags_any=check_filter_tags("not_tags_any", filter_pairs(body.not_tags_any)),
        name=check_matches(
            None if body.matches is None else [(m.key, m.value) for m in body.matches]
        ),
        limit=parse_limit(body.limit if paged else None),
        offset=parse_offset(body.offset if paged else None),
    )


def tag_router(kind: TagKind, detail: Detail) -> APIRouter:
    """The six tag operations for resources of `kind`, under `/v1/{project_id}/<kind>`."""
    router = APIRouter(prefix=f"/v1/{{project_id}}/{kind.value}", tags=["tags"])
    label = "backups" if kind is TagKind.BACKUP else "policies"

    @router.post("/resource_instances/action", summary=f"Query {label} by tags")
    def query(
        project_id: str, body: QueryBody, services: ServicesDep, edge: EdgeDep, _p: ReaderDep
    ) -> dict[str, Any]:
        action, q = parse_query(body)
        result = services.tags.query(kind, project_id, action, q)
        if action is QueryAction.COUNT:
            return {"total_count": result.total}
        return query_body(result, lambda r: detail(r, edge))

    @router.get("/tags", summary=f"Tags used by the project's {label}")
    def project_tags(project_id: str, services: ServicesDep, _p: ReaderDep) -> dict[str, Any]:
        return project_tags_body(services.tags.project_tags(kind, project_id))

    @router.post(
        "/{resource_id}/tags/action",
        status_code=204,
        response_class=Response,
        summary="Add or delete tags in a batch",
    )
    def batch(
        project_id: str,
        resource_id: IdPath,
        body: BatchBody,
        services: ServicesDep,
        _p: ActorDep,
    ) -> Response:
        if body.action == "create":
            services.tags.add(kind, project_id, resource_id, pairs(body.tags))
        elif body.action == "delete":
            services.tags.remove(kind, project_id, resource_id, pairs(body.tags))
        else:
            raise errors.InvalidInput("action must be create or delete")
        return Response(status_code=204)

    @router.post(
        "/{resource_id}/tags", status_code=204, response_class=Response, summary="Add a tag"
    )
    def add(
        project_id: str,
        resource_id: IdPath,
        body: OneTagBody,
        services: ServicesDep,
        _p: ActorDep,
    ) -> Response:
        services.tags.add(kind, project_id, resource_id, pairs([body.tag]))
        return Response(status_code=204)

    @router.delete(
        "/{resource_id}/tags/{key}",
        status_code=204,
        response_class=Response,
        summary="Delete a tag",
    )
    def remove(
        project_id: str,
        resource_id: IdPath,
        key: KeyPath,
        services: ServicesDep,
        _p: ActorDep,
    ) -> Response:
        services.tags.remove_key(kind, project_id, resource_id, key)
        return Response(status_code=204)

    @router.get("/{resource_id}/tags", summary="Tags of one resource")
    def resource_tags(
        project_id: str, resource_id: IdPath, services: ServicesDep, _p: ReaderDep
    ) -> dict[str, Any]:
        return {"tags": tag_list(services.tags.tags(kind, project_id, resource_id))}

    return router


router = APIRouter()
router.include_router(tag_router(TagKind.BACKUP, backup_detail))
router.include_router(tag_router(TagKind.POLICY, empty_detail))
