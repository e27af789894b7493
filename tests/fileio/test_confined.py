"""Disks opened confined beneath a root: every way out is refused, by openat2 and by the walk."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from csbs.fileio import confined
from csbs.fileio.confined import DiskRefused, Rules, open_disk, split_beneath


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test runs through openat2 (where the kernel has it) and through the walk."""
    kernel = confined._kernel_openat2()
    if request.param == "openat2" and not kernel.available:
        pytest.skip("this kernel has no openat2")
    monkeypatch.setattr(kernel, "available", request.param == "openat2")
    yield request.param


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "vm").mkdir(parents=True)
    outside.mkdir()
    (root / "vm" / "a.img").write_bytes(b"inside" * 100)
    (outside / "secret.img").write_bytes(b"secret" * 100)
    return root, outside


def _refused(path: Path | str, rules: Rules, **kw: object) -> str:
    with pytest.raises(DiskRefused) as e:
        open_disk(str(path), rules, write=bool(kw.pop("write", False)), **kw)  # type: ignore[arg-type]
    return e.value.message


def test_opens_a_file_beneath_the_root(resolver: str, tree: tuple[Path, Path]) -> None:
    root, _ = tree
    with open_disk(str(root / "vm" / "a.img"), Rules((root,)), write=True) as disk:
        assert os.pread(disk.fd, 6, 0) == b"inside"
        assert disk.size == 600 and not disk.is_block
        st = os.stat(root / "vm" / "a.img")
        assert str(disk.identity) == f"file:{st.st_dev}:{st.st_ino}"
        fd = disk.fd
    with pytest.raises(OSError):
        os.fstat(fd)  # closed with the context


def test_symlinks_are_never_followed(resolver: str, tree: tuple[Path, Path]) -> None:
    root, outside = tree
    rules = Rules((root,))
    (root / "vm" / "leaf.img").symlink_to(outside / "secret.img")
    (root / "dirlink").symlink_to(outside, target_is_directory=True)
    (root / "vm" / "inner.img").symlink_to(root / "vm" / "a.img")  # even one inside
    for path in (
        root / "vm" / "leaf.img",
        root / "dirlink" / "secret.img",
        root / "vm" / "inner.img",
    ):
        assert "symlink" in _refused(path, rules), path


def test_root_that_is_a_symlink_is_the_admins_choice(
    resolver: str, tree: tuple[Path, Path], tmp_path: Path
) -> None:
    root, _ = tree
    alias = tmp_path / "alias"
    alias.symlink_to(root, target_is_directory=True)
    with open_disk(str(alias / "vm" / "a.img"), Rules((alias,)), write=False) as disk:
        assert os.pread(disk.fd, 6, 0) == b"inside"
    root2, parts = split_beneath(str(root / "vm" / "a.img"), (alias,))
    assert root2 == root.resolve() and parts == ["vm", "a.img"]


def test_paths_that_are_not_normal_or_outside(resolver: str, tree: tuple[Path, Path]) -> None:
    root, outside = tree
    rules = Rules((root,))
    for path in (
        "",
        "vm/a.img",
        f"{root}/vm/../vm/a.img",
        f"{root}/./vm/a.img",
        f"{root}//vm/a.img",
        str(outside / "secret.img"),
        str(root),
        f"{root}x/vm/a.img",
    ):
        _refused(path, rules)


def test_kinds_other_than_files_and_block_devices(resolver: str, tree: tuple[Path, Path]) -> None:
    root, _ = tree
    rules = Rules((root,))
    os.mkfifo(root / "vm" / "pipe.img")  # must not hang the open
    assert "regular file or block device" in _refused(root / "vm" / "pipe.img", rules)
    assert "regular file or block device" in _refused(root / "vm", rules)
    assert "does not exist" in _refused(root / "vm" / "missing.img", rules)


def test_hard_links_are_refused_unless_allowed(resolver: str, tree: tuple[Path, Path]) -> None:
    root, outside = tree
    rules = Rules((root,))
    os.link(outside / "secret.img", root / "vm" / "hl.img")
    assert "hard link" in _refused(root / "vm" / "hl.img", rules)
    with open_disk(str(root / "vm" / "hl.img"), rules, write=False, allow_hardlinks=True) as d:
        assert os.pread(d.fd, 6, 0) == b"secret"


def test_files_of_the_service_are_refused_even_when_hard_links_are_allowed(
    resolver: str, tree: tuple[Path, Path], tmp_path: Path
) -> None:
    root, _ = tree
    key = tmp_path / "master.key"
    key.write_bytes(b"k" * 32)
    os.link(key, root / "vm" / "key.img")
    rules = Rules((root,), protected=lambda: [key, tmp_path / "absent.db"])
    message = _refused(root / "vm" / "key.img", rules, allow_hardlinks=True)
    assert "of the service itself" in message


def test_identity_must_match(resolver: str, tree: tuple[Path, Path]) -> None:
    root, _ = tree
    rules = Rules((root,))
    path = root / "vm" / "a.img"
    with open_disk(str(path), rules, write=False) as disk:
        identity = str(disk.identity)
    with open_disk(str(path), rules, write=False, expected=identity):
        pass
    other = root / "vm" / "new.img"
    other.write_bytes(b"other" * 100)
    other.rename(path)  # another inode under the same name
    assert "no longer the file" in _refused(path, rules, expected=identity)
