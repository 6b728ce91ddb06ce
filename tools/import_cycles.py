#!/usr/bin/env python3
"""Import cycles inside tflq/, counting imports inside functions too (import-linter and Python both see those).

    python tools/import_cycles.py [ROOT]     # ROOT defaults to the current directory; exit 1 if there is a cycle

Prints every strongly connected group of modules and, for each import edge inside a group, where it is and whether it
runs at import time (``module``) or only when the function runs (``function``). A package's ``__init__`` counts as
the package itself; ``from tflq.pkg import sub`` counts as an import of ``tflq.pkg.sub`` when ``sub`` is a module.
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    level: str  # "module", "TYPE_CHECKING" (never runs) or "function" (runs when the function does)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def edges_of(root: Path, path: Path, modules: set[str]) -> list[Edge]:
    source = module_name(root, path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    function_nodes = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                      for n in ast.walk(f) if n is not f}
    type_checking_nodes = {id(n) for f in ast.walk(tree)
                           if isinstance(f, ast.If) and "TYPE_CHECKING" in ast.unparse(f.test)
                           for n in ast.walk(f) if n is not f}
    edges = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base_parts = source.split(".") if is_package else source.split(".")[:-1]
                base_parts = base_parts[: len(base_parts) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        level = ("function" if id(node) in function_nodes
                 else "TYPE_CHECKING" if id(node) in type_checking_nodes else "module")
        for target in dict.fromkeys(targets):
            while target and target not in modules:  # `import tflq.a.b` imports tflq.a.b; attributes drop off
                target = target.rpartition(".")[0]
            if target and target != source and target != "tflq":
                edges.append(Edge(source, target, node.lineno, level))
    return edges


def strongly_connected(nodes: list[str], graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in nodes:
        if node not in index:
            visit(node)
    return groups


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else ".").resolve()
    paths = sorted((root / "tflq").rglob("*.py"))
    modules = {module_name(root, path) for path in paths}
    edges = list(dict.fromkeys(edge for path in paths for edge in edges_of(root, path, modules)))
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
    groups = strongly_connected(sorted(modules), graph)
    for group in groups:
        print(f"cycle: {' <-> '.join(group)}")
        for edge in sorted(edges, key=lambda e: (e.source, e.line)):
            if edge.source in group and edge.target in group:
                print(f"  {edge.source} -> {edge.target}  (line {edge.line}, {edge.level}-level)")
    print(f"{len(groups)} cycle group(s) among {len(modules)} modules")
    # The same between stages (tflq.<package>), which is what the import-linter layers contract sees.
    stage = {module: ".".join(module.split(".")[:2]) for module in modules}
    stage_graph: dict[str, set[str]] = {}
    for edge in edges:
        if stage[edge.source] != stage[edge.target]:
            stage_graph.setdefault(stage[edge.source], set()).add(stage[edge.target])
    stage_groups = strongly_connected(sorted(set(stage.values())), stage_graph)
    for group in stage_groups:
        print(f"stage cycle: {' <-> '.join(group)}")
        for edge in sorted(edges, key=lambda e: (e.source, e.line)):
            if stage[edge.source] in group and stage[edge.target] in group and stage[edge.source] != stage[edge.target]:
                print(f"  {edge.source} -> {edge.target}  (line {edge.line}, {edge.level}-level)")
    print(f"{len(stage_groups)} cycle group(s) among {len(set(stage.values()))} stages")
    return 1 if groups or stage_groups else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
