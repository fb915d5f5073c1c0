"""The layout's rules (service/*/__init__.py), read from the code's own import statements: no
module imports another that imports it back, and each package keeps away from what it must
never load. Every import counts, at any depth of a function and under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

SERVICE = ROOT / "service"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in SERVICE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """Every module `name` imports: ours by module name (a name imported from a package resolves to
    its submodule when there is one); another project's by its dotted name and, for `from x
    import y`, also as `x.y` (y may be a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in MODULES:
                    found.add(submodule)
                elif node.module in MODULES:
                    found.add(node.module)
                else:  # another project's: `from google.cloud import bigquery` may be a module
                    found.update({node.module, submodule})
    return found


def service_graph() -> dict[str, set[str]]:
    return {name: {m for m in imports_of(name) if m in MODULES} for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), and self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def reachable(start: str, graph: dict[str, set[str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def everything_imported(package: str) -> set[str]:
    """All modules, ours and others, that the package's modules import, directly or through ours."""
    graph = service_graph()
    ours = {m for name in MODULES if name.startswith(package) for m in reachable(name, graph)}
    return ours | {imported for name in ours for imported in imports_of(name)}


def forbidden(imported: set[str], prefixes: tuple[str, ...]) -> set[str]:
    return {m for m in imported if any(m == p or m.startswith(p + ".") for p in prefixes)}


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_another_that_imports_it_back() -> None:
    assert len(MODULES) > 20
    assert cycles(service_graph()) == []


def test_the_call_start_path_never_loads_the_end_of_call_path_or_its_clients() -> None:
    imported = everything_imported("service.prefetch")
    assert "service.prefetch.firestore_rest" in imported  # the walk does see the package
    assert (
        forbidden(
            imported,
            (
                "service.end_of_call",
                "service.stores",
                "google.cloud",
                "pydantic",
                "grpc",
                "detect_secrets",
            ),
        )
        == set()
    )


def test_stores_know_nothing_of_http_or_of_millis_payloads() -> None:
    imported = everything_imported("service.stores")
    assert "google.cloud.bigquery" in imported
    assert (
        forbidden(
            imported,
            ("flask", "werkzeug", "service.web", "service.end_of_call", "service.prefetch"),
        )
        == set()
    )


def test_models_are_pure() -> None:
    imported = everything_imported("service.end_of_call.models")
    assert "pydantic" in imported
    ours = {m for m in imported if m.startswith("service")}
    # json_text: the bounded parse of JSON sent as text (standard library only).
    assert ours <= {
        "service.end_of_call.models",
        "service.stored_row",
        "service.end_of_call.json_text",
    }
    assert forbidden(imported, ("flask", "google", "urllib3", "requests", "grpc")) == set()


def test_the_end_of_call_path_never_imports_the_prefetch_path() -> None:
    assert forbidden(everything_imported("service.end_of_call"), ("service.prefetch",)) == set()


def test_routing_holds_no_webhook_of_its_own() -> None:
    routes = imports_of("service.web.routes")
    assert {"service.prefetch.webhook", "service.end_of_call.webhook"} <= routes
    assert forbidden(routes, ("service.stores", "service.end_of_call.normalise")) == set()


def test_memory_is_handed_whose_call_it_is_and_never_loads_a_webhook() -> None:
    imported = everything_imported("service.memory")
    assert "google.cloud.firestore" in imported  # the transaction
    assert forbidden(imported, ("service.prefetch", "service.end_of_call", "service.web")) == set()
    # The prefetch reads only the pure part: settings, paths and what it serves.
    reached = {m for m in everything_imported("service.prefetch") if m.startswith("service.memory")}
    assert reached == {"service.memory.settings", "service.memory.paths", "service.memory.serve"}
