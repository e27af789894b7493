"""Where a project's repository objects live in the blob store: the name scheme.

    projects/<project_id>/key                                 wrapped data key
    projects/<project_id>/chunks/<id[:2]>/<chunk_id>.<gen>    one chunk envelope
    projects/<project_id>/manifests/<backup_id>               one sealed manifest
    projects/<project_id>/manifests/<backup_id>/<disk_id>     the manifest of one disk
                                                              (used by the Repository)

The two-hex-digit shard keeps directories of the local backend small. `<gen>` is the
chunk's generation, a decimal integer chosen by the metadata database: a chunk swept
and uploaded again gets a new generation, so a sweep that is still deleting the old
blob can never remove the new one.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from csbs.blobstore import base

_CHUNK_ID_RE = re.compile(r"[0-9a-f]{64}")
_CHUNK_NAME_RE = re.compile(
    r"projects/(?P<project>[^/]+)/chunks/(?P<shard>[0-9a-f]{2})/"
    r"(?P<chunk>[0-9a-f]{64})\.(?P<generation>0|[1-9][0-9]*)"
)


class ChunkBlob(NamedTuple):
    """The parts of a chunk blob's name."""

    project_id: str
    chunk_id: str
    generation: int


def project_prefix(project_id: str) -> str:
    """Return the prefix of every blob of `project_id` (ends with `/`)."""
    return f"projects/{_segment('project id', project_id)}/"


def key_name(project_id: str) -> str:
    """Return the name of the project's wrapped data key."""
    return project_prefix(project_id) + "key"


def chunks_prefix(project_id: str) -> str:
    """Return the prefix of all the project's chunk blobs (ends with `/`)."""
    return project_prefix(project_id) + "chunks/"


def manifests_prefix(project_id: str) -> str:
    """Return the prefix of all the project's manifests (ends with `/`)."""
    return project_prefix(project_id) + "manifests/"


def chunk_name(project_id: str, chunk_id: str, generation: int) -> str:
    """Return the blob name of generation `generation` of chunk `chunk_id`."""
    if not _CHUNK_ID_RE.fullmatch(chunk_id):
        raise ValueError(f"a chunk id is 64 lowercase hex digits: {chunk_id!r}")
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise ValueError(f"a generation is an integer >= 0: {generation!r}")
    return f"{chunks_prefix(project_id)}{chunk_id[:2]}/{chunk_id}.{generation}"


def parse_chunk_name(name: str) -> ChunkBlob:
    """Split a chunk blob name into its parts; raises ValueError for any other name."""
    match = _CHUNK_NAME_RE.fullmatch(name)
    if match is None or match["shard"] != match["chunk"][:2]:
        raise ValueError(f"not a chunk blob name: {name!r}")
    project_id = match["project"]
    if not base.is_valid_name(project_id):
        raise ValueError(f"not a chunk blob name: {name!r}")
    return ChunkBlob(project_id, match["chunk"], int(match["generation"]))


def manifest_name(project_id: str, backup_id: str) -> str:
    """Return the blob name of the manifest of backup `backup_id`."""
    return manifests_prefix(project_id) + _segment("backup id", backup_id)


def backup_manifests_prefix(project_id: str, backup_id: str) -> str:
    """Return the prefix of the disk manifests of backup `backup_id` (ends with `/`)."""
    return f"{manifests_prefix(project_id)}{_segment('backup id', backup_id)}/"


def disk_manifest_name(project_id: str, backup_id: str, disk_id: str) -> str:
    """Return the blob name of the manifest of disk `disk_id` in backup `backup_id`."""
    return backup_manifests_prefix(project_id, backup_id) + _segment("disk id", disk_id)


def _segment(what: str, value: str) -> str:
    """Check that `value` can be one path segment of a blob name."""
    if "/" in value or not base.is_valid_name(value):
        raise ValueError(f"{what} must be one blob-name segment ([a-z0-9._-]): {value!r}")
    return value
