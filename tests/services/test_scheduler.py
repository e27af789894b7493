"""The scheduler: one leader, exactly-once slots, missed slots once, skips recorded."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from csbs.db import tables
from csbs.domain.backups import BackupFilter, BackupStatus
from csbs.domain.clock import FrozenClock
from csbs.domain.paging import PageRequest
from csbs.services.backups import ProtectRequest
from csbs.services.inventory import DiskSpec
from csbs.services.policies import OperationSpec, PolicySpec, ResourceSpec
from csbs.services.scheduler import Scheduler
from tests.support.runtime import Env, make_env

START = dt.datetime(2026, 3, 2, 9, 59, 30, tzinfo=dt.UTC)  # a Monday


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Iterator[Env]:
    e = make_env(tmp_path, db_url)
    e.clock._now = START
    yield e
    e.client.close()
    e.runtime.close()


def server(env: Env, pid: str, name: str) -> str:
    root = env.runtime.settings.effective_inventory_roots[0]
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.img"
    with open(path, "wb") as f:
        f.truncate(1 << 20)
    return str(env.services.inventory.add_server(pid, name, [DiskSpec(str(path))]).id)


def policy(
    env: Env, pid: str, name: str, servers: list[str], rrule: str, enabled: bool = True
) -> str:
    pattern = f"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:{rrule}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    return env.services.policies.create(
        pid,
        PolicySpec(
            name=name,
            resources=[ResourceSpec(s, "OS::Nova::Server", s) for s in servers],
            operation=OperationSpec(
                enabled=enabled, operation_type="backup", definition={}, pattern=pattern
            ),
        ),
    ).id


def runs_of(env: Env) -> list[tables.PolicyRun]:
    with env.services.db.read() as s:
        return list(s.scalars(sa.select(tables.PolicyRun).order_by(tables.PolicyRun.slot_at)))


def scheduler(env: Env, holder: str) -> Scheduler:
    return Scheduler(
        env.services.db, env.services.clock, env.services.policies, lease_seconds=30, holder=holder
    )


def test_two_schedulers_racing_fire_every_slot_once(env: Env) -> None:
    pid = env.project_id("admin")
    expected = {}
    for minute in range(10):
        sid = server(env, pid, f"s{minute}")
        pid_ = policy(env, pid, f"p{minute}", [sid], f"FREQ=DAILY;BYHOUR=10;BYMINUTE={minute}")
        expected[pid_] = dt.datetime(2026, 3, 2, 10, minute, tzinfo=dt.UTC)
    a, b = scheduler(env, "a"), scheduler(env, "b")
    policies = env.services.policies
    clock: FrozenClock = env.clock
    for _ in range(4 * 11):  # 11 minutes in 15-second steps
        # Both schedulers tick at once, and both also fire as if each believed it led:
        # leadership saves work, the compare-and-set on the next run makes it exactly once.
        threads = [
            threading.Thread(target=a.tick),
            threading.Thread(target=b.tick),
            threading.Thread(target=policies.fire_due),
            threading.Thread(target=policies.fire_due),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        clock.advance(15)
    runs = runs_of(env)
    assert sorted((r.policy_id, r.slot_at) for r in runs) == sorted(expected.items())
    assert all(r.trigger == "schedule" and r.checkpoint_id for r in runs)
    # One backup per slot, made by the policy, named like CSBS names scheduled backups.
    backups = env.services.backups.search(BackupFilter(project_id=pid), PageRequest()).items
    assert len(backups) == 10
    assert all(b.name.startswith("autobk_") and b.auto_trigger for b in backups)
    assert {b.plan_id for b in backups} == set(expected)
    assert a.leading != b.leading  # exactly one of them leads


def test_standby_takes_over_when_the_leader_dies(env: Env) -> None:
    a, b = scheduler(env, "a"), scheduler(env, "b")
    assert a.lead() and not b.lead()
    env.clock.advance(20)
    assert a.lead() and not b.lead()  # renewed
    env.clock.advance(31)  # a died: no renewal for longer than the lease
    assert b.lead() and not a.lead()
    b.stop()  # a clean stop hands over at once
    assert a.lead()


def test_missed_slots_run_once_after_downtime(env: Env) -> None:
    pid = env.project_id("admin")
    sid = server(env, pid, "web")
    pol = policy(env, pid, "p", [sid], "FREQ=DAILY;BYHOUR=2;BYMINUTE=0")
    env.clock.advance(3 * 86400)  # down for three days: three slots missed
    fired = env.services.policies.fire_due()
    assert len(fired) == 1 and fired[0].slot_at == dt.datetime(2026, 3, 3, 2, 0, tzinfo=dt.UTC)
    assert env.services.policies.fire_due() == []
    nxt = env.services.policies.get(pid, pol).next_run_at
    assert nxt == dt.datetime(2026, 3, 6, 2, 0, tzinfo=dt.UTC)  # the next one after now


def test_busy_server_is_skipped_and_recorded(env: Env) -> None:
    pid = env.project_id("admin")
    busy, free = server(env, pid, "busy"), server(env, pid, "free")
    pol = policy(env, pid, "p", [busy, free], "FREQ=DAILY;BYHOUR=10;BYMINUTE=0")
    _cp, manual = env.services.backups.protect(pid, ProtectRequest(busy))
    assert manual.status is BackupStatus.PROTECTING
    env.clock.advance(60)
    (run,) = env.services.policies.fire_due()
    assert run.policy_id == pol and run.checkpoint_id is not None
    assert [x["server_id"] for x in run.skipped] == [busy]
    assert run.skipped[0]["code"] == "CSBS.1001" and "still running" in run.skipped[0]["reason"]
    made = env.services.backups.search(BackupFilter(checkpoint_id=run.checkpoint_id), PageRequest())
    assert [b.resource_id for b in made.items] == [free]
    assert env.services.policies.runs(pid, pol)[0].skipped == run.skipped


def test_disabled_policy_never_fires_until_enabled(env: Env) -> None:
    pid = env.project_id("admin")
    sid = server(env, pid, "web")
    pol = policy(env, pid, "p", [sid], "FREQ=DAILY;BYHOUR=10;BYMINUTE=0", enabled=False)
    env.clock.advance(2 * 86400)
    assert env.services.policies.fire_due() == []
    op_id = env.services.policies.get(pid, pol).operation.id
    p = env.services.policies.update(
        pid, pol, PolicySpec(operation=OperationSpec(id=op_id, enabled=True))
    )
    assert p.status == "enabled"
    assert p.next_run_at == dt.datetime(2026, 3, 4, 10, 0, tzinfo=dt.UTC)
    env.clock.advance(86400)
    assert len(env.services.policies.fire_due()) == 1


def test_slot_over_quota_is_skipped_with_the_quota_code(env: Env) -> None:
    pid = env.project_id("admin")
    s1 = server(env, pid, "web")
    pol = policy(env, pid, "p", [s1], "FREQ=DAILY;BYHOUR=10;BYMINUTE=0")
    env.services.quotas.set(pid, backups=0)
    env.clock.advance(60)
    (run,) = env.services.policies.fire_due()
    assert run.checkpoint_id is None
    assert run.skipped == (
        {"server_id": s1, "code": "CSBS.9006", "reason": run.skipped[0]["reason"]},
    )
    assert "backups" in run.skipped[0]["reason"]
    # The slot is spent all the same: the next one is tomorrow's.
    assert env.services.policies.get(pid, pol).next_run_at == dt.datetime(
        2026, 3, 3, 10, 0, tzinfo=dt.UTC
    )


def test_a_failing_policy_does_not_hold_up_the_others(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = env.project_id("admin")
    bad = policy(env, pid, "bad", [server(env, pid, "a")], "FREQ=DAILY;BYHOUR=10;BYMINUTE=0")
    good = policy(env, pid, "good", [server(env, pid, "b")], "FREQ=DAILY;BYHOUR=10;BYMINUTE=0")
    service = env.services.policies
    real = service._fire

    def fire(policy_id: str, due_at: dt.datetime) -> object:
        if policy_id == bad:
            raise OSError("the repository is away")
        return real(policy_id, due_at)

    monkeypatch.setattr(service, "_fire", fire)
    env.clock.advance(60)
    assert [r.policy_id for r in service.fire_due()] == [good]
    monkeypatch.setattr(service, "_fire", real)
    assert [r.policy_id for r in service.fire_due()] == [bad]  # tried again, then fired


def test_a_slot_that_already_fired_is_not_fired_again(env: Env) -> None:
    pid = env.project_id("admin")
    pol = policy(env, pid, "p", [server(env, pid, "a")], "FREQ=DAILY;BYHOUR=10;BYMINUTE=0")
    env.clock.advance(60)
    (run,) = env.services.policies.fire_due()
    # An update on a node whose clock lags puts the slot that just ran back as the next run.
    with env.services.db.write() as s:
        s.execute(
            sa.update(tables.Policy).where(tables.Policy.id == pol).values(next_run_at=run.slot_at)
        )
    assert env.services.policies.fire_due() == []
    assert len(runs_of(env)) == 1
    assert env.services.policies.get(pid, pol).next_run_at == dt.datetime(
        2026, 3, 3, 10, 0, tzinfo=dt.UTC
    )


def test_two_policies_taking_one_server_at_once(env: Env) -> None:
    """Concurrent updates associating the same server: one wins, the other gets CSBS.6004."""
    from csbs.domain.policies import ServerInPolicy

    pid = env.project_id("admin")
    shared = server(env, pid, "shared")
    ids = [policy(env, pid, f"p{i}", [], "FREQ=DAILY;BYHOUR=10;BYMINUTE=0") for i in range(2)]
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def associate(policy_id: str) -> None:
        barrier.wait()
        try:
            env.services.policies.update(
                pid,
                policy_id,
                PolicySpec(resources=[ResourceSpec(shared, "OS::Nova::Server", "shared")]),
            )
            outcomes.append("ok")
        except Exception as e:
            outcomes.append(e)

    threads = [threading.Thread(target=associate, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 1, outcomes
    (refused,) = [o for o in outcomes if o != "ok"]
    assert isinstance(refused, ServerInPolicy) and refused.code == "CSBS.6004"
    owners = [env.services.policies.get(pid, i).resources for i in ids]
    assert sorted(len(r) for r in owners) == [0, 1]


def test_the_leader_enqueues_maintenance_once_per_interval(env: Env) -> None:
    """Repository maintenance rides on the scheduler's leadership: once per interval, and
    only on the leader (`csbs serve` builds its scheduler with it)."""
    from csbs import app as composition

    class Maintenance:
        interval = dt.timedelta(seconds=300)
        calls = 0

        def enqueue_due(self) -> list[str]:
            self.calls += 1
            return []

    clock: FrozenClock = env.clock
    leader_m, standby_m = Maintenance(), Maintenance()
    leader = Scheduler(
        env.services.db,
        clock,
        env.services.policies,
        holder="a",
        maintenance=leader_m,  # type: ignore[arg-type]
    )
    standby = Scheduler(
        env.services.db,
        clock,
        env.services.policies,
        holder="b",
        maintenance=standby_m,  # type: ignore[arg-type]
    )
    leader.tick()
    standby.tick()
    leader.tick()
    assert (leader_m.calls, standby_m.calls) == (1, 0)
    clock.advance(299)
    leader.tick()
    assert leader_m.calls == 1
    clock.advance(2)
    leader.tick()
    standby.tick()
    assert (leader_m.calls, standby_m.calls) == (2, 0)
    assert composition.make_scheduler(env.runtime)._maintenance is env.services.maintenance
