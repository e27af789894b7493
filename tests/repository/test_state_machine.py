"""Random sequences of backup / delete / sweep / simulated crash keep the audit clean.

After every step the mark-and-sweep audit (which also proves usage and every refcount
exact) finds nothing, and every complete backup restores bit-exact.
"""

from __future__ import annotations

import io
import itertools
import os
import pathlib
import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from csbs.blobstore import LocalStore, StoreUnavailable
from csbs.domain.clock import FrozenClock
from csbs.repository import Repository, errors
from tests.repository.conftest import SMALL_CHUNK, RepoFactory

_BLOCKS = [bytes(SMALL_CHUNK)] + [random.Random(i).randbytes(SMALL_CHUNK) for i in range(5)]
_counter = itertools.count()


class FlakyStore(LocalStore):
    """A local store whose puts start failing after a set number (a crash mid-upload)."""

    puts_left: int | None = None

    def put(self, name: str, data: bytes) -> None:
        if self.puts_left is not None:
            if self.puts_left <= 0:
                raise StoreUnavailable("simulated crash")
            self.puts_left -= 1
        super().put(name, data)


class RepositoryMachine(RuleBasedStateMachine):
    backups = Bundle("backups")

    def __init__(self, make_repo: RepoFactory, root: pathlib.Path, clock: FrozenClock) -> None:
        super().__init__()
        run = next(_counter)
        self.store = FlakyStore(root / f"blobs{run}")
        self.repo: Repository = make_repo(self.store, batch_chunks=3, threads=2)
        self.clock = clock
        self.project = f"p{run}"
        self.image = root / f"image{run}"
        self.complete: dict[str, bytes] = {}  # backup id -> image bytes
        self.started = 0

    def _image(self, slots: list[int], tail: int) -> bytes:
        data = b"".join(_BLOCKS[s] for s in slots) + _BLOCKS[1][:tail]
        self.image.write_bytes(data)
        return data

    @rule(
        target=backups,
        slots=st.lists(st.integers(0, len(_BLOCKS) - 1), min_size=0, max_size=8),
        tail=st.sampled_from([0, 1000]),
    )
    def backup(self, slots: list[int], tail: int) -> str:
        self.started += 1
        backup_id = f"b{self.started}"
        data = self._image(slots, tail)
        self.repo.backup_writer(self.project, backup_id).write_disk("vda", self.image)
        self.repo.seal_backup(self.project, backup_id)
        self.complete[backup_id] = data
        return backup_id

    @rule(
        target=backups,
        slots=st.lists(st.integers(0, len(_BLOCKS) - 1), min_size=1, max_size=8),
        puts=st.integers(0, 3),
        cancel_after=st.integers(1, 8),
        by_cancel=st.booleans(),
    )
    def crashed_backup(
        self, slots: list[int], puts: int, cancel_after: int, by_cancel: bool
    ) -> str:
        self.started += 1
        backup_id = f"b{self.started}"
        self._image(slots, 0)
        calls = 0

        def cancel() -> bool:
            nonlocal calls
            calls += 1
            return by_cancel and calls > cancel_after

        if not by_cancel:
            self.store.puts_left = puts
        try:
            self.repo.backup_writer(self.project, backup_id, cancel=cancel).write_disk(
                "vda", self.image
            )
        except (errors.Cancelled, StoreUnavailable):
            pass
        finally:
            self.store.puts_left = None
        # Left open (as after a crash) or even complete: either way it must be deletable.
        return backup_id

    @rule(backup_id=consumes(backups))
    def delete(self, backup_id: str) -> None:
        self.repo.delete_backup(self.project, backup_id)
        self.complete.pop(backup_id, None)

    @rule(backup_id=backups, batches=st.integers(0, 2))
    def interrupted_delete(self, backup_id: str, batches: int) -> None:
        """A deletion that stops (crashes) after some batches; it is resumed later."""
        done = 0

        def cancel() -> bool:
            return done >= batches

        def progress(_: object) -> None:
            nonlocal done
            done += 1

        self.complete.pop(backup_id, None)
        try:
            self.repo.delete_backup(self.project, backup_id, progress, cancel)
        except errors.Cancelled:
            pass

    @rule(advance=st.sampled_from([0, 30, 61]))
    def sweep(self, advance: int) -> None:
        self.clock.advance(advance)
        self.repo.sweep(self.project)

    @invariant()
    def audit_is_clean_and_backups_restore(self) -> None:
        if not self.started:
            return
        report = self.repo.check(self.project)
        assert report.ok, report
        for backup_id, data in self.complete.items():
            out = io.BytesIO()
            self.repo.restore(self.project, backup_id, "vda", out)
            assert out.getvalue() == data


@pytest.mark.slow
def test_random_operations_keep_the_repository_exact(
    make_repo: RepoFactory, tmp_path: pathlib.Path, clock: FrozenClock
) -> None:
    run_state_machine_as_test(
        lambda: RepositoryMachine(make_repo, tmp_path, clock),
        settings=settings(
            max_examples=int(os.environ.get("CSBS_TEST_REPO_EXAMPLES", "40")),
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
