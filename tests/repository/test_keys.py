"""Key material: chunk ids, data-key wrapping, master key parsing and the key file."""

from __future__ import annotations

import base64
import concurrent.futures
import os
import pathlib
import stat

import blake3
import pytest

from csbs.repository import errors, keys


def test_chunk_id_is_keyed_blake3_hex() -> None:
    project = keys.ProjectKeys(bytes(32))
    chunk_id = project.chunk_id(b"data")
    assert len(chunk_id) == 64
    assert chunk_id == chunk_id.lower()
    int(chunk_id, 16)
    assert chunk_id == project.chunk_id(b"data"), "deterministic: identical data deduplicates"
    assert chunk_id == project.chunk_digest(b"data").hex()
    assert chunk_id == project.chunk_id(memoryview(b"data"))
    assert chunk_id != project.chunk_id(b"datA")
    assert chunk_id != blake3.blake3(b"data").hexdigest(), "keyed, not a plain hash"
    # The id key is derived from the data key, never the data key itself.
    assert chunk_id != blake3.blake3(b"data", key=bytes(32)).hexdigest()


def test_chunk_ids_differ_between_projects() -> None:
    a, b = keys.ProjectKeys(bytes(32)), keys.ProjectKeys(bytes([1]) * 32)
    assert a.chunk_id(b"same data") != b.chunk_id(b"same data")


def test_project_keys_need_32_bytes() -> None:
    for size in (0, 16, 31, 33, 64):
        with pytest.raises(errors.InvalidKeyMaterial):
            keys.ProjectKeys(bytes(size))


def test_project_keys_do_not_show_secrets() -> None:
    assert "00" not in repr(keys.ProjectKeys(bytes(32)))


def test_generated_keys_are_random() -> None:
    generated = {keys.generate_data_key() for _ in range(100)}
    assert len(generated) == 100
    assert all(len(k) == 32 for k in generated)


def test_wrap_unwrap_round_trip() -> None:
    master, data_key = keys.generate_data_key(), keys.generate_data_key()
    wrapped = keys.wrap_data_key(master, data_key, "project-1")
    assert len(wrapped) == keys.WRAPPED_KEY_SIZE
    assert data_key not in wrapped
    assert keys.unwrap_data_key(master, wrapped, "project-1") == data_key
    assert wrapped != keys.wrap_data_key(master, data_key, "project-1"), "fresh nonce"


def test_unwrap_with_wrong_master_key_fails() -> None:
    data_key = keys.generate_data_key()
    wrapped = keys.wrap_data_key(bytes(32), data_key, "p")
    with pytest.raises(errors.WrongKey):
        keys.unwrap_data_key(bytes([1]) * 32, wrapped, "p")


def test_unwrap_for_another_project_fails() -> None:
    master = keys.generate_data_key()
    wrapped = keys.wrap_data_key(master, keys.generate_data_key(), "project-a")
    with pytest.raises(errors.WrongKey):
        keys.unwrap_data_key(master, wrapped, "project-b")


def test_unwrap_of_altered_key_fails() -> None:
    master = keys.generate_data_key()
    wrapped = keys.wrap_data_key(master, keys.generate_data_key(), "p")
    for position in range(9, len(wrapped)):
        tampered = bytearray(wrapped)
        tampered[position] ^= 0x04
        with pytest.raises(errors.WrongKey):
            keys.unwrap_data_key(master, bytes(tampered), "p")


def test_unwrap_of_garbage_is_invalid_key_material() -> None:
    master = keys.generate_data_key()
    wrapped = keys.wrap_data_key(master, keys.generate_data_key(), "p")
    for bad in (
        b"",
        wrapped[:-1],
        wrapped + b"x",
        b"X" + wrapped[1:],
        wrapped[:8] + b"\x02" + wrapped[9:],
    ):
        with pytest.raises(errors.InvalidKeyMaterial):
            keys.unwrap_data_key(master, bad, "p")


def test_wrong_key_is_not_a_builtin_key_error() -> None:
    assert not issubclass(errors.WrongKey, KeyError)
    assert issubclass(errors.WrongKey, errors.RepositoryError)


def test_wrapping_refuses_bad_key_sizes() -> None:
    with pytest.raises(errors.InvalidKeyMaterial):
        keys.wrap_data_key(bytes(16), bytes(32), "p")
    with pytest.raises(errors.InvalidKeyMaterial):
        keys.wrap_data_key(bytes(32), bytes(31), "p")


def test_parse_master_key_formats() -> None:
    key = bytes(range(32))
    assert keys.parse_master_key(key.hex()) == key
    assert keys.parse_master_key(key.hex().upper()) == key
    assert keys.parse_master_key(f"  {key.hex()}\n") == key
    assert keys.parse_master_key(base64.b64encode(key).decode()) == key
    assert keys.parse_master_key(base64.b64encode(key).decode().rstrip("=")) == key
    special = bytes([0xFB, 0xFF] * 16)  # encodes to '+' and '/' in standard base64
    assert keys.parse_master_key(base64.urlsafe_b64encode(special).decode()) == special
    assert keys.parse_master_key(base64.b64encode(special).decode()) == special


@pytest.mark.parametrize(
    "text",
    [
        "",
        "00" * 31,
        "00" * 33,
        "zz" * 32,
        base64.b64encode(bytes(31)).decode(),
        base64.b64encode(bytes(33)).decode(),
        "not a key at all!",
    ],
)
def test_parse_master_key_refuses_malformed_text(text: str) -> None:
    with pytest.raises(errors.InvalidKeyMaterial):
        keys.parse_master_key(text)


def test_master_key_file_is_created_once_with_mode_0600(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "secrets" / "master.key"
    key = keys.load_or_create_master_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.parse_master_key(path.read_text()) == key
    assert keys.load_or_create_master_key(path) == key
    assert keys.load_or_create_master_key(str(path)) == key
    assert [p.name for p in path.parent.iterdir()] == ["master.key"], "no temp file left"


def test_master_key_file_mode_ignores_permissive_umask(tmp_path: pathlib.Path) -> None:
    previous = os.umask(0)
    try:
        keys.load_or_create_master_key(tmp_path / "master.key")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "master.key").stat().st_mode) == 0o600


def test_existing_master_key_file_is_used(tmp_path: pathlib.Path) -> None:
    key = bytes(range(32))
    path = tmp_path / "master.key"
    path.write_text(base64.b64encode(key).decode() + "\n")
    assert keys.load_or_create_master_key(path) == key


def test_corrupt_master_key_file_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "master.key"
    path.write_text("garbage")
    with pytest.raises(errors.InvalidKeyMaterial):
        keys.load_or_create_master_key(path)
    assert path.read_text() == "garbage", "never overwritten"


def test_concurrent_creators_agree_on_one_key(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "master.key"
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = set(pool.map(lambda _: keys.load_or_create_master_key(path), range(64)))
    assert len(results) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key"]
