"""The files of `deploy/` that docs/deployment.md walks through: every unit's command line
is one the real command line accepts, every variable of the example environment files is
a setting (and the values are valid ones), and the walk-through names only files that are
there and commands that parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from csbs.cli.main import app as csbs_app
from csbs.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
GUIDE = ROOT / "docs" / "deployment.md"
UNITS = sorted(DEPLOY.glob("*.service"))
ENV_FILES = sorted(DEPLOY.glob("*.env.example"))
#: Variables the example files may set besides the settings: the settings file, and boto3's.
OTHER_VARIABLES = {"CSBS_CONFIG_FILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


#: typer's usage error (its own copy of click's): a command line the command refuses.
UsageError = typer.BadParameter.__mro__[1]


def parse(argv: list[str]) -> typer.Context:
    """Parse a `csbs` command line as the command would, down to its last command, and
    convert every value, without running it; raises typer's usage errors."""
    command: Any = typer.main.get_command(csbs_app)
    name, parent, args = "csbs", None, list(argv)
    while True:
        ctx = command.make_context(name, args, parent=parent)
        rest = [*ctx._protected_args, *ctx.args]
        if not hasattr(command, "resolve_command") or not rest:
            return ctx  # type: ignore[no-any-return]
        sub_name, sub, args = command.resolve_command(ctx, rest)
        assert sub is not None and sub_name is not None
        name, parent, command = sub_name, ctx, sub


def unit_settings(path: Path) -> dict[str, list[str]]:
    """The `[Service]` keys of a unit file (a key may repeat: EnvironmentFile)."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        if section == "[Service]":
            found.setdefault(key, []).append(value)
    return found


def test_the_parser_refuses_what_the_command_refuses() -> None:
    assert parse(["worker", "--host", "h1", "--concurrency", "2"]).params["host"] == "h1"
    assert parse(["serve", "--port", "80"]).params["port"] == 80
    with pytest.raises(UsageError):
        parse(["worker", "--hots", "h1"])
    with pytest.raises(typer.BadParameter):
        parse(["serve", "--port", "eighty"])
    with pytest.raises(UsageError):
        parse(["schedule"])


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_every_units_command_line_parses_with_the_real_command_line(unit: Path) -> None:
    service = unit_settings(unit)
    (exec_start,) = service["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == "/opt/csbs/venv/bin/csbs", argv
    ctx = parse(argv[1:])
    assert ctx.info_name == unit.stem.removeprefix("csbs-"), (unit.name, argv)
    # every unit reads the deployment's settings, then the machine's
    assert service["EnvironmentFile"] == ["/etc/csbs/csbs.env", "-/etc/csbs/local.env"]
    # its data directory is the one systemd makes for it
    data_dir = ctx.params["data_dir"]
    assert data_dir is not None and Path(f"/var/lib/{service['StateDirectory'][0]}") == data_dir
    # it stops with SIGTERM and waits longer than the tasks' grace
    assert service["KillSignal"] == ["SIGTERM"]
    assert float(service["TimeoutStopSec"][0]) > Settings().shutdown_grace_seconds


def _variables(path: Path) -> dict[str, str]:
    """Every NAME=value of an example file, the commented-out ones too."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            value = match.group(2)
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]  # as systemd and the shell take them off
            found[match.group(1)] = value
    return found


@pytest.mark.parametrize("env_file", ENV_FILES, ids=[e.name for e in ENV_FILES])
def test_every_variable_of_the_example_environment_is_a_setting_with_a_valid_value(
    env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    variables = _variables(env_file)
    assert variables
    fields = {f"CSBS_{name.upper()}" for name in Settings.model_fields}
    unknown = set(variables) - fields - OTHER_VARIABLES
    assert not unknown, f"{env_file.name}: not settings: {sorted(unknown)}"
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # every value is a valid one (a ValidationError otherwise)
    if "CSBS_EMBEDDED_WORKERS" in variables:  # and they reach the settings
        assert settings.embedded_workers is False


def test_the_walk_through_names_files_that_exist_and_commands_that_parse() -> None:
    text = GUIDE.read_text()
    named = set(re.findall(r"deploy/[A-Za-z0-9_.@*-]+", text))
    assert {f"deploy/{u.name}" for u in UNITS} <= named
    for name in named:  # a file, or a pattern of files (deploy/csbs-*.service)
        assert list(ROOT.glob(name)), name
    commands = 0
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and (re.fullmatch(r"[A-Z_]+=.*", words[0]) or words[0] in _PREFIXES):
                words = words[1:]
                if words and words[0] == "-u":  # sudo -u USER
                    words = words[2:]
            if words[:1] == ["csbs"] or (words and words[0].endswith("/csbs")):
                parse(words[1:])
                commands += 1
    assert commands >= 6, commands


_PREFIXES = ("sudo", "env", "systemd-run")
