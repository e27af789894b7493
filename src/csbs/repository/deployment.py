"""The deployment's identity: which repository and which master key its database belongs to.

The metadata database records three values in `repo_deployment` at the first start (or at
the first start after an upgrade, when a database from before records none):

- `repository_id`: a random id, also written into the blob store itself as the marker blob
  `deployment.id`. The store holding the marker with that id is the deployment's
  repository, whatever URL reaches it (an NFS share mounted at another path, an S3
  endpoint by another name); an empty directory or bucket at the very same URL is not.
- `repository_url`: the URL the first process used, without credentials, so a refusal
  can name what the deployment uses.
- `master_key_fingerprint`: keyed BLAKE3 of a fixed label under the master key. It tells
  whether a process holds the deployment's key and reveals nothing of it.

`establish` checks a process against them before it touches data, records them when none
are recorded, and is the only place that lets a process create a master key: when the
database names none and no project's data key is wrapped yet.
"""

from __future__ import annotations

import dataclasses
import logging
import urllib.parse
import uuid
from collections.abc import Callable

import blake3

from csbs.blobstore import BlobStore
from csbs.blobstore.errors import BlobNotFound
from csbs.domain.errors import DeploymentMismatch
from csbs.repository import errors, keys
from csbs.repository.index import ChunkIndex

log = logging.getLogger("csbs.repository")

#: The marker blob, at the top of the store, beside `projects/`.
MARKER = "deployment.id"
REPOSITORY_ID = "repository_id"
REPOSITORY_URL = "repository_url"
KEY_FINGERPRINT = "master_key_fingerprint"

# Frozen once released: changing it changes every recorded fingerprint.
_FINGERPRINT_LABEL = b"csbs 2026 deployment master key fingerprint v1"
#: What of an s3 URL's query names the store (the rest are credentials and client options).
_S3_LOCATION_PARAMS = ("endpoint_url",)


@dataclasses.dataclass(frozen=True)
class LocalConfig:
    """What this process was configured with."""

    repository_url: str
    #: None when this process has no key (its key file does not exist).
    master_key: bytes | None
    #: Where the key comes from, for messages: "master_key_file /etc/csbs/master.key".
    key_source: str
    #: Creates the key file; called only when the database names no key and no project
    #: has a wrapped data key.
    create_key: Callable[[], bytes]


def key_fingerprint(master_key: bytes) -> str:
    """Keyed BLAKE3 of a fixed label: the same key gives the same value, and the value
    gives nothing of the key."""
    return blake3.blake3(_FINGERPRINT_LABEL, key=master_key).hexdigest()


def store_location(url: str) -> str:
    """The repository URL as recorded: scheme, host or bucket, path and the S3 endpoint,
    without credentials or client options (never stored in the database)."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path.rstrip("/") or ""
    if parts.scheme == "file":
        path = urllib.parse.unquote(path)
        return f"file://{path}"
    if parts.scheme == "s3":
        params = dict(urllib.parse.parse_qsl(parts.query))
        kept = [(k, params[k]) for k in _S3_LOCATION_PARAMS if k in params]
        query = f"?{urllib.parse.urlencode(kept)}" if kept else ""
        return f"s3://{parts.netloc}{path}{query}"[:255]
    return f"{parts.scheme}://{parts.netloc}{path}"[:255]


def establish(index: ChunkIndex, store: BlobStore, local: LocalConfig) -> bytes:
    """Check this process against the deployment its database records, recording what is
    not recorded yet; return the master key to use. Raises `DeploymentMismatch` naming the
    setting that differs, before anything is written."""
    recorded = index.deployment_values()
    key = _check_key(index, recorded, local)
    _check_repository(index, store, recorded, local)
    return key


def _check_key(index: ChunkIndex, recorded: dict[str, str], local: LocalConfig) -> bytes:
    fingerprint = recorded.get(KEY_FINGERPRINT)
    if fingerprint is not None:
        if local.master_key is None:
            raise DeploymentMismatch(
                f"master key: {local.key_source} does not exist, and the database records "
                f"the deployment's key (fingerprint {fingerprint[:16]}); copy the deployment's "
                "key file here or set CSBS_MASTER_KEY_FILE / CSBS_MASTER_KEY"
            )
        mine = key_fingerprint(local.master_key)
        if mine != fingerprint:
            raise DeploymentMismatch(
                f"master key: {local.key_source} is not the deployment's key (fingerprint "
                f"{mine[:16]}, the database records {fingerprint[:16]})"
            )
        return local.master_key
    # Nothing recorded: a first start, or the first start after an upgrade. Projects whose
    # data keys are wrapped already say which key is the deployment's.
    projects = index.list_projects()
    key = local.master_key
    if key is None:
        if projects:
            raise DeploymentMismatch(
                f"master key: {local.key_source} does not exist, and {len(projects)} projects "
                "have data keys wrapped by the deployment's key; copy the deployment's key "
                "file here or set CSBS_MASTER_KEY_FILE / CSBS_MASTER_KEY"
            )
        key = local.create_key()
    elif projects:
        first = projects[0]
        try:
            keys.unwrap_data_key(key, first.wrapped_key, first.project_id)
        except errors.WrongKey as exc:
            raise DeploymentMismatch(
                f"master key: {local.key_source} does not open project {first.project_id}'s "
                "data key: it is not the deployment's key"
            ) from exc
    mine = key_fingerprint(key)
    winner = index.deployment_setting(KEY_FINGERPRINT, mine)
    if winner != mine:  # another process started first, with another key
        raise DeploymentMismatch(
            f"master key: {local.key_source} is not the deployment's key (fingerprint "
            f"{mine[:16]}, the database records {winner[:16]})"
        )
    return key


def _check_repository(
    index: ChunkIndex, store: BlobStore, recorded: dict[str, str], local: LocalConfig
) -> None:
    location = store_location(local.repository_url)
    repository_id = recorded.get(REPOSITORY_ID)
    if location.startswith("memory://"):
        # A memory store lives and dies with its process: nothing to tell apart.
        if repository_id is None:
            index.deployment_setting(REPOSITORY_URL, location)
        return
    marker = _read_marker(store)
    if repository_id is None:
        if marker is not None:
            raise DeploymentMismatch(
                f"repository_url: {location} holds the repository of another deployment "
                f"(marker {MARKER} names {marker}), and this database records none"
            )
        proposed = uuid.uuid4().hex
        repository_id = index.deployment_setting(REPOSITORY_ID, proposed)
        if repository_id == proposed:
            # This process recorded it: the store gets the marker now; if that fails, the
            # record goes too, so the next start tries again instead of refusing.
            try:
                store.put(MARKER, proposed.encode())
            except BaseException:
                index.forget_deployment_setting(REPOSITORY_ID)
                raise
            index.deployment_setting(REPOSITORY_URL, location)
            log.info("recorded the deployment's repository %s (id %s)", location, proposed)
            return
        recorded = index.deployment_values()
    deployment_url = recorded.get(REPOSITORY_URL, "?")
    if marker is None:
        raise DeploymentMismatch(
            f"repository_url: {location} is not the deployment's repository (no {MARKER} "
            f"there; the database records {deployment_url}, id {repository_id})"
        )
    if marker != repository_id:
        raise DeploymentMismatch(
            f"repository_url: {location} is another deployment's repository (its {MARKER} "
            f"is {marker}; the database records {deployment_url}, id {repository_id})"
        )


def _read_marker(store: BlobStore) -> str | None:
    try:
        return store.get(MARKER).decode("ascii", "replace").strip()
    except BlobNotFound:
        return None
