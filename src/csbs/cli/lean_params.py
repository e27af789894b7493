"""Plain command-line values taken as they are, without loading pydantic.

typer (0.2x) turns every value it parses, given or defaulted, into its parameter's type
through a pydantic `TypeAdapter` built when the first value is processed: importing
pydantic for that costs a command 0.1 s of CPU or more, most of what `csbs backup list`
may take when it asks a running `csbs serve` (decision 0018). For a parameter typed plainly
`str`, `int`, `float` or `list[str]` (no parser or clamping), a value that already is of
that type and within the parameter's bounds, a string of decimal digits for an `int`, or a
sequence of `str` for a `list[str]`, becomes what the adapter would have made of it (the
same value, `int(s)`, a list). Every other value, and every value of any other parameter,
goes to typer's own coercion, built only then, so what a command accepts, refuses and says
is unchanged (`tests/cli/test_lean_params.py` compares both and pins the typer names used
here).

If typer no longer has the hook (`typer.core.build_runtime_param`), nothing is changed.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

#: Longer digit strings go to typer's coercion (pydantic bounds how long an int's text is).
_MAX_DIGITS = 18


def install() -> None:
    """Give every parameter of every typer command a `_LeanParam`."""
    try:
        from typer import _coercion, core
    except ImportError:
        return
    original = getattr(core, "build_runtime_param", None)
    base = getattr(_coercion, "RuntimeParam", None)
    if original is None or base is None or getattr(original, "_csbs_lean", False):
        return

    @dataclasses.dataclass(frozen=True)
    class _LeanParam(base):  # type: ignore[misc, valid-type]
        fallback: Callable[[], Any] = dataclasses.field(default=lambda: None)
        #: the parameter is a plain str, int or float, or a list of str
        plain: bool = False

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if self.plain:
                done, result = _plainly(self.annotation, self.parameter_info, value)
                if done:
                    return result
            return self.fallback()._coerce_value(value, param=param, ctx=ctx)

    def lean_build(descriptor: Any) -> Any:
        if getattr(descriptor, "file_annotation", None) is not None:
            return original(descriptor)
        # Built for every parameter of a command, given or not (None and a missing
        # multiple option never reach `_coerce_value`): typer's coercion only when needed.
        return _LeanParam(
            parameter_info=descriptor.parameter_info,
            annotation=descriptor.annotation,
            fallback=functools.cache(lambda: original(descriptor)),
            plain=_plain(descriptor),
        )

    lean_build._csbs_lean = True  # type: ignore[attr-defined]
    core.build_runtime_param = lean_build  # type: ignore[attr-defined]


def _plainly(annotation: Any, info: Any, value: Any) -> tuple[bool, Any]:
    """(True, what typer's coercion makes of `value`) when that is plain to see, else
    (False, None)."""
    kind = type(value)
    if annotation is int and kind is str:
        if value.isascii() and value.isdigit() and len(value) <= _MAX_DIGITS:
            value, kind = int(value), int
    if annotation in (str, int, float) and kind is annotation:
        low, high = getattr(info, "min", None), getattr(info, "max", None)
        if (low is None or low <= value) and (high is None or value <= high):
            return True, value
        return False, None
    if annotation == list[str] and kind in (list, tuple) and all(type(v) is str for v in value):
        return True, list(value)
    return False, None


def _plain(descriptor: Any) -> bool:
    """A parameter typed plainly `str`, `int`, `float` or `list[str]`, with nothing that
    changes its coercion but bounds."""
    info = descriptor.parameter_info
    return (
        descriptor.annotation in (str, int, float, list[str])
        and getattr(info, "parser", None) is None
        and getattr(info, "click_type", None) is None
        and not getattr(info, "clamp", False)
    )
