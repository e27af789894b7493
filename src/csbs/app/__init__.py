"""The composition root: builds a csbs process from Settings (`build`) and runs it
(`serving`); the worker child of `csbs serve` (`worker_child`) and the count of the API's
calls in flight that it yields to (`activity`).

Only this package and `cli` know every layer; everything below is handed what it needs.
"""

from __future__ import annotations

from csbs.app.build import (
    Runtime,
    build,
    build_repository,
    check_deployment,
    ensure_data_dir,
    make_scheduler,
    make_worker,
    master_key,
    prepare,
    queue_config,
    repository_settings,
    service_files,
)

__all__ = [
    "Runtime",
    "build",
    "build_repository",
    "check_deployment",
    "ensure_data_dir",
    "make_scheduler",
    "make_worker",
    "master_key",
    "prepare",
    "queue_config",
    "repository_settings",
    "service_files",
]
