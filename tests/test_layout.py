"""The layout's rules, read from the source: no import cycle among arena's modules (function-level imports
included), domain packages never import the web or command-line layers, and ranking/ imports no arena code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOMAIN = ("battles", "catalog", "egress", "leaderboard", "board")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that a file imports, anywhere in it (`from a import b` counts a.b when a.b is
    a module)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:  # `from arena import db` imports arena.db; `from arena import x`, arena
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {name for name in found if name in known}


def graph(package: str) -> dict[str, set[str]]:
    files = {module_name(p): p for p in (REPO / package).rglob("*.py")}
    return {name: imports_of(path, set(files)) - {name} for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def package_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between arena's subpackages (arena.battles.lifecycle -> arena.battles)."""

    def top(name):
        return ".".join(name.split(".")[:2])

    out: dict[str, set[str]] = {}
    for name, targets in edges.items():
        out.setdefault(top(name), set()).update(top(t) for t in targets if top(t) != top(name))
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_arena_or_ranking_is_part_of_an_import_cycle():
    for package in ("arena", "ranking"):
        assert cycles(graph(package)) == [], package


def test_the_domain_packages_form_no_cycle_between_them():
    edges = package_edges(graph("arena"))
    assert cycles(edges) == []


@pytest.mark.parametrize("domain", DOMAIN)
def test_a_domain_package_never_imports_the_web_or_the_command_line(domain):
    edges = graph("arena")
    for name, targets in edges.items():
        if name.startswith(f"arena.{domain}"):
            assert not {t for t in targets if t.startswith(("arena.web", "arena.cli"))}, name


def test_ranking_imports_no_arena_code():
    assert not any(t.startswith("arena") for targets in graph("ranking").values() for t in targets)
    for path in (REPO / "ranking").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [n for n in names if n == "arena" or n.startswith("arena.")], path


def test_the_web_application_imports_no_jax():
    """Web workers never fit: JAX (seconds of import, hundreds of MB) is imported lazily, by builds only."""
    import subprocess
    import sys

    code = "import sys, arena.app, arena.cli; print('jax' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr
