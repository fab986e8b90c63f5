"""The import contract of ARCHITECTURE section 2, checked over every module in `meshdesk/`.

Each module's imports are read from its syntax tree, including imports inside functions
(adapters load their library lazily), and checked against the rules of its layer.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import meshdesk

PACKAGE_ROOT = Path(meshdesk.__file__).parent

# The whole of `node` that adapters may see: the protocols and failures it defines for them.
NODE_SURFACE_FOR_ADAPTERS = ("meshdesk.node.interfaces",)
UI_LIBRARIES = {"PySide6", "qrcode"}
# Standard library modules that would smuggle IO, time or randomness into the pure core.
IMPURE_FOR_CORE = {
    "asyncio", "socket", "ssl", "selectors", "threading", "_thread", "multiprocessing",
    "concurrent", "subprocess", "time", "random", "secrets",
}


@dataclass(frozen=True)
class Import:
    target: str  # dotted name as imported, e.g. "meshdesk.node.interfaces.Gateway"
    line: int


@dataclass(frozen=True)
class Violation:
    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports_of(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import anywhere in `source`, as absolute dotted names."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = resolve_relative(module, is_package, node.level, node.module)
            # `from a.b import c` may name the module a.b.c: judge each name under its parent
            found += [Import(f"{base}.{alias.name}", node.lineno) for alias in node.names]
        elif isinstance(node, ast.Call) and dynamic_import_target(node):
            found.append(Import(dynamic_import_target(node), node.lineno))
    return found


def dynamic_import_target(call: ast.Call) -> str | None:
    """`importlib.import_module("x")` or `__import__("x")` with a literal name."""
    function = call.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
    if name not in ("import_module", "__import__") or not call.args:
        return None
    first = call.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def within(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def top_level(target: str) -> str:
    return target.split(".")[0]


def is_stdlib(target: str) -> bool:
    return top_level(target) in sys.stdlib_module_names


def is_project(target: str) -> bool:
    return top_level(target) == "meshdesk"


def is_private(target: str) -> bool:
    return any(part.startswith("_") and not part.endswith("__") for part in target.split(".")[2:])


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "app"  # the package root and `python -m meshdesk` are part of the composition root
    return parts[1]


def core_problem(target: str) -> str | None:
    if is_stdlib(target):
        if top_level(target) in IMPURE_FOR_CORE:
            return f"core must stay pure (no IO, threads, clocks or randomness) but imports {target}"
        return None
    if not within(target, "meshdesk.core"):
        return f"core may import only the standard library and meshdesk.core, not {target}"
    return None


def node_problem(target: str) -> str | None:
    if is_stdlib(target) or within(target, "meshdesk.core") or within(target, "meshdesk.node"):
        return None
    return f"node may import only the standard library, meshdesk.core and meshdesk.node, not {target}"


def adapter_unit(module: str) -> str:
    """One adapter: a module directly in meshdesk.adapters, or a package there."""
    return ".".join(module.split(".")[:3])


def adapter_problem(module: str, target: str) -> str | None:
    if is_stdlib(target) or within(target, "meshdesk.core"):
        return None
    if any(within(target, surface) for surface in NODE_SURFACE_FOR_ADAPTERS):
        return None
    if within(target, adapter_unit(module)) and adapter_unit(module) != "meshdesk.adapters":
        return None  # an adapter package's own modules
    if within(target, "meshdesk.adapters"):
        return f"adapter {module} must not import another adapter: {target}"
    if is_project(target):
        return (f"adapters may import meshdesk.core and "
                f"{', '.join(NODE_SURFACE_FOR_ADAPTERS)} only, not {target}")
    return None  # one third-party library: counted per module below


def ui_problem(target: str) -> str | None:
    if is_stdlib(target) or top_level(target) in UI_LIBRARIES or within(target, "meshdesk.core"):
        return None
    if within(target, "meshdesk.ui"):
        return None
    if within(target, "meshdesk.node"):
        return f"ui may use only node's public modules, not {target}" if is_private(target) else None
    return f"ui may import PySide6, qrcode, meshdesk.core and meshdesk.node only, not {target}"


def problem(module: str, target: str) -> str | None:
    layer = layer_of(module)
    if layer != "app" and within(target, "meshdesk.app"):
        return f"only the composition root may import meshdesk.app, but {module} imports {target}"
    if layer == "core":
        return core_problem(target)
    if layer == "node":
        return node_problem(target)
    if layer == "adapters":
        return adapter_problem(module, target)
    if layer == "ui":
        return ui_problem(target)
    if layer == "app":
        return None
    return f"{module} is in no layer of ARCHITECTURE section 2 (core, node, adapters, ui, app)"


def check_module(source: str, module: str, where: str, is_package: bool = False) -> list[Violation]:
    """The import-contract violations of one module's source."""
    imports = imports_of(source, module, is_package)
    violations = [Violation(f"{where}:{item.line}", message) for item in imports
                  if (message := problem(module, item.target))]
    if layer_of(module) == "adapters":
        violations += too_many_libraries(imports, module, where)
    return violations


def too_many_libraries(imports: list[Import], module: str, where: str) -> list[Violation]:
    libraries: dict[str, int] = {}
    for item in imports:
        if not is_stdlib(item.target) and not is_project(item.target):
            libraries.setdefault(top_level(item.target), item.line)
    if len(libraries) <= 1:
        return []
    names = ", ".join(sorted(libraries))
    return [Violation(f"{where}:{line}", f"adapter {module} wraps more than one library ({names})")
            for line in sorted(libraries.values())[1:]]


def project_modules() -> list[Path]:
    return sorted(PACKAGE_ROOT.rglob("*.py"))


def check_project() -> list[Violation]:
    violations: list[Violation] = []
    for path in project_modules():
        where = str(path.relative_to(PACKAGE_ROOT.parent))
        violations += check_module(path.read_text(encoding="utf-8"), module_name(path), where,
                                   is_package=path.name == "__init__.py")
    return violations


def test_every_module_keeps_to_its_layer():
    violations = check_project()
    assert not violations, "import contract broken:\n" + "\n".join(map(str, violations))


def test_the_check_sees_every_layer():
    layers = {layer_of(module_name(path)) for path in project_modules()}
    assert {"core", "node", "adapters", "ui", "app"} <= layers
    assert len(project_modules()) > 10


def test_adapters_each_wrap_their_library():
    """Guards the checker's stdlib and third-party recognition against silent drift."""
    expected = {"gguf_metadata": "gguf", "llama/host": "llama_cpp", "llama/common": "llama_cpp",
                "openai_server": "aiohttp"}
    for name, library in expected.items():
        path = PACKAGE_ROOT / "adapters" / f"{name}.py"
        targets = imports_of(path.read_text(), f"meshdesk.adapters.{name.replace('/', '.')}")
        third_party = {top_level(t.target) for t in targets if not is_stdlib(t.target) and not is_project(t.target)}
        assert third_party == {library}, name


BROKEN = {
    "meshdesk.core.bad": (
        "import json\nimport asyncio\nfrom meshdesk.node import node\n", [2, 3]),
    "meshdesk.node.bad": (
        "from meshdesk.core import openai_api\n\ndef later():\n    import aiohttp\n", [4]),
    "meshdesk.adapters.bad": (
        "import aiohttp\nfrom meshdesk.node.interfaces import Gateway\n"
        "from meshdesk.node.model_host import ModelHost\nfrom . import llama_host\n"
        "def lazily():\n    import llama_cpp\n", [3, 4, 6]),
    "meshdesk.ui.bad": (
        "from PySide6.QtWidgets import QLabel\nfrom meshdesk.node import interfaces\n"
        "from meshdesk.adapters.openai_server import OpenAiServer\n"
        "from meshdesk.node._secret import x\n", [3, 4]),
    "meshdesk.node.wires": (
        "import importlib\nimportlib.import_module('meshdesk.app.launch')\n", [2]),
}


def test_the_checker_reports_each_broken_rule_with_its_line():
    for module, (source, lines) in BROKEN.items():
        where = module.replace(".", "/") + ".py"
        violations = check_module(source, module, where)
        assert sorted(int(v.location.rsplit(":", 1)[1]) for v in violations) == lines, (module, violations)
        assert all(v.location.startswith(where + ":") for v in violations)


def test_the_checker_accepts_the_allowed_imports():
    allowed = {
        "meshdesk.core.good": "from __future__ import annotations\nimport json\nfrom . import openai_api\n",
        "meshdesk.adapters.good": "import os\nfrom aiohttp import web\nfrom meshdesk.node import interfaces\n"
                                  "def f():\n    from aiohttp import client\n",
        "meshdesk.app.good": "from meshdesk.adapters.llama_host import main\nimport PySide6\n",
    }
    for module, source in allowed.items():
        assert check_module(source, module, "x.py") == [], module


def test_relative_imports_resolve_against_the_package():
    assert imports_of("from . import x", "meshdesk.adapters", is_package=True)[0].target == "meshdesk.adapters.x"
    assert imports_of("from ..app import y", "meshdesk.node.node")[0].target == "meshdesk.app.y"
