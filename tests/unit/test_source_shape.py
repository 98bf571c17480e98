"""Small functions with few parameters: none in src/ over 40 lines or over 6 parameters (self aside).

A function that needs more takes a record (a frozen dataclass) instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "src"
MAX_LINES, MAX_PARAMETERS = 40, 6


def parameter_count(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    arguments = function.args
    named = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
    starred = [argument for argument in (arguments.vararg, arguments.kwarg) if argument]
    return len([argument for argument in named if argument.arg not in ("self", "cls")]) + len(starred)


def oversized(root: Path = SOURCE) -> dict[str, str]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines, parameters = node.end_lineno - node.lineno + 1, parameter_count(node)
                if lines > MAX_LINES or parameters > MAX_PARAMETERS:
                    key = f"{path.relative_to(root).as_posix()}:{node.name}"
                    found[key] = f"{lines} lines, {parameters} parameters"
    return found


def test_no_function_is_over_40_lines_or_6_parameters():
    found = oversized()
    assert found == {}, f"split these (or pass a record): {found}"


def test_the_check_finds_a_long_function_and_a_long_signature(tmp_path: Path):
    body = "    a += 1\n"
    (tmp_path / "module.py").write_text(
        "def short(a):\n"
        + body * 39
        + "def long(a):\n"
        + body * 40
        + "def wide(a, b, c, *, d, e, f, g): pass\n"
    )
    assert set(oversized(tmp_path)) == {"module.py:long", "module.py:wide"}


def test_the_counter_sees_keyword_only_and_starred_parameters_but_not_self():
    (function,) = ast.parse("def f(self, a, /, b, *rest, c, **options): pass").body
    assert parameter_count(function) == 5
