"""`csbs.cli.lean_params`: plain values are taken as typer's own coercion takes them, and
everything else still goes to it."""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated

import pytest
import typer
from typer import _coercion, core
from typer.testing import CliRunner

from csbs.cli import lean_params


def test_typer_still_has_the_hook() -> None:
    """The private names `lean_params` replaces and subclasses (typer 0.2x)."""
    import csbs.cli.main  # noqa: F401  installs it

    assert getattr(core.build_runtime_param, "_csbs_lean", False)
    assert issubclass(_coercion.RuntimeParam, object)
    assert callable(_coercion.build_runtime_param)


def _app() -> typer.Typer:
    lean_params.install()
    app = typer.Typer()

    @app.command()
    def run(
        name: str,
        limit: Annotated[int, typer.Option("--limit")] = 100,
        tag: Annotated[list[str] | None, typer.Option("--tag")] = None,
        bounded: Annotated[int, typer.Option("--bounded", min=1, max=5)] = 1,
        ratio: Annotated[float, typer.Option("--ratio")] = 0.5,
    ) -> None:
        print(repr((name, limit, tag, bounded, ratio)))

    return app


@pytest.mark.parametrize(
    "args",
    [
        ["n"],
        ["n", "--limit", "7"],
        ["n", "--limit", "007"],
        ["n", "--limit", " 7"],
        ["n", "--limit", "-3"],
        ["n", "--limit", "x"],
        ["n", "--limit", "1" * 30],
        ["n", "--tag", "a=1", "--tag", "b=2"],
        ["n", "--bounded", "9"],
        ["n", "--bounded", "3"],
        ["n", "--ratio", "2.5"],
        ["über", "--limit", "٣"],
    ],
)
def test_the_same_values_and_errors_as_typers_own(args: list[str]) -> None:
    lean = CliRunner().invoke(_app(), args)
    # typer's own coercion, in a process where it is not replaced
    plain = subprocess.run(
        [sys.executable, "-c", _PLAIN, *args], capture_output=True, text=True, check=False
    )
    assert lean.exit_code == plain.returncode
    assert lean.output == plain.stdout + plain.stderr


_PLAIN = """
import sys
from typing import Annotated
import typer
from typer.testing import CliRunner

app = typer.Typer()

@app.command()
def run(
    name: str,
    limit: Annotated[int, typer.Option("--limit")] = 100,
    tag: Annotated[list[str] | None, typer.Option("--tag")] = None,
    bounded: Annotated[int, typer.Option("--bounded", min=1, max=5)] = 1,
    ratio: Annotated[float, typer.Option("--ratio")] = 0.5,
) -> None:
    print(repr((name, limit, tag, bounded, ratio)))

result = CliRunner().invoke(app, sys.argv[1:])
sys.stdout.write(result.output)
sys.exit(result.exit_code)
"""


def test_plain_values_do_not_load_pydantic() -> None:
    code = "import sys\nfrom csbs.cli import lean_params\nlean_params.install()\n" + _PLAIN.replace(
        "sys.exit(result.exit_code)", "print('pydantic' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "n", "--limit", "3", "--tag", "a"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.splitlines() == ["('n', 3, ['a'], 1, 0.5)", "False"], done.stderr
    # A value that is not plain goes to typer's coercion, which loads it.
    done = subprocess.run(
        [sys.executable, "-c", code, "n", "--ratio", "1.5"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.splitlines() == ["('n', 100, None, 1, 1.5)", "True"], done.stderr
