"""`api_threads`: how many threads run the blocking route functions of `csbs serve`."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anyio.to_thread
from fastapi.testclient import TestClient

from csbs.api.app import create_app
from tests.support.runtime import make_env


def test_route_functions_run_on_at_most_api_threads_threads(tmp_path: Path, db_url: str) -> None:
    env = make_env(tmp_path, db_url, api_threads=3)
    try:
        app = create_app(env.services, env.runtime.edge)
        busy = 0
        most = 0
        lock = threading.Lock()

        def slow() -> dict[str, int]:  # a blocking route, as every csbs route is
            nonlocal busy, most
            with lock:
                busy += 1
                most = max(most, busy)
            time.sleep(0.2)
            with lock:
                busy -= 1
            return {"ok": 1}

        async def tokens() -> dict[str, float]:
            return {"tokens": anyio.to_thread.current_default_thread_limiter().total_tokens}

        app.add_api_route("/probe/slow", slow)
        app.add_api_route("/probe/tokens", tokens)
        with TestClient(app) as client:  # runs the lifespan, as uvicorn does
            answers: list[int] = []
            callers = [
                threading.Thread(
                    target=lambda: answers.append(client.get("/probe/slow").json()["ok"])
                )
                for _ in range(8)
            ]
            for t in callers:
                t.start()
            for t in callers:
                t.join()
            assert client.get("/probe/tokens").json() == {"tokens": 3}
        assert answers == [1] * 8
        assert most == 3  # 8 calls at once, never more than 3 running
    finally:
        env.client.close()
        env.runtime.close()
