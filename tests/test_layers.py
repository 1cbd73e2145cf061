"""The import graph keeps the layering of shared/DESIGN.md (checked over `ast`, no extra dependency).

    shells      cli/ operator/ gitops/ serve/      parsing, I/O, wiring
    report/     the drift report (a library the cli verb wraps)
    engine/     observe -> plan -> execute -> persist; controller.api is its public face
    checks/ store/ embed/ backends/                statistics, files, embedders
    core/ manifest/                                pure decisions and models
    errors, paths, naming, durations, progress     leaf utilities

Rules: no import cycles between modules; a layer never imports a higher one;
core/ and manifest/ import no numpy, scipy, faiss or Kubernetes client; a shell
never imports another shell, except that cli/ (the process entry point) may
launch one from inside a verb's run function, never at import time; cli/
modules import nothing heavy at import time (so start-up stays fast).
Imports under `if TYPE_CHECKING:` are not run and are ignored.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "controller"
SHELLS = {"cli", "operator", "gitops", "serve"}
RANK = {"<leaf>": 0, "core": 1, "manifest": 0, "inputs": 0, "checks": 2, "store": 2, "embed": 2, "backends": 2,
        "engine": 3, "api": 3, "<package>": 3, "report": 4, **{s: 5 for s in SHELLS}}
LEAVES = {"errors", "paths", "naming", "durations", "progress"}
PURE_FORBIDDEN = ("numpy", "scipy", "faiss", "kubernetes", "kopf")
CLI_TOP_LEVEL_ALLOWED = ("controller.cli.common", "controller.cli.loopout", "controller.errors", "controller.paths",
                         "controller")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "<package>"
    if parts[1] in LEAVES:
        return "<leaf>"
    return parts[1]


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every runtime import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    top = {id(n) for n in tree.body}
    package = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                out.append((candidate if (ROOT.parent / Path(*candidate.split("."))).with_suffix(".py").exists()
                            or (ROOT.parent / Path(*candidate.split("."))).is_dir() else base, id(node) in top))
    return out


FILES = sorted(ROOT.rglob("*.py"))
GRAPH = {module_name(f): imports(f) for f in FILES}


def internal(graph=GRAPH) -> dict[str, set[str]]:
    return {m: {i for i, _ in deps if i == "controller" or i.startswith("controller.")} - {m}
            for m, deps in graph.items()}


def test_the_graph_is_not_empty():
    edges = internal()
    assert len(edges) > 50 and sum(map(len, edges.values())) > 100


def test_no_import_cycles():
    edges = {m: {d for d in ds if d in GRAPH and d != "controller"} for m, ds in internal().items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_upward_imports():
    bad = []
    for m, deps in internal().items():
        for d in deps:
            if d == "controller" or layer(m) in SHELLS and layer(d) in SHELLS:
                continue  # the package's lazy API; shell-to-shell has its own rule
            if RANK[layer(d)] > RANK[layer(m)]:
                bad.append(f"{m} -> {d}")
    assert not bad, "imports from a higher layer:\n" + "\n".join(sorted(bad))


def test_no_shell_imports_another_shell_except_cli_launching_one():
    bad = []
    for m, deps in GRAPH.items():
        for d, top_level in deps:
            if not d.startswith("controller.") or layer(d) not in SHELLS or layer(m) not in SHELLS:
                continue
            if layer(d) == layer(m):
                continue
            if layer(m) == "cli" and not top_level:
                continue  # `controller sync` starting the gitops loop, inside run()
            bad.append(f"{m} -> {d}{' (module level)' if top_level else ''}")
    assert not bad, "shell-to-shell imports:\n" + "\n".join(sorted(bad))


@pytest.mark.parametrize("pure", ["core", "manifest"])
def test_pure_layers_import_no_numerics_or_clients(pure):
    bad = [f"{m} -> {d}" for m, deps in GRAPH.items() if layer(m) == pure
           for d, _ in deps if d.split(".")[0] in PURE_FORBIDDEN]
    assert not bad, bad


def test_cli_modules_import_nothing_heavy_at_import_time():
    bad = []
    for m, deps in GRAPH.items():
        if layer(m) != "cli":
            continue
        for d, top_level in deps:
            root = d.split(".")[0]
            if not top_level or root != "controller" and root not in PURE_FORBIDDEN + ("pydantic", "yaml"):
                continue
            if root == "controller" and d not in CLI_TOP_LEVEL_ALLOWED and not d.startswith("controller.cli."):
                bad.append(f"{m} -> {d}")
            elif root != "controller":
                bad.append(f"{m} -> {d}")
    assert not bad, "cli modules must import the engine inside run():\n" + "\n".join(sorted(bad))


def test_the_rules_catch_a_violation():
    """The checks are not vacuous: a fake upward import and a fake cycle are found."""
    fake = {"controller.core.x": [("controller.engine.reconcile", True)],
            "controller.engine.reconcile": [("controller.core.x", False)]}
    edges = internal(fake)
    assert any(RANK[layer(d)] > RANK[layer(m)] for m, ds in edges.items() for d in ds)
    assert "controller.core.x" in edges["controller.engine.reconcile"]
