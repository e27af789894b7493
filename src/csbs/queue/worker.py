"""The worker: claims tasks within the admission limits, runs handlers, keeps leases alive.

One dispatcher thread claims while slots are free, one thread per running task runs its
handler, and one monitor thread sends heartbeats (of its tasks' leases and of the worker
itself, `registry.py`), enforces deadlines, reaps the tasks of dead workers, fails the tasks
routed to a host that has had no live worker for `start_deadline_seconds` and prunes ended
tasks past their retention. Database faults are waited out: every call to the store is retried with
back-off, and a finish that cannot be recorded before the lease runs out is left to the
reaper (the handler is idempotent by contract, so a second run is safe).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
import sqlalchemy.exc

from csbs.domain import errors
from csbs.domain.clock import Clock
from csbs.domain.ids import new_hex_id
from csbs.domain.operations import TaskStatus
from csbs.queue import wake
from csbs.queue.context import CancelReason, RetryLater, TaskCancelled, TaskContext
from csbs.queue.jobs import Task, error_info
from csbs.queue.lifecycle import Hook
from csbs.queue.notify import Listener
from csbs.queue.registry import Registration
from csbs.queue.store import TaskStore

log = logging.getLogger("csbs.queue")
T = TypeVar("T")

#: Idle workers look for work at least this often even without a notification.
IDLE_POLL_SECONDS = 1.0
#: Progress is written at most this often per task.
REPORT_INTERVAL_SECONDS = 0.5
#: Ended tasks are pruned at most this often by one worker.
PRUNE_INTERVAL_SECONDS = 600.0
#: A worker holding back for a busy API looks again this often (it may have gone quiet).
_BUSY_RECHECK_SECONDS = 0.05
_TRANSIENT = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    errors.ServiceUnavailable,
)


def _transient(e: BaseException) -> bool:
    """Whether `e`, or an error it was raised from, says the database is unreachable."""
    seen: BaseException | None = e
    for _ in range(8):  # a short chain: `raise X from db_error`, perhaps twice
        if seen is None:
            return False
        if isinstance(seen, _TRANSIENT):
            return True
        seen = seen.__cause__
    return False


def internal_error(task_id: str) -> dict[str, str]:
    """The error a task records for a failure that is not the caller's to read in detail."""
    return error_info(
        "CSBS.9999",
        f"The operation failed on an internal error; the service's log has the details "
        f"under operation log {task_id}.",
    )


class Handler(Protocol):
    """Runs one operation type. `run` must be idempotent; the hooks run inside the queue's
    transaction that starts or ends the task, for state that must change in the same commit.
    """

    def run(self, ctx: TaskContext) -> Mapping[str, Any] | None: ...

    def on_start(self, conn: sa.Connection, task: Task) -> None: ...

    def on_end(self, conn: sa.Connection, task: Task) -> None: ...


class FunctionHandler:
    """A handler made of a function, with no hooks."""

    def __init__(self, fn: Callable[[TaskContext], Mapping[str, Any] | None]) -> None:
        self._fn = fn

    def run(self, ctx: TaskContext) -> Mapping[str, Any] | None:
        return self._fn(ctx)

    def on_start(self, conn: sa.Connection, task: Task) -> None:
        return None

    def on_end(self, conn: sa.Connection, task: Task) -> None:
        return None


@dataclasses.dataclass
class _Running:
    task: Task
    ctx: TaskContext
    extra: dict[str, Any]
    progress: int = 0
    #: Progress is written at most every REPORT_INTERVAL_SECONDS, the first time that long
    #: after the claim: a task shorter than that (most deletions) writes it only with its
    #: outcome, one transaction instead of two.
    last_report: float = dataclasses.field(default_factory=time.monotonic)
    cancelled_at: float | None = None
    #: Set once the outcome is recorded (or the task is known lost); guarded by the lock.
    settled: bool = False
    thread: threading.Thread | None = None


class Worker:
    def __init__(
        self,
        store: TaskStore,
        handlers: Mapping[str, Handler],
        *,
        clock: Clock,
        concurrency: int = 4,
        host: str | None = None,
        deadline_grace: float = 10.0,
        reap_interval: float | None = None,
        idle_poll: float = IDLE_POLL_SECONDS,
        api_busy: Callable[[], bool] | None = None,
        busy_claim_interval: float = 0.25,
        version: str = "",
    ) -> None:
        self.store = store
        self.handlers = dict(handlers)
        self.clock = clock
        self.concurrency = concurrency
        self.host = host or socket.gethostname()
        # The id is a lease owner (64 characters at most): a long host name is cut.
        self.worker_id = f"{self.host[:40]}:{os.getpid()}:{new_hex_id()[:8]}"
        self.registration = Registration(
            worker_id=self.worker_id,
            host=self.host,
            version=version,
            pid=os.getpid(),
            slots=concurrency,
        )
        self.deadline_grace = deadline_grace
        self.idle_poll = idle_poll
        #: While this says the API beside the worker is answering calls, the worker starts
        #: at most one task per `busy_claim_interval` seconds (running tasks go on).
        self.api_busy = api_busy if busy_claim_interval > 0 else None
        self.busy_claim_interval = busy_claim_interval
        self._last_busy_claim = -busy_claim_interval
        lease = store.config.lease_seconds
        self.heartbeat_interval = max(0.05, lease / 3)
        self.reap_interval = reap_interval if reap_interval is not None else max(0.1, lease / 2)
        #: The worker's own heartbeat, and the look for tasks no live worker can take.
        self.presence_interval = max(0.05, store.config.worker_stale_seconds / 4)
        self.prune_interval = PRUNE_INTERVAL_SECONDS
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._monitor_stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Woken by other processes' enqueues: NOTIFY on PostgreSQL, a socket on SQLite.
        self._listener: Listener | wake.SocketListener | None = (
            Listener(store.engine, self._wake, self.host)
            if store.is_postgres
            else wake.listener_for(store.engine, self._wake, self.host)
        )

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        # Registered before the first claim: a task routed to this host is not failed for
        # want of a worker once this one may take it.
        self._call(lambda: self.store.workers.register(self.registration), give_up_after=30)
        self.store.add_local_waker(self._wake, self.host)
        if self._listener is not None:
            self._listener.start()
        for target, name in ((self._dispatch, "dispatch"), (self._monitor, "monitor")):
            t = threading.Thread(target=target, name=f"csbs-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info(
            "worker started",
            extra={
                "worker_id": self.worker_id,
                "types": sorted(self.handlers),
                "yields_to_api": self.api_busy is not None,
            },
        )

    def stop(self, grace: float = 30.0) -> None:
        """Stop claiming; let running tasks finish for up to `grace` seconds; hand back the rest."""
        self._stopping.set()
        self._wake.set()
        self._threads[0].join(timeout=10)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self._active():
            time.sleep(0.05)
        leftovers = self._active()
        for run in leftovers:
            run.ctx.cancel(CancelReason.SHUTDOWN)
        for run in leftovers:
            if run.thread is not None:
                run.thread.join(timeout=5)
        still = self._active()
        if still:
            with self._lock:
                for r in still:
                    r.settled = True
            self._call(
                lambda: self.store.hand_back(self.worker_id, [r.task.id for r in still]),
                give_up_after=10,
            )
        self._monitor_stop.set()
        for t in self._threads[1:]:
            t.join(timeout=10)
        if self._listener is not None:
            self._listener.stop()
        self.store.remove_local_waker(self._wake)
        self._call(lambda: self.store.workers.leave(self.worker_id), give_up_after=5)
        log.info("worker stopped", extra={"worker_id": self.worker_id, "handed_back": len(still)})

    def _active(self) -> list[_Running]:
        with self._lock:
            return [r for r in self._running.values() if not r.settled]

    # -- claiming ---------------------------------------------------------------------------

    def _dispatch(self) -> None:
        types = sorted(self.handlers)
        while not self._stopping.is_set():
            free = self.concurrency - len(self._running_snapshot())
            claimed: list[Task] = []
            holding_back = False
            if free > 0 and self.api_busy is not None and self.api_busy():
                # Calls are being answered: they go first. One task per interval still
                # starts, so a service that is never idle still runs its tasks.
                wait = self._last_busy_claim + self.busy_claim_interval - time.monotonic()
                if wait > 0:
                    self._stopping.wait(min(wait, _BUSY_RECHECK_SECONDS))
                    continue
                free = 1
                holding_back = True
            if free > 0:
                try:
                    claimed = self.store.claim_many(
                        self.worker_id, self.host, types, free, self._start_hook
                    )
                except _TRANSIENT as e:
                    log.warning("claim failed, database unavailable: %s", type(e).__name__)
                    self._stopping.wait(1.0)
                    continue
                except Exception:
                    log.exception("claim failed")
                    self._stopping.wait(1.0)
                    continue
                if holding_back:
                    # The interval runs from this claim's end: a slow claim does not let
                    # the next task start sooner after this one.
                    self._last_busy_claim = time.monotonic()
                for task in claimed:
                    self._launch(task)
            if not claimed or len(claimed) < free:
                self._wake.wait(self.idle_poll)
                self._wake.clear()

    def _running_snapshot(self) -> list[_Running]:
        with self._lock:
            return list(self._running.values())

    def _start_hook(self, operation_type: str) -> Hook | None:
        return self.handlers[operation_type].on_start

    def _end_hook(self, operation_type: str) -> Hook | None:
        handler = self.handlers.get(operation_type)
        return handler.on_end if handler else None

    def _launch(self, task: Task) -> None:
        run = _Running(
            task=task, ctx=TaskContext(task, lambda p, c: None), extra=dict(task.extra_info)
        )
        run.extra.pop("queue_position", None)
        run.ctx = TaskContext(task, lambda percent, counters: self._report(run, percent, counters))
        thread = threading.Thread(
            target=self._execute, args=(run,), name=f"csbs-task-{task.id[:8]}", daemon=True
        )
        run.thread = thread
        with self._lock:
            self._running[task.id] = run
        deadline = task.deadline_at
        if deadline is not None and self.clock.now() >= deadline:
            # Claimed after its deadline (e.g. resumed after a crash): stop at the first check.
            run.cancelled_at = time.monotonic()
            run.ctx.cancel(CancelReason.DEADLINE)
        log.info(
            "task started",
            extra={
                "task_id": task.id,
                "operation_type": task.operation_type,
                "project_id": task.project_id,
                "attempt": task.attempts,
            },
        )
        thread.start()

    # -- running ----------------------------------------------------------------------------

    def _report(self, run: _Running, percent: int | None, counters: dict[str, Any]) -> None:
        if percent is not None:
            run.progress = max(0, min(100, int(percent)))
            run.extra["progress"] = run.progress
        run.extra.update(counters)
        now = time.monotonic()
        if now - run.last_report < REPORT_INTERVAL_SECONDS:
            return
        run.last_report = now
        try:
            owned = self.store.report(run.task, self.worker_id, run.progress, run.extra)
        except _TRANSIENT:
            return  # progress is best effort; the outcome is not
        if not owned:
            run.ctx.cancel(CancelReason.LEASE_LOST)

    def _execute(self, run: _Running) -> None:
        task = run.task
        handler = self.handlers[task.operation_type]
        try:
            result = handler.run(run.ctx)
            if result:
                run.extra.update(result)
            run.extra["progress"] = 100
            self._settle(run, TaskStatus.SUCCESS, progress=100)
        except TaskCancelled as e:
            self._cancelled(run, e.reason)
        except RetryLater as e:
            if task.failures < task.max_attempts:
                self._settle_retry(run, e.delay, error_info("CSBS.9998", str(e)))
            else:
                self._settle(run, TaskStatus.FAILED, error=error_info("CSBS.9998", str(e)))
        except Exception as e:
            if _transient(e):
                # The database went away under the task: no fault of the task's. It runs
                # again once the database answers (resuming where its handler can), and
                # the attempt does not count toward max_attempts; its deadline still holds.
                log.warning(
                    "task interrupted, database unavailable: %s",
                    type(e).__name__,
                    extra={"task_id": task.id},
                )
                self._settle_retry(
                    run,
                    None,
                    error_info("CSBS.9998", "The service's database was unavailable; retrying."),
                    interrupted=True,
                )
            elif isinstance(e, errors.CsbsError):
                self._settle(run, TaskStatus.FAILED, error=error_info(e.code, e.message))
            else:
                # The detail (driver text, file names) is for the service's log only:
                # tenants read this message in the task and in the backup's fail_reason.
                log.exception("task handler failed", extra={"task_id": task.id})
                self._settle(run, TaskStatus.FAILED, error=internal_error(task.id))
        finally:
            with self._lock:
                self._running.pop(task.id, None)
            self._wake.set()

    def _cancelled(self, run: _Running, reason: CancelReason) -> None:
        if reason is CancelReason.DEADLINE:
            self._settle(
                run,
                TaskStatus.TIMEOUT,
                error=error_info(
                    "CSBS.9999",
                    f"The task did not finish within {run.task.deadline_seconds:g} seconds.",
                ),
            )
        elif reason is CancelReason.REQUESTED:
            self._settle(
                run, TaskStatus.FAILED, error=error_info("CSBS.9999", "The task was cancelled.")
            )
        elif reason is CancelReason.SHUTDOWN:
            with self._lock:
                if run.settled:
                    return
                run.settled = True
            self._call(
                lambda: self.store.hand_back(self.worker_id, [run.task.id]),
                give_up_after=self.store.config.lease_seconds,
            )
        # LEASE_LOST: someone else owns the task now; record nothing.

    def _settle(
        self,
        run: _Running,
        status: TaskStatus,
        *,
        progress: int | None = None,
        error: Mapping[str, Any] | None = None,
    ) -> None:
        with self._lock:
            if run.settled:
                return
            run.settled = True
        if error is not None:
            run.extra.pop("queue_position", None)
        hook = self._end_hook(run.task.operation_type)

        def record() -> bool:
            try:
                return self.store.finish(
                    run.task,
                    self.worker_id,
                    status,
                    progress=progress,
                    extra_info=run.extra,
                    error=error,
                    on_end=hook,
                )
            except _TRANSIENT:
                raise
            except Exception:
                # The end hook failed: record the failure without it rather than never.
                log.exception("task end hook failed", extra={"task_id": run.task.id})
                return self.store.finish(
                    run.task,
                    self.worker_id,
                    TaskStatus.FAILED,
                    extra_info=run.extra,
                    error=error_info("CSBS.9999", "Recording the task's outcome failed."),
                )

        recorded = self._call(record, give_up_after=self.store.config.lease_seconds * 2)
        log.info(
            "task ended",
            extra={
                "task_id": run.task.id,
                "status": status.value,
                "recorded": bool(recorded),
                "error": error,
            },
        )

    def _settle_retry(
        self,
        run: _Running,
        delay: float | None,
        error: Mapping[str, Any],
        *,
        interrupted: bool = False,
    ) -> None:
        with self._lock:
            if run.settled:
                return
            run.settled = True
        self._call(
            lambda: self.store.retry(
                run.task, self.worker_id, delay=delay, error=error, interrupted=interrupted
            ),
            give_up_after=self.store.config.lease_seconds,
        )

    def _call(self, fn: Callable[[], T], *, give_up_after: float) -> T | None:
        """Call `fn`, retrying while the database is unavailable, for up to `give_up_after` s."""
        deadline = time.monotonic() + give_up_after
        delay = 0.1
        while True:
            try:
                return fn()
            except _TRANSIENT as e:
                if time.monotonic() + delay > deadline:
                    log.error("database unavailable for too long; leaving it to the reaper: %s", e)
                    return None
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    # -- heartbeats, deadlines, reaping -----------------------------------------------------

    def _monitor(self) -> None:
        last_beat = last_reap = last_presence = 0.0
        last_prune = time.monotonic() - self.prune_interval / 2  # not all at one start
        tick = min(0.25, self.heartbeat_interval, self.presence_interval)
        while not self._monitor_stop.wait(tick):
            now = time.monotonic()
            self._enforce_deadlines()
            if now - last_beat >= self.heartbeat_interval:
                last_beat = now
                self._heartbeat()
            if now - last_presence >= self.presence_interval and not self._stopping.is_set():
                last_presence = now
                self._housekeeping(prune=now - last_prune >= self.prune_interval)
                if now - last_prune >= self.prune_interval:
                    last_prune = now
            if now - last_reap >= self.reap_interval and not self._stopping.is_set():
                last_reap = now
                try:
                    if self.store.reap(sorted(self.handlers), self._end_hook):
                        self._wake.set()
                except _TRANSIENT:
                    pass
                except Exception:
                    log.exception("reaping failed")

    def _housekeeping(self, *, prune: bool) -> None:
        """The worker's own heartbeat; tasks routed to a host without a live worker past
        their start deadline fail; now and then, ended tasks past retention go."""
        store = self.store
        try:
            store.workers.beat(self.registration, running=len(self._active()))
            live = store.workers.live_hosts() | {self.host}
            store.fail_unserved(live, sorted(self.handlers), self._end_hook)
            if prune:
                pruned = store.prune()
                forgotten = store.workers.forget_dead()
                if pruned or forgotten:
                    log.info("pruned", extra={"tasks": pruned, "workers": forgotten})
        except _TRANSIENT as e:
            log.warning("housekeeping failed, database unavailable: %s", type(e).__name__)
        except Exception:
            log.exception("housekeeping failed")

    def _heartbeat(self) -> None:
        runs = self._active()
        if not runs:
            return
        try:
            alive = self.store.heartbeat(self.worker_id, [r.task.id for r in runs])
        except _TRANSIENT as e:
            log.warning("heartbeat failed, database unavailable: %s", type(e).__name__)
            return
        for run in runs:
            if run.task.id not in alive:
                with self._lock:
                    if run.settled:
                        continue
                    run.settled = True
                log.warning("lease lost", extra={"task_id": run.task.id})
                run.ctx.cancel(CancelReason.LEASE_LOST)
            elif alive[run.task.id]:
                run.ctx.cancel(CancelReason.REQUESTED)

    def _enforce_deadlines(self) -> None:
        now = self.clock.now()
        for run in self._active():
            deadline = run.task.deadline_at
            if deadline is None or now < deadline:
                continue
            if run.cancelled_at is None:
                run.cancelled_at = time.monotonic()
                run.ctx.cancel(CancelReason.DEADLINE)
            elif time.monotonic() - run.cancelled_at > self.deadline_grace:
                # The handler ignores cancellation: record the timeout without it.
                self._cancelled(run, CancelReason.DEADLINE)
