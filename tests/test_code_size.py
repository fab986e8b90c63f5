"""Issue 9's size limits, kept: no file in meshdesk/ over 400 lines, no class over 250.

Giant files and classes are what the maintainers of our model codebases struggle with; a
limit that nothing checks is soon a limit in name only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import meshdesk

PACKAGE_ROOT = Path(meshdesk.__file__).parent
MAX_FILE_LINES = 400
MAX_CLASS_LINES = 250


def oversized(source: str, where: str) -> list[str]:
    problems = []
    lines = source.count("\n") + (0 if source.endswith("\n") or not source else 1)
    if lines > MAX_FILE_LINES:
        problems.append(f"{where}: {lines} lines (at most {MAX_FILE_LINES})")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            size = node.end_lineno - node.lineno + 1
            if size > MAX_CLASS_LINES:
                problems.append(f"{where}:{node.lineno}: class {node.name} is {size} lines "
                                f"(at most {MAX_CLASS_LINES})")
    return problems


def test_no_file_or_class_in_meshdesk_is_over_its_limit():
    problems = [problem for path in sorted(PACKAGE_ROOT.rglob("*.py"))
                for problem in oversized(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE_ROOT)))]
    assert problems == []


def test_the_check_sees_a_long_file_and_a_long_class():
    long_class = "class Big:\n" + "    x = 1\n" * MAX_CLASS_LINES
    assert oversized(long_class, "big.py") == [f"big.py:1: class Big is {MAX_CLASS_LINES + 1} lines "
                                                f"(at most {MAX_CLASS_LINES})"]
    long_file = "x = 1\n" * (MAX_FILE_LINES + 1)
    assert oversized(long_file, "long.py") == [f"long.py: {MAX_FILE_LINES + 1} lines (at most {MAX_FILE_LINES})"]
    assert oversized("class Small:\n    pass\n" + "y = 2\n" * 10, "ok.py") == []
