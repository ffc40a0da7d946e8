#!/usr/bin/env python3
"""The brain's module graph, drawn from its imports, and the circles in it.

Each top-level module of brain/src (a directory `x/` or a file `x.rs`) is a node; `crate::y`
written anywhere in x's code (not comments, not its unit tests: `tests.rs`, `*_tests.rs` and a
trailing `#[cfg(test)] mod tests { … }`, which may exercise several modules together) is an
edge x -> y. Prints the edges
with `--edges`, or a Graphviz document with `--dot`, and exits 1 naming every circle (a strongly
connected set of more than one module) it finds, so CI keeps the layering one-way.

    python3 scripts/module-graph.py            # circles, if any (exit 1)
    python3 scripts/module-graph.py --dot > brain-modules.dot
"""
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "brain" / "src"
# Binaries' roots and the crate root only wire modules together.
SKIP = {"lib", "main", "bin"}
USE = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
# `use crate::{a, b::c}` groups.
GROUP = re.compile(r"\bcrate::\{([^}]*)\}", re.S)
TESTS = re.compile(r"#\[cfg\(test\)\]\s*mod tests\s*\{")


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def modules() -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = defaultdict(list)
    for p in ROOT.iterdir():
        name = p.stem
        if name in SKIP:
            continue
        if p.is_dir():
            out[name].extend(
                f for f in sorted(p.rglob("*.rs")) if f.name != "tests.rs" and not f.name.endswith("_tests.rs")
            )
        elif p.suffix == ".rs":
            out[name].append(p)
    return out


def edges(mods: dict[str, list[Path]]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, files in mods.items():
        for f in files:
            text = TESTS.split(f.read_text(), maxsplit=1)[0]
            text = strip_comments(text)
            found = set(USE.findall(text))
            for group in GROUP.findall(text):
                found.update(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
            graph[m].update(t for t in found if t in mods and t != m)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    graph = edges(modules())
    if "--dot" in sys.argv:
        print("digraph brain {")
        for a in sorted(graph):
            for b in sorted(graph[a]):
                print(f'  "{a}" -> "{b}";')
        print("}")
    elif "--edges" in sys.argv:
        for a in sorted(graph):
            print(f"{a} -> {', '.join(sorted(graph[a])) or '(nothing)'}")
    found = circles(graph)
    for comp in found:
        inside = [f"{a} -> {b}" for a in comp for b in sorted(graph[a]) if b in comp]
        print(f"import circle among {', '.join(comp)}: {'; '.join(inside)}", file=sys.stderr)
    if not found and "--dot" not in sys.argv:
        print(f"brain modules: {len(graph)}, imports: {sum(len(v) for v in graph.values())}, no circles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
