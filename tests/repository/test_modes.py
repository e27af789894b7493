"""A local repository is its owner's alone: what it creates is 0700 (directories) and 0600
(files) whatever the umask; `check` finds what group or others may use, `tighten` mends it."""

from __future__ import annotations

import os
import pathlib
import stat

import pytest

from csbs.blobstore import LocalStore, LooseMode
from csbs.repository import Repository, layout
from tests.repository.conftest import SMALL_CHUNK, RepoFactory, write_image

SIZE = 20 * SMALL_CHUNK + 777  # bytes


def _backup(repo: Repository, project_id: str, image: pathlib.Path) -> None:
    repo.backup_writer(project_id, "b1").write_disk("vda", image)
    repo.seal_backup(project_id, "b1")


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_a_repository_made_under_a_permissive_umask_is_its_owners_alone(
    make_repo: RepoFactory, tmp_path: pathlib.Path, umask: int
) -> None:
    image = write_image(tmp_path / "disk.img", SIZE)
    root = tmp_path / "repository"
    old = os.umask(umask)
    try:
        store = LocalStore(root)
        repo = make_repo(store)
        _backup(repo, "p1", image)
        _backup(repo, "p2", image)
    finally:
        os.umask(old)
    dirs = {root, *(p for p in root.rglob("*") if p.is_dir())}
    files = {p for p in root.rglob("*") if not p.is_dir()}
    for project_id in ("p1", "p2"):  # keys, chunks and manifests alike
        assert root / layout.key_name(project_id) in files
        assert any(store.list(layout.chunks_prefix(project_id)))
        assert any(store.list(layout.manifests_prefix(project_id)))
    assert {p: stat.S_IMODE(p.lstat().st_mode) for p in dirs} == dict.fromkeys(dirs, 0o700)
    assert {p: stat.S_IMODE(p.lstat().st_mode) for p in files} == dict.fromkeys(files, 0o600)
    report = repo.check(read_data=True)
    assert report.ok, report


def test_check_reports_loose_modes_and_tighten_mends_them(
    make_repo: RepoFactory, tmp_path: pathlib.Path
) -> None:
    image = write_image(tmp_path / "disk.img", SIZE)
    root = tmp_path / "repository"
    store = LocalStore(root)
    repo = make_repo(store)
    _backup(repo, "p1", image)
    _backup(repo, "p2", image)
    chunk = sorted(store.list(layout.chunks_prefix("p1")))[0]
    shard = chunk.rsplit("/", 1)[0]
    (root / chunk).chmod(0o644)
    (root / shard).chmod(0o755)
    (root / layout.key_name("p2")).chmod(0o640)

    report = repo.check()
    assert not report.ok
    assert report.loose_modes == [
        LooseMode(shard, 0o755, True),
        LooseMode(chunk, 0o644, False),
        LooseMode(layout.key_name("p2"), 0o640, False),
    ]
    assert not (report.missing or report.leaked or report.corrupt or report.mismatches)
    assert repo.check("p1").loose_modes == report.loose_modes[:2], "only the project's own"
    assert repo.repair(report) == 0, "repair removes leaked blobs only"
    assert repo.tighten(report) == 3
    assert stat.S_IMODE((root / chunk).stat().st_mode) == 0o600
    assert stat.S_IMODE((root / shard).stat().st_mode) == 0o700
    assert repo.check(read_data=True).ok
    assert repo.tighten(report) == 0, "nothing left to tighten"
