"""Architecture figures of the code base, written to bench/results/architecture.json.

    .venv/bin/python bench/architecture.py [--root DIR]

  registries     places that declare the list of pipeline stages by hand: a literal
                 (tuple, list, set, dict) in Python naming at least 80% of the stages, or
                 a YAML file naming them as task keys, unless it says it is GENERATED
  import_cycles  cycles in the import graph of lib/llmrec (every import, module level or
                 inside a function, and the packages each import initialises)
  ruff_errors    what `ruff check` finds with the project's ruff.toml

tests/unit/test_architecture.py asserts the same figures.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules(lib: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under lib/."""
    found = {}
    for path in lib.rglob("*.py"):
        parts = list(path.relative_to(lib).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph(lib: Path) -> dict[str, set[str]]:
    """module -> the project modules its execution imports (directly)."""
    mods = modules(lib)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        own = {".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")))}  # already initialising
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                # importing a.b.c runs a, a.b and a.b.c
                for i in range(1, len(parts) + 1):
                    dep = ".".join(parts[:i])
                    if dep in mods and dep != name and dep not in own:
                        graph[name].add(dep)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _named(node: ast.AST) -> str | None:
    """The stage name an element of a literal gives: "x", ("x", ...), f("x", ...)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Tuple) and node.elts:
        return _named(node.elts[0])
    if isinstance(node, ast.Call) and node.args:
        return _named(node.args[0])
    return None


def stage_registries(root: Path, stages: list[str], share: float = 0.8) -> list[str]:
    """Where the stage list is declared by hand: 'path:line' of each such literal or file."""
    need = max(2, int(share * len(stages)))
    places = []
    for path in sorted(root.rglob("*.py")):
        if any(part.startswith(".") or part in ("build", "data") for part in path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text())
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            elements = node.keys if isinstance(node, ast.Dict) else \
                node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else None
            if elements and len({_named(e) for e in elements if e is not None} & set(stages)) >= need:
                places.append(f"{path.relative_to(root)}:{node.lineno}")
    for path in sorted(root.glob("resources/*.yml")):
        text = path.read_text()
        keys = set(re.findall(r"task_key:\s*(\w+)", text))
        if len(keys & set(stages)) >= need and "GENERATED" not in text.split("\n", 1)[0]:
            places.append(str(path.relative_to(root)))
    return places


def ruff_errors(root: Path) -> int:
    ruff = Path(sys.executable).with_name("ruff")
    run = subprocess.run([str(ruff), "check", "--quiet", "--output-format", "concise", "."], cwd=root,
                         capture_output=True, text=True)
    if run.returncode not in (0, 1):
        raise RuntimeError(f"ruff failed: {run.stderr.strip()}")
    return sum(1 for line in run.stdout.splitlines() if re.match(r"^\S+:\d+:\d+: ", line))


def measure(root: Path) -> dict:
    sys.path.insert(0, str(root / "lib"))
    from llmrec.stages import NAMES

    found = cycles(import_graph(root / "lib"))
    places = stage_registries(root, list(NAMES))
    return {"registries": len(places), "registry_places": places, "import_cycles": len(found),
            "cycles": found, "ruff_errors": ruff_errors(root)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    args = parser.parse_args()
    result = measure(args.root.resolve())
    print(json.dumps(result, indent=2))
    if args.root.resolve() == ROOT:
        out = ROOT / "bench" / "results" / "architecture.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
