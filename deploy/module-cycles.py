#!/usr/bin/env python3
"""Import circles among the modules of one crate (default: services/poz/src).

Builds the graph of top-level modules from `crate::module` paths in each
file (test modules, from `#[cfg(test)]` on, left out), maps names the
crate root re-exports (`pub use module::{A, B}` in lib.rs) and exported
macros (`#[macro_export]`) to the module that defines them, and prints
the graph and every strongly connected group of two or more modules.
Exits 1 when there is one. A rough check, by text: it reads paths, not
the compiler's resolution.

    python3 deploy/module-cycles.py [SRC_DIR]
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "services/poz/src"
files = {}
for dirpath, _, names in os.walk(root):
    for f in names:
        if f.endswith(".rs"):
            p = os.path.join(dirpath, f)
            files[os.path.relpath(p, root)[:-3]] = open(p, encoding="utf-8").read()

def top_module(rel):
    return rel.split("/")[0]

# Names reachable as crate::NAME, by the module that defines them.
at_root = {}
lib = files.get("lib", "")
for module, names in re.findall(r"pub use (\w+)::\{([^}]*)\};", lib):
    for n in re.findall(r"\w+", names):
        at_root[n] = module
for module, name in re.findall(r"pub use (\w+)::(\w+);", lib):
    at_root[name] = module
for rel, text in files.items():
    for name in re.findall(r"#\[macro_export\]\s*macro_rules!\s*(\w+)", text):
        at_root[name] = top_module(rel)

graph = {}
for rel, text in files.items():
    if rel in ("lib", "main"):
        continue
    me = top_module(rel)
    text = text.split("#[cfg(test)]")[0]
    deps = set(re.findall(r"\bcrate::([a-z_0-9]+)", text))
    for group in re.findall(r"use crate::\{([^}]*)\}", text, re.S):
        deps |= set(re.findall(r"(?:^|,)\s*(\w+)", group))
    deps |= {at_root[n] for n in re.findall(r"\bcrate::(\w+)", text) if n in at_root}
    graph.setdefault(me, set()).update(deps)
graph = {m: sorted(d for d in deps if d in graph and d != m) for m, deps in graph.items()}

# Tarjan's strongly connected components.
index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)

def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        group = []
        while True:
            w = stack.pop()
            on_stack.discard(w)
            group.append(w)
            if w == v:
                break
        if len(group) > 1:
            groups.append(sorted(group))

for v in sorted(graph):
    if v not in index:
        visit(v)
for m in sorted(graph):
    print(f"{m}: {' '.join(graph[m])}")
print("circles:", groups if groups else "none")
sys.exit(1 if groups else 0)
