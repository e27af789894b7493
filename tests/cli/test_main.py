"""`csbs` as a process runs it builds only the group a command line names; what it parses,
prints and refuses is what the whole tree does."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from csbs.cli.main import app, lean_app

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        ["backup", "--help"],
        ["backup", "list", "--help"],
        ["backup", "create", "--help"],
        ["backup", "nosuch"],
        ["backup", "list", "--limit", "x"],
        ["backup", "list", "--nosuch"],
        ["task", "list", "--status", "bogus"],
        ["task", "wait", "--help"],
        ["admin", "user", "create", "--help"],
        ["policy"],
        ["db", "--help"],
        ["repo", "check", "--help"],
    ],
)
def test_a_group_alone_answers_as_the_whole_tree(args: list[str]) -> None:
    lean = lean_app(args, {})
    assert lean is not app and [g.name for g in lean.registered_groups] == [args[0]]
    alone = runner.invoke(lean, args, prog_name="csbs")
    whole = runner.invoke(app, args, prog_name="csbs")
    assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output)


@pytest.mark.parametrize(
    "args", [[], ["--help"], ["version"], ["restore", "--help"], ["nosuch"], ["--nosuch"]]
)
def test_the_top_group_and_its_own_commands_see_the_whole_tree(args: list[str]) -> None:
    assert lean_app(args, {}) is app


def test_shell_completion_sees_the_whole_tree() -> None:
    assert lean_app(["backup", "li"], {"_CSBS_COMPLETE": "complete_bash"}) is app
