"""Settings: defaults, environment, TOML file and flags, in that order of precedence."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from csbs.config import DEFAULT_PORT, load_settings


def test_defaults_are_embedded(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert s.port == DEFAULT_PORT
    assert s.host == "127.0.0.1"
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'csbs.db'}"
    assert s.delete_concurrency_per_project == 5
    assert s.delete_deadline_seconds == 1800
    assert s.admin_password is None


def test_env_then_file_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "csbs.toml"
    config.write_text('port = 9001\nregion = "eu-1"\ndelete_concurrency_per_project = 3\n')
    monkeypatch.setenv("CSBS_CONFIG_FILE", str(config))
    s = load_settings()
    assert (s.port, s.region, s.delete_concurrency_per_project) == (9001, "eu-1", 3)
    monkeypatch.setenv("CSBS_PORT", "9002")
    assert load_settings().port == 9002
    assert load_settings(port=9003).port == 9003
    assert load_settings(port=None).port == 9002


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSBS_PORT", "seventy")
    with pytest.raises(ValidationError):
        load_settings()
    monkeypatch.delenv("CSBS_PORT")
    with pytest.raises(ValidationError):
        load_settings(database_url="mysql://x")
    with pytest.raises(ValidationError):
        load_settings(delete_concurrency_per_project=0)


def test_secret_is_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSBS_ADMIN_PASSWORD", "hunter2")
    s = load_settings()
    assert s.admin_password is not None
    assert s.admin_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s)
