"""Settings: one validated object, built once at start-up and passed down explicitly.

Sources, highest precedence first: constructor arguments (the CLI's flags), environment
variables `CSBS_*`, the TOML file named by `CSBS_CONFIG_FILE` (if any), the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from csbs import control
from csbs.repository.index import RELEASE_REFS

DEFAULT_PORT = 8799


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "csbs"


class Settings(BaseSettings):
    """Everything an operator can set. See README "Configuration" for the list."""

    model_config = SettingsConfigDict(env_prefix="CSBS_", extra="ignore", frozen=True)

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    public_url: str | None = None
    region: str = "RegionOne"

    admin_password: SecretStr | None = None
    token_ttl_seconds: int = Field(default=24 * 3600, gt=0)
    #: Validated tokens are remembered this long per process (0: every call asks the database).
    token_cache_seconds: float = Field(default=5.0, ge=0, le=300)

    master_key: SecretStr | None = None
    master_key_file: Path | None = None
    #: Where backup data goes: file:///abs/path (default <data_dir>/repository) or
    #: s3://bucket/prefix?endpoint_url=...&region=... (credentials from the AWS variables).
    repository_url: str | None = None
    chunk_size: int = Field(default=4 * 1024 * 1024, ge=64 * 1024, le=8 * 1024 * 1024)
    zstd_level: int = Field(default=1, ge=1, le=19)
    sweep_grace_seconds: float = Field(default=900.0, ge=0)
    #: How often the scheduler's leader looks for repositories with chunks to release and
    #: enqueues a maintenance task (a sweep) for each: a deleted backup's space is back
    #: within `sweep_grace_seconds` plus this.
    maintenance_interval_seconds: float = Field(default=300.0, gt=0, le=86400)
    #: Chunk references a deletion releases per transaction (whole reference batches, at
    #: least one): fewer commits against a shorter step to redo after a crash. The default
    #: is the repository's own (`RepositorySettings`), defined once beside the release steps.
    release_refs: int = Field(default=RELEASE_REFS, ge=1, le=1_000_000)

    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    #: Threads of `csbs serve` that run API calls (calls beyond wait their turn, in order).
    api_threads: int = Field(default=8, ge=1, le=256)
    db_connect_timeout_seconds: int = Field(default=3, gt=0)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)

    #: `csbs serve` runs task workers in a child process of its own ...
    embedded_workers: bool = True
    #: ... at this CPU priority (nice increment): on busy cores API calls go first.
    worker_nice: int = Field(default=10, ge=0, le=19)
    #: ... and while the API answers calls, they start at most one task per this many
    #: seconds (0: as many as they have slots), so accepting work goes before doing it.
    worker_busy_claim_seconds: float = Field(default=0.25, ge=0, le=60)
    #: Run the policy scheduler inside `csbs serve` (one instance leads across machines).
    embedded_scheduler: bool = True
    scheduler_tick_seconds: float = Field(default=5.0, gt=0, le=60)
    #: A standby scheduler takes over this long after the leader stopped renewing.
    scheduler_lease_seconds: float = Field(default=30.0, ge=5, le=50)
    worker_concurrency: int = Field(default=4, ge=1)
    worker_host: str | None = None
    #: An idle worker looks for tasks this often; enqueues also wake it at once (a pipe from
    #: `csbs serve`, PostgreSQL's notifications), so this only bounds a missed wake-up.
    worker_idle_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    delete_concurrency_per_project: int = Field(default=5, ge=1)
    backup_concurrency_per_project: int = Field(default=10, ge=1)
    restore_concurrency_per_project: int = Field(default=5, ge=1)
    delete_deadline_seconds: float = Field(default=30 * 60, gt=0)
    backup_deadline_seconds: float = Field(default=24 * 3600, gt=0)
    restore_deadline_seconds: float = Field(default=24 * 3600, gt=0)
    task_lease_seconds: float = Field(default=30.0, gt=0)
    task_max_attempts: int = Field(default=5, ge=1)

    #: Default quotas of a project an admin set none for; -1 = unlimited (spec §4.15).
    quota_backups: int = Field(default=600, ge=-1, le=2**31 - 1)
    quota_capacity_gb: int = Field(default=-1, ge=-1, le=2**31 - 1)

    #: Where disks may live: paths separated by ':' (default: <data_dir>/disks).
    inventory_roots: str | None = None

    #: The host's libvirt, whose domains a worker keeps in the inventory as servers of its
    #: host: `auto` (qemu:///system where libvirt answers, none where not), `off`, or a URI.
    libvirt_uri: str = Field(default="auto", min_length=1)
    #: A worker lists its libvirt's domains at once on a domain event and at least this
    #: often, so a removed or changed domain is followed within this bound.
    libvirt_resync_seconds: float = Field(default=5.0, gt=0, le=10)

    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.chunk_size & (self.chunk_size - 1):
            raise ValueError("chunk_size must be a power of two")
        if self.database_url is not None and not (
            self.database_url.startswith("sqlite") or self.database_url.startswith("postgresql")
        ):
            raise ValueError("database_url must be a sqlite:// or postgresql:// URL")
        return self

    @property
    def effective_database_url(self) -> str:
        """The database URL, defaulting to an SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'csbs.db'}"

    @property
    def control_socket(self) -> Path:
        """Where `csbs serve` answers the command line of this machine (decision 0018)."""
        return control.socket_path(self.data_dir, self.effective_database_url)

    @property
    def effective_repository_url(self) -> str:
        return self.repository_url or f"file://{self.data_dir / 'repository'}"

    @property
    def effective_inventory_roots(self) -> list[Path]:
        """The directories disk paths must lie under."""
        if not self.inventory_roots:
            return [self.data_dir / "disks"]
        return [Path(p).expanduser().absolute() for p in self.inventory_roots.split(":") if p]

    @property
    def effective_master_key_file(self) -> Path:
        """Where the master key lives when it is not given inline."""
        return self.master_key_file or (self.data_dir / "master.key")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("CSBS_CONFIG_FILE")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment and optional config file, with explicit overrides.

    Overrides whose value is None are dropped, so CLI flags that were not given fall through
    to the environment.
    """
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
