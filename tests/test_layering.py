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
# The ui modules that are view models: the Qt-free state and text the views draw, computed from
# core's typed snapshots and tested without a window. A view model imports only the standard
# library, meshdesk.core and other view models: never Qt (PySide6, qasync), qrcode or a view.
# A new pure module of ui belongs here; move its Qt parts into a view first.
VIEW_MODELS = {
    "meshdesk.ui.agents", "meshdesk.ui.chat_text", "meshdesk.ui.join_offer", "meshdesk.ui.mesh_model",
    "meshdesk.ui.mesh_segments", "meshdesk.ui.model_table",
    "meshdesk.ui.models_model", "meshdesk.ui.text",
}
# The standard library modules the pure core may use: computation on values only, so no IO,
# threads, clocks or randomness can slip in with a new import. `pathlib` is left out on purpose:
# pure path arithmetic would be harmless, but `Path` also reads and writes files, and core has
# no need of paths (the catalog's JSON is read by app and handed to core as text).
ALLOWED_FOR_CORE = {
    "__future__", "abc", "ast", "base64", "binascii", "bisect", "collections", "copy", "dataclasses",
    "enum", "functools", "hashlib", "heapq", "hmac", "ipaddress", "itertools", "json", "math",
    "operator", "re", "string", "struct", "typing", "unicodedata",
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
        if top_level(target) not in ALLOWED_FOR_CORE:
            return (f"core must stay pure (no IO, threads, clocks or randomness) and may import only "
                    f"the standard library modules in ALLOWED_FOR_CORE, not {target}")
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


def view_model_problem(module: str, target: str) -> str | None:
    if is_stdlib(target) or within(target, "meshdesk.core"):
        return None
    if any(within(target, view_model) for view_model in VIEW_MODELS):
        return None
    return (f"view model {module} may import only the standard library, meshdesk.core and other "
            f"view models (no Qt, no views), not {target}")


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
        return view_model_problem(module, target) if module in VIEW_MODELS else ui_problem(target)
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


# --- no import cycles ----------------------------------------------------------------------


def imported_module(target: str, modules: set[str]) -> str | None:
    """The project module an import loads: `from a.b import c` names a.b.c when that is a module,
    else the name c inside a.b."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module -> the project modules it imports, at module level or inside functions alike:
    an import run late still ties the two modules together."""
    modules = set(sources)
    graph: dict[str, set[str]] = {}
    for module, (source, is_package) in sources.items():
        targets = {imported_module(item.target, modules)
                   for item in imports_of(source, module, is_package) if is_project(item.target)}
        graph[module] = {target for target in targets if target and target != module}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = lowest[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                lowest[module] = min(lowest[module], lowest[target])
            elif target in on_stack:
                lowest[module] = min(lowest[module], index[target])
        if lowest[module] == index[module]:
            group = []
            while (member := stack.pop()) != module:
                on_stack.discard(member)
                group.append(member)
            on_stack.discard(module)
            if group:
                cycles.append(sorted(group + [module]))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(cycles)


def project_sources() -> dict[str, tuple[str, bool]]:
    return {module_name(path): (path.read_text(encoding="utf-8"), path.name == "__init__.py")
            for path in project_modules()}


def test_no_module_imports_itself_through_others():
    cycles = import_cycles(import_graph(project_sources()))
    assert not cycles, "import cycles (each line: modules that import each other in a circle):\n" + \
        "\n".join(", ".join(cycle) for cycle in cycles)


def test_the_cycle_check_sees_imports_inside_functions():
    sources = {
        "meshdesk.app.a": ("from meshdesk.app.b import helper\n", False),
        "meshdesk.app.b": ("def later():\n    from meshdesk.app import c\n", False),
        "meshdesk.app.c": ("import meshdesk.app.a\n", False),
        "meshdesk.app.d": ("from meshdesk.app.a import x\nfrom . import e\n", False),
        "meshdesk.app.e": ("import json\n", False),
        "meshdesk.app": ("", True),
    }
    graph = import_graph(sources)
    assert graph["meshdesk.app.b"] == {"meshdesk.app.c"}
    assert graph["meshdesk.app.d"] == {"meshdesk.app.a", "meshdesk.app.e"}
    assert import_cycles(graph) == [["meshdesk.app.a", "meshdesk.app.b", "meshdesk.app.c"]]
    del sources["meshdesk.app.c"]
    assert import_cycles(import_graph(sources)) == []


def test_every_module_keeps_to_its_layer():
    violations = check_project()
    assert not violations, "import contract broken:\n" + "\n".join(map(str, violations))


def test_the_check_sees_every_layer():
    layers = {layer_of(module_name(path)) for path in project_modules()}
    assert {"core", "node", "adapters", "ui", "app"} <= layers
    assert len(project_modules()) > 10


def test_adapters_each_wrap_their_library():
    """Guards the checker's stdlib and third-party recognition against silent drift."""
    expected = {"gguf_metadata/header": "gguf", "gguf_metadata/tensor_table": "gguf",
                "llama/host": "llama_cpp", "llama/common": "llama_cpp",
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
    "meshdesk.ui.mesh_model": (
        "from PySide6.QtCore import QTimer\nfrom meshdesk.core.status import StatusSnapshot\n"
        "from meshdesk.ui.text import DASH\nfrom meshdesk.ui.mesh_view import MeshView\n"
        "def later():\n    import qasync\n", [1, 4, 6]),
}


def test_the_view_models_named_exist_and_import_no_qt():
    modules = {module_name(path) for path in project_modules()}
    assert VIEW_MODELS <= modules, VIEW_MODELS - modules
    for module in VIEW_MODELS:
        source = (PACKAGE_ROOT.parent / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8")
        assert not {top_level(item.target) for item in imports_of(source, module)} & {"PySide6", "qasync"}, module


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
