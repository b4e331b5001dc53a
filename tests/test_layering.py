"""The import graph of ``src/ravine``: no cycles, and every import goes down the layers.

The graph is read from the source (``ast``), not by importing: every ``import``/``from ... import``
statement counts, wherever it stands (module top, inside a function, under ``if TYPE_CHECKING``),
relative imports are resolved against the importing module, and ``importlib.import_module`` with a
literal (or an f-string's literal prefix) counts as an import too. A module importing its own
ancestor package (``ravine.experiments.train`` -> ``ravine.experiments``) is not an edge: the
package's ``__init__`` re-exporting its children would make every such pair a cycle by construction.

The layers, bottom to top (a module belongs to the longest prefix listed in ``TIERS``):

- core: the pure helpers (``ravine`` itself, which holds only the version; ``_validation``, ``_io``,
  ``_nn``, ``_expr``), then ``ravine.optim``, then ``ravine.schedules``; the core imports only the
  standard library, torch and numpy;
- execution: ``ravine.parallel`` (where independent tasks run: here, a process pool, Ray);
- the 2D world: ``ravine.surfaces``, then ``ravine.simulate`` (which steps the surfaces);
- real networks: ``ravine.landscape`` and ``ravine.curvature``, independent of each other;
- ``ravine.plots``: draws from data; imports nothing above landscape/curvature;
- ``ravine.experiments``: the claims may import plots to draw their figures;
- presentation: ``ravine.report`` and ``ravine.web`` (independent), then ``ravine._cli`` (the
  subcommands), then ``ravine.cli`` (the entry point that dispatches to them).

A module may import any module of its own unit (a cycle among them is still an error) and any
module of a strictly lower tier; two units that share a tier never import each other.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# Bottom to top. Each tier: (layer, units); a unit is a module-name prefix.
TIERS: list[tuple[str, tuple[str, ...]]] = [
    ("core helpers", ("ravine", "ravine._validation", "ravine._io", "ravine._nn", "ravine._expr")),
    ("core", ("ravine.optim",)),
    ("core", ("ravine.schedules",)),
    ("execution", ("ravine.parallel",)),
    ("2D world", ("ravine.surfaces",)),
    ("2D world", ("ravine.simulate",)),
    ("real networks", ("ravine.landscape", "ravine.curvature")),
    ("plots", ("ravine.plots",)),
    ("experiments", ("ravine.experiments",)),
    ("presentation", ("ravine.report", "ravine.web")),
    ("presentation", ("ravine._cli",)),
    ("presentation", ("ravine.cli",)),
]
CORE_TIERS = 3  # the first three tiers: core helpers, optim, schedules
CORE_THIRD_PARTY = {"torch", "numpy"}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module (a module of the package)
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path.relative_to(SRC.parent) if self.path.is_relative_to(SRC.parent) else self.path}:{self.line}"


@dataclass(frozen=True)
class External:
    source: str
    name: str  # top-level distribution-ish name: "torch", "matplotlib"
    path: Path
    line: int


def find_modules(package_dir: Path) -> dict[str, Path]:
    """Every module under ``package_dir``, by dotted name (a package by its own name)."""
    mods = {}
    for p in sorted(package_dir.rglob("*.py")):
        name = ".".join(p.relative_to(package_dir.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    return mods


def _imported_names(module: str, is_package: bool, node: ast.AST) -> list[str]:
    """The dotted names an import statement (or ``importlib.import_module("...")``) may load."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        return [target] + [f"{target}.{a.name}" for a in node.names]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute | ast.Name)
        and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
        and node.args
    ):
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return [arg.value]
        if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
            return [str(arg.values[0].value).rstrip(".")]  # f"ravine._cli.{name}": the package
    return []


def import_graph(package_dir: Path) -> tuple[dict[str, Path], list[Edge], list[External]]:
    """The package's modules, its internal import edges, and its imports of other packages."""
    mods = find_modules(package_dir)
    top = package_dir.name
    edges, external = [], []
    for m, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            for name in _imported_names(m, is_package, node):
                if name.split(".")[0] != top:
                    if not isinstance(node, ast.Call):
                        external.append(External(m, name.split(".")[0], path, node.lineno))
                elif name in mods and name != m and not m.startswith(name + "."):
                    edges.append(Edge(m, name, path, node.lineno))
    return mods, edges, external


def cycles(mods: dict[str, Path], edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    graph: dict[str, list[str]] = {m: [] for m in mods}
    for e in edges:
        graph[e.source].append(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph[w])))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def unit_of(module: str, tiers=TIERS) -> tuple[int, str] | None:
    """(tier, unit) of a module: the longest unit prefix it falls under (the root only by itself)."""
    best = None
    for t, (_, units) in enumerate(tiers):
        for u in units:
            inside = module == u or (module.startswith(u + ".") and "." in u)
            if inside and (best is None or len(u) > len(best[1])):
                best = (t, u)
    return best


def layering_violations(edges: list[Edge], tiers=TIERS) -> list[str]:
    """Each import that goes up a tier or across to a sibling unit, with file, line and rule."""
    out = []
    for e in edges:
        (ts, us), (tt, ut) = unit_of(e.source, tiers), unit_of(e.target, tiers)
        if us == ut or tt < ts:
            continue
        below = [u for _, units in tiers[:ts] for u in units]
        rule = f"{us} ({tiers[ts][0]}) may import only its own modules and {', '.join(below) or 'nothing else'}"
        kind = "upward" if tt > ts else "sideways"
        out.append(f"{e.where()}: {e.source} imports {e.target} ({tiers[tt][0]}): {kind} import; rule: {rule}")
    return out


def _cycle_message(comp: list[str], edges: list[Edge]) -> str:
    members = set(comp)
    lines = [f"  {e.where()}: {e.source} -> {e.target}" for e in edges if e.source in members and e.target in members]
    return "import cycle among " + ", ".join(comp) + ":\n" + "\n".join(lines)


# ----------------------------------------------------------------------------- the package itself

MODS, EDGES, EXTERNAL = import_graph(SRC / "ravine")


def test_every_module_has_a_layer():
    missing = [m for m in MODS if unit_of(m) is None]
    assert not missing, f"modules with no layer (add their prefix to TIERS in {Path(__file__).name}): {missing}"


def test_no_import_cycles():
    found = cycles(MODS, EDGES)
    assert not found, "\n".join(_cycle_message(c, EDGES) for c in found)


def test_layers_import_only_downward():
    bad = layering_violations(EDGES)
    assert not bad, "\n".join(bad)


def test_core_imports_only_torch_numpy_and_the_standard_library():
    allowed = CORE_THIRD_PARTY | set(sys.stdlib_module_names) | {"__future__"}
    bad = [
        f"{x.path.relative_to(SRC.parent)}:{x.line}: {x.source} imports {x.name}; rule: the core "
        f"({', '.join(u for _, units in TIERS[:CORE_TIERS] for u in units)}) imports only torch, numpy, "
        "the standard library and the core helpers"
        for x in EXTERNAL
        if unit_of(x.source)[0] < CORE_TIERS and x.name not in allowed
    ]
    assert not bad, "\n".join(bad)


# ----------------------------------------------------------------- the checker on a made-up package


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / "pkg" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "pkg"


def test_checker_sees_lazy_relative_and_dynamic_imports(tmp_path):
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "from .sub import a\n",
            "sub/__init__.py": "",
            "sub/a.py": "def f():\n    from ..low import x\n",
            "sub/b.py": "import importlib\nimportlib.import_module(f'pkg.low.{1}')\n",
            "low.py": "import numpy\nfrom . import high\n",
            "high.py": "from pkg.sub import b\nimport matplotlib.pyplot\n",
        },
    )
    mods, edges, external = import_graph(pkg)
    got = {(e.source, e.target, e.line) for e in edges}
    assert ("pkg.sub.a", "pkg.low", 2) in got  # lazy and relative
    assert ("pkg.sub.b", "pkg.low", 2) in got  # importlib with an f-string
    assert ("pkg", "pkg.sub", 1) in got and ("pkg", "pkg.sub.a", 1) in got
    assert {(x.source, x.name) for x in external} == {
        ("pkg.sub.b", "importlib"),
        ("pkg.low", "numpy"),
        ("pkg.high", "matplotlib"),
    }
    assert cycles(mods, edges) == [["pkg.high", "pkg.low", "pkg.sub.b"]]


def test_checker_ignores_a_package_reexporting_its_children(tmp_path):
    pkg = _write(tmp_path, {"__init__.py": "from .a import f\n", "a.py": "from pkg import b\n", "b.py": ""})
    mods, edges, _ = import_graph(pkg)
    assert cycles(mods, edges) == []


def test_checker_flags_upward_and_sideways_imports(tmp_path):
    pkg = _write(
        tmp_path,
        {"__init__.py": "", "core.py": "", "left.py": "", "right.py": "from pkg import left\n", "top.py": ""},
    )
    (pkg / "core.py").write_text("def f():\n    import pkg.top\n")
    tiers = [("base", ("pkg", "pkg.core")), ("middle", ("pkg.left", "pkg.right")), ("top", ("pkg.top",))]
    _, edges, _ = import_graph(pkg)
    bad = layering_violations(edges, tiers)
    assert len(bad) == 2
    assert bad[0].startswith(f"{pkg / 'core.py'}:2: pkg.core imports pkg.top (top): upward import; rule: pkg.core")
    assert "pkg.right imports pkg.left (middle): sideways import" in bad[1]
