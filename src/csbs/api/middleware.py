"""Per-request context: request id, draining, body limit, last-resort errors, one log line.

A pure ASGI middleware, so it wraps every response: even a failure deep inside the app
leaves as a JSON body carrying the request id, never as a traceback.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from sqlalchemy import exc as sa_exc
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from csbs.api import errors as api_errors
from csbs.api.edge import CallCounter, Lifecycle
from csbs.api.metrics import ApiMetrics

log = logging.getLogger("csbs.api.request")
_PROJECT_RE = re.compile(r"^/v1/([^/]+)")
#: Paths that answer even while draining, so a load balancer can see the state.
_ALWAYS_OPEN = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        lifecycle: Lifecycle,
        activity: CallCounter,
        max_body_bytes: int,
        metrics: ApiMetrics,
    ) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.activity = activity
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        request_id = f"req-{uuid.uuid4()}"
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope.get("path", "")
        status_holder = {"status": 500, "started": False}
        # Probes and scrapes are not callers: they do not hold back the embedded worker.
        counted = path not in _ALWAYS_OPEN
        if counted:
            self.activity.call_started()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.append((b"x-openstack-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if self.lifecycle.draining and path not in _ALWAYS_OPEN:
                await self._send_error(
                    send_wrapper,
                    path,
                    503,
                    "CSBS.9998",
                    "The service is shutting down; retry.",
                    {"retry-after": "5"},
                )
                return
            body_receive = await self._buffer_body(scope, receive)
            if body_receive is None:
                await self._send_error(
                    send_wrapper,
                    path,
                    413,
                    "CSBS.9001",
                    f"The request body exceeds {self.max_body_bytes} bytes.",
                    {},
                )
                return
            await self.app(scope, body_receive, send_wrapper)
        except Exception as e:
            if isinstance(e, sa_exc.OperationalError | sa_exc.InterfaceError):
                log.warning("database unavailable: %s", type(e).__name__)
                if not status_holder["started"]:
                    await self._send_error(
                        send_wrapper,
                        path,
                        503,
                        "CSBS.9998",
                        "The metadata database is unavailable.",
                        {"retry-after": "5"},
                    )
            else:
                log.exception("unhandled error", extra={"request_id": request_id})
                if not status_holder["started"]:
                    resp = api_errors.internal_error_response(request_id, path)
                    await resp(scope, receive, send_wrapper)
        finally:
            if counted:
                self.activity.call_ended()
            duration = time.monotonic() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            status = int(status_holder["status"])
            self.metrics.observe(scope.get("method", ""), template, status, duration)
            m = _PROJECT_RE.match(path)
            log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope.get("method"),
                    "path": path,
                    "route": template,
                    "status": status,
                    "duration_ms": round(duration * 1000, 2),
                    "project_id": m.group(1) if m else None,
                },
            )

    async def _buffer_body(self, scope: Scope, receive: Receive) -> Receive | None:
        """Read the body up to the limit and replay it; None when it is over the limit."""
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_body_bytes:
                    return None
            except ValueError:
                return None
        if scope.get("method") in ("GET", "HEAD", "OPTIONS") and declared is None:
            return receive
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return receive
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body_bytes:
                return None
            chunks.append(body)
            more = message.get("more_body", False)
        payload = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": payload, "more_body": False}
            return await receive()

        return replay

    @staticmethod
    async def _send_error(
        send: Send,
        path: str,
        status: int,
        code: str,
        message: str,
        extra_headers: dict[str, str],
    ) -> None:
        body = json.dumps(api_errors.error_body(status, code, message, path)).encode()
        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        headers += [(k.encode(), v.encode()) for k, v in extra_headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
