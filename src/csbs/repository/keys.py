"""Key material and the keyed chunk-id hash: the repository's trust boundary.

Key hierarchy:

- the service **master key** (32 bytes, a file or a setting) wraps
- one random **data key** per project (stored wrapped, see `wrap_data_key`), from which
  BLAKE3 `derive_key` makes, with distinct contexts,
  - the **id key**: keyed BLAKE3 of a chunk's plaintext is its id, so only holders of the
    project key can compute ids (no confirmation-of-file attacks across tenants); a
    project created since decision 0027 hashes its chunks as a tree instead, the keyed
    BLAKE3 of each leaf (a sub-block) under the id key, then of those digests and the
    length under the **root key**, so one pass gives a chunk's id and its sub-block
    digests; and
  - the **encryption key**: AES-256-GCM for chunk and manifest envelopes.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import secrets
from typing import NewType

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from csbs.repository import errors

KEY_SIZE = 32  # bytes, for master, data, id and encryption keys
CHUNK_ID_SIZE = 32  # bytes of keyed BLAKE3 output; 64 hex characters
NONCE_SIZE = 12  # bytes, the AES-GCM standard nonce
TAG_SIZE = 16  # bytes, the AES-GCM authentication tag

# BLAKE3 derive_key contexts: hard-coded, globally unique, one per purpose. Changing one
# changes every id or key derived from it, so each is frozen once released.
_ID_KEY_CONTEXT = "csbs 2025 project chunk-id key v1"
_ROOT_KEY_CONTEXT = "csbs 2026 project chunk-id tree root key v1"
_ENCRYPTION_KEY_CONTEXT = "csbs 2025 project encryption key v1"
_WRAPPING_KEY_CONTEXT = "csbs 2025 master data-key wrapping key v1"

# Wrapped data key: magic, format version, nonce, AES-GCM(data key) with the magic, the
# version and the project id as associated data (so a wrapped key cannot be moved to
# another project).
_WRAPPED_MAGIC = b"CSBSWKEY"
WRAPPED_KEY_V1 = 1  # v1: AES-256-GCM under a BLAKE3-derived wrapping key
_WRAPPED_HEADER = _WRAPPED_MAGIC + bytes([WRAPPED_KEY_V1])
WRAPPED_KEY_SIZE = len(_WRAPPED_HEADER) + NONCE_SIZE + KEY_SIZE + TAG_SIZE

ChunkId = NewType("ChunkId", str)
"""64 lowercase hex characters: the keyed BLAKE3 of a chunk's plaintext."""

_HEX_KEY_RE = re.compile(r"[0-9a-fA-F]{64}")

log = logging.getLogger(__name__)


class ProjectKeys:
    """The keys of one project, derived from its 32-byte data key.

    `leaf_size` is the project's chunk-id scheme: None for the keyed BLAKE3 of the whole
    chunk (projects created before decision 0027), else the leaf of the tree hash (the
    sub-block of the project's chunk size). Immutable and safe to share between threads:
    BLAKE3 hashers are created per call and AESGCM objects hold no per-operation state.
    """

    __slots__ = ("_aead", "_id_key", "_leaf_size", "_root_key")

    def __init__(self, data_key: bytes, leaf_size: int | None = None) -> None:
        if len(data_key) != KEY_SIZE:
            raise errors.InvalidKeyMaterial(f"a data key has {KEY_SIZE} bytes, not {len(data_key)}")
        if leaf_size is not None and leaf_size <= 0:
            raise ValueError(f"a leaf has at least one byte, not {leaf_size}")
        self._id_key = _derive(data_key, _ID_KEY_CONTEXT)
        self._aead = AESGCM(_derive(data_key, _ENCRYPTION_KEY_CONTEXT))
        self._leaf_size = leaf_size
        self._root_key = _derive(data_key, _ROOT_KEY_CONTEXT)

    def __repr__(self) -> str:
        return "ProjectKeys(<secret>)"

    @property
    def aead(self) -> AESGCM:
        """The AES-256-GCM cipher for this project's envelopes."""
        return self._aead

    @property
    def leaf_size(self) -> int | None:
        """The leaf of the project's tree chunk ids; None where ids hash whole chunks."""
        return self._leaf_size

    def chunk_digest(self, data: bytes | memoryview) -> bytes:
        """Return the 32-byte chunk digest of `data` (its id, as bytes).

        The blake3 extension releases the GIL while hashing (above a small input size),
        so threads hash in parallel; one thread per call, because the pipeline already
        runs one hashing thread per core.
        """
        if self._leaf_size is None:
            return blake3.blake3(data, key=self._id_key).digest()
        return self._root(self.leaf_digests(data, self._leaf_size), len(data))

    def chunk_id(self, data: bytes | memoryview) -> ChunkId:
        """Return the chunk id of `data`: its chunk digest as 64 lowercase hex digits."""
        return ChunkId(self.chunk_digest(data).hex())

    def leaf_digests(self, data: bytes | memoryview, size: int) -> list[bytes]:
        """The 32-byte keyed BLAKE3 (id key) of each `size`-byte piece of `data`, the last
        possibly short: a chunk's sub-block digests, and the leaves of its tree id."""
        view = memoryview(data)
        # One hasher reset per piece: about a tenth cheaper than a hasher per piece, as
        # a 4 MiB chunk has 256 of them.
        hasher = blake3.blake3(key=self._id_key)
        digests = []
        for start in range(0, len(view), size):
            hasher.reset()
            hasher.update(view[start : start + size])
            digests.append(hasher.digest())
        return digests

    def chunk_id_and_leaves(
        self, data: bytes | memoryview, size: int
    ) -> tuple[ChunkId, list[bytes]]:
        """The chunk id of `data` and its `leaf_digests` at `size`, in one pass over the
        data when `size` is the project's leaf (two passes otherwise)."""
        leaves = self.leaf_digests(data, size)
        if size == self._leaf_size:
            return ChunkId(self._root(leaves, len(data)).hex()), leaves
        return self.chunk_id(data), leaves

    def _root(self, leaves: list[bytes], length: int) -> bytes:
        hasher = blake3.blake3(b"".join(leaves), key=self._root_key)
        # The length closes the tree: no two inputs share leaf digests and length.
        hasher.update(length.to_bytes(8, "little"))
        return hasher.digest()


def _derive(key_material: bytes, context: str) -> bytes:
    return blake3.blake3(key_material, derive_key_context=context).digest()


def generate_data_key() -> bytes:
    """Return a fresh random 32-byte key (a project data key or a master key)."""
    return secrets.token_bytes(KEY_SIZE)


def wrap_data_key(master_key: bytes, data_key: bytes, project_id: str) -> bytes:
    """Encrypt `data_key` under `master_key`, bound to `project_id`.

    The result (`WRAPPED_KEY_SIZE` bytes) is safe to store next to the project's data.
    """
    _check_key("master key", master_key)
    _check_key("data key", data_key)
    nonce = secrets.token_bytes(NONCE_SIZE)
    aead = AESGCM(_derive(master_key, _WRAPPING_KEY_CONTEXT))
    sealed = aead.encrypt(nonce, data_key, _WRAPPED_HEADER + project_id.encode())
    return _WRAPPED_HEADER + nonce + sealed


def unwrap_data_key(master_key: bytes, wrapped: bytes, project_id: str) -> bytes:
    """Return the data key inside `wrapped`.

    Raises `WrongKey` if the master key or the project id differs from the ones used to
    wrap it, or the wrapped bytes were altered (AES-GCM cannot tell these apart), and
    `InvalidKeyMaterial` if `wrapped` is not a wrapped key at all.
    """
    _check_key("master key", master_key)
    if len(wrapped) != WRAPPED_KEY_SIZE or not wrapped.startswith(_WRAPPED_MAGIC):
        raise errors.InvalidKeyMaterial("not a wrapped data key")
    header = wrapped[: len(_WRAPPED_HEADER)]
    if header != _WRAPPED_HEADER:
        raise errors.InvalidKeyMaterial(f"unsupported wrapped key version {header[-1]}")
    nonce = wrapped[len(header) : len(header) + NONCE_SIZE]
    aead = AESGCM(_derive(master_key, _WRAPPING_KEY_CONTEXT))
    try:
        return aead.decrypt(
            nonce, wrapped[len(header) + NONCE_SIZE :], header + project_id.encode()
        )
    except InvalidTag as exc:
        raise errors.WrongKey() from exc


def parse_master_key(text: str) -> bytes:
    """Return the 32 bytes written in `text` as 64 hex digits or as base64 (std or url-safe).

    Surrounding whitespace is ignored. Raises `InvalidKeyMaterial` otherwise.
    """
    text = text.strip()
    if _HEX_KEY_RE.fullmatch(text):
        return bytes.fromhex(text)
    normalised = text.replace("-", "+").replace("_", "/")
    normalised += "=" * (-len(normalised) % 4)
    try:
        raw = base64.b64decode(normalised, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_SIZE:
        raise errors.InvalidKeyMaterial(
            f"a master key is {KEY_SIZE} bytes written as 64 hex digits or in base64"
        )
    return raw


def load_or_create_master_key(path: str | os.PathLike[str]) -> bytes:
    """Return the master key stored at `path`, creating it first if the file is missing.

    A new key is 32 random bytes written as hex, in a file of mode 0600. Creation is
    atomic and race-free: the key is written and fsynced under a temporary name, then
    hard-linked to `path`, which fails if another process created `path` first; that
    process's key then wins and is returned. Missing parent directories are created with
    mode 0700. Raises `InvalidKeyMaterial` if the existing file does not hold a key.
    """
    path = os.path.abspath(os.fspath(path))
    try:
        return _read_master_key(path)
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask can only remove bits, but be explicit
            os.write(fd, generate_data_key().hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race; use its key
    finally:
        os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return _read_master_key(path)


def read_master_key(path: str | os.PathLike[str]) -> bytes:
    """Return the master key stored at `path`; FileNotFoundError if there is none (never
    creates one: see `load_or_create_master_key`)."""
    return _read_master_key(os.path.abspath(os.fspath(path)))


def _read_master_key(path: str) -> bytes:
    with open(path, encoding="ascii", errors="replace") as f:
        mode = os.fstat(f.fileno()).st_mode
        text = f.read()
    if mode & 0o077:
        log.warning(
            "master key file %s is accessible by group or others (mode %o)", path, mode & 0o777
        )
    return parse_master_key(text)


def _check_key(what: str, key: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise errors.InvalidKeyMaterial(f"a {what} has {KEY_SIZE} bytes, not {len(key)}")
