"""The import graph keeps the layering of shared/DESIGN.md (checked over `ast`, no extra dependency).

    shells      cli/ operator/ gitops/ serve/      parsing, I/O, wiring
    cliargs     the verbs' shared argument helpers (store, -o, webhooks, lock timeout, exit codes)
    report/     the drift report (a library the cli verb wraps)
    engine/     observe -> plan -> execute -> persist; controller.api is its public face
    checks/ store/ embed/ backends/                statistics, files, embedders
    core/ manifest/                                pure decisions and models
    errors, paths, naming, durations, progress, stamps, hashing   leaf utilities

Rules: no import cycles between modules; a layer never imports a higher one;
core/ and manifest/ import no numpy, scipy, faiss or Kubernetes client; a shell
never imports another shell, with no exception: not at module level, not inside
a function. Verb modules import nothing heavy at import time (so start-up stays
fast). Imports under `if TYPE_CHECKING:` are not run and are ignored.

How `controller VERB` reaches another shell without importing it: cli/main.py
keeps its verb table as data, verb -> dotted module path, loaded with
import_module (a verb registry, like the plug-in registries). A verb that is
another shell's entry point lives in that shell: sync, watch and diff in gitops/,
operator in operator/, serve in serve/. Every verb module takes its arguments
from controller.cliargs, a neutral module below all the shells.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "controller"
SHELLS = {"cli", "operator", "gitops", "serve"}
RANK = {"<leaf>": 0, "core": 1, "manifest": 0, "inputs": 0, "checks": 2, "store": 2, "embed": 2, "backends": 2,
        "engine": 3, "api": 3, "<package>": 3, "report": 4, "simulate": 4, "cliargs": 4, **{s: 5 for s in SHELLS}}
LEAVES = {"errors", "paths", "naming", "durations", "progress", "stamps", "hashing"}
PURE_FORBIDDEN = ("numpy", "scipy", "faiss", "kubernetes", "kopf")
VERB_TOP_LEVEL_ALLOWED = ("controller.cliargs", "controller.errors", "controller.paths", "controller")


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


def shell_to_shell(graph=GRAPH) -> list[str]:
    """Every static import from one shell into another, at module level or inside a function."""
    return sorted(f"{m} -> {d}{' (module level)' if top_level else ''}"
                  for m, deps in graph.items() if layer(m) in SHELLS
                  for d, top_level in deps
                  if d.startswith("controller.") and layer(d) in SHELLS and layer(d) != layer(m))


def test_no_shell_imports_another_shell():
    bad = shell_to_shell()
    assert not bad, "shell-to-shell imports:\n" + "\n".join(bad)


def test_the_verb_table_is_data_and_every_verb_module_exists():
    """cli/main.py reaches the other shells' verbs only by name; each name must resolve to a file."""
    from controller.cli.main import VERBS

    modules = {module for module, _ in VERBS.values()}
    assert {layer(m) for m in modules} == SHELLS, modules
    missing = [m for m in modules if m not in GRAPH]
    assert not missing, f"verb modules that do not exist: {missing}"
    static = [d for d, _ in GRAPH["controller.cli.main"] if d in modules]
    assert not static, f"cli/main.py imports verb modules statically: {static}"


@pytest.mark.parametrize("pure", ["core", "manifest"])
def test_pure_layers_import_no_numerics_or_clients(pure):
    bad = [f"{m} -> {d}" for m, deps in GRAPH.items() if layer(m) == pure
           for d, _ in deps if d.split(".")[0] in PURE_FORBIDDEN]
    assert not bad, bad


def verb_modules() -> set[str]:
    """The modules `controller --help` may import: cli/ and the verb modules in other shells."""
    from controller.cli.main import VERBS

    return {m for m in GRAPH if layer(m) == "cli"} | {module for module, _ in VERBS.values()}


def test_verb_modules_import_nothing_heavy_at_import_time():
    bad = []
    for m in sorted(verb_modules()):
        own = f"controller.{layer(m)}."
        for d, top_level in GRAPH[m]:
            root = d.split(".")[0]
            if not top_level or root != "controller" and root not in PURE_FORBIDDEN + ("pydantic", "yaml"):
                continue
            if root == "controller" and d not in VERB_TOP_LEVEL_ALLOWED and not d.startswith(own):
                bad.append(f"{m} -> {d}")
            elif root != "controller":
                bad.append(f"{m} -> {d}")
    assert not bad, "verb modules must import the engine inside run():\n" + "\n".join(sorted(bad))


def test_verb_packages_import_nothing_at_import_time():
    """Loading controller.serve.serve_cmd runs controller/serve/__init__.py first: keep those trivial."""
    bad = [f"{pkg} -> {d}" for pkg in sorted({m.rsplit(".", 1)[0] for m in verb_modules()})
           for d, top_level in GRAPH[pkg] if top_level and d.startswith("controller.")]
    assert not bad, bad


def test_the_rules_catch_a_violation():
    """The checks are not vacuous: a fake upward import and a fake cycle are found."""
    fake = {"controller.core.x": [("controller.engine.reconcile", True)],
            "controller.engine.reconcile": [("controller.core.x", False)]}
    edges = internal(fake)
    assert any(RANK[layer(d)] > RANK[layer(m)] for m, ds in edges.items() for d in ds)
    assert "controller.core.x" in edges["controller.engine.reconcile"]
    launching = {"controller.cli.x_cmd": [("controller.gitops.sync", False)],
                 "controller.gitops.sync_cmd": [("controller.cliargs", True)]}
    assert shell_to_shell(launching) == ["controller.cli.x_cmd -> controller.gitops.sync"]
