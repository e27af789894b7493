"""Property-based requests from our own OpenAPI document: no input gets a 5xx."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csbs.api.app import create_app
from tests.support.runtime import Env


def test_no_server_errors_on_any_route(env: Env) -> None:
    app = create_app(env.services, env.runtime.edge)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    token = env.admin_token()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    seen: set[str] = set()

    for operation in operations:

        @given(case=operation.as_strategy(), with_token=st.booleans())
        @settings(
            max_examples=30,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any, with_token: bool) -> None:
            headers = dict(case.headers or {})
            if with_token:
                headers.setdefault("X-Auth-Token", token)
            response = case.call(headers=headers)
            seen.add(f"{case.method} {case.path}")
            assert response.status_code < 500, (
                case.method,
                case.formatted_path,
                response.status_code,
                response.text,
            )
            if response.content and case.path != "/metrics":
                assert response.headers["content-type"] in (
                    "application/json",
                    ["application/json"],
                )

        run()
    assert len(seen) == len(operations)
