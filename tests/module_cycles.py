#!/usr/bin/env python3
"""Import cycles between the modules of src/ (ARCHITECTURE.md, rule "no import cycles").

Every file under src/ is a module (`src/api/custom.rs` is `api::custom`, a `mod.rs`
is its folder). A module depends on another when its code (comments and the
trailing `#[cfg(test)] mod tests` block left out) names it by `crate::...`,
`super::...` or in a `use crate::{...}` list. A module and its own ancestors or
descendants do not count as a cycle: a parent declares its children. Prints each
cycle (a strongly connected set of two or more modules) and exits 1 if there is one.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def modules():
    found = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            if parts and parts[-1] == "tests":
                continue
            found["::".join(parts)] = path
    return found


def code_of(path):
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", text, flags=re.S)
    return "\n".join(l for l in text.split("\n") if not l.strip().startswith("//"))


def main():
    mods = modules()

    def resolve(path):
        parts = path.split("::")
        for i in range(len(parts), 0, -1):
            candidate = "::".join(parts[:i])
            if candidate in mods:
                return candidate
        return None

    def related(a, b):
        return a == b or a.startswith(b + "::") or b.startswith(a + "::")

    edges = {m: set() for m in mods}
    for m, path in mods.items():
        code = code_of(path)
        base = m.split("::") if m else []
        targets = [resolve(x) for x in re.findall(r"\bcrate::((?:\w+::)*\w+)", code)]
        for ups, rest in re.findall(r"\b((?:super::)+)((?:\w+::)*\w+)", code):
            up = base[: len(base) - ups.count("super::")]
            targets.append(resolve("::".join(up + rest.split("::"))))
        for group in re.findall(r"use crate::\{([^}]*)\}", code, flags=re.S):
            for item in re.split(r"[,\s]+", group):
                item = item.split("::{")[0].strip()
                if item:
                    targets.append(resolve(item))
        edges[m] = {t for t in targets if t and not related(m, t)}

    # Tarjan's strongly connected components.
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
                cycles.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    for c in cycles:
        print("import cycle: " + " <-> ".join(c), file=sys.stderr)
    print(f"{len(mods)} modules, {len(cycles)} import cycle(s)")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
