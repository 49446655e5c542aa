#!/usr/bin/env python3
"""Fails when the modules of src/ import one another in a cycle.

Each file under src/ is one module (`src/runtime/native/lower.rs` is `runtime::native::lower`, a
`mod.rs` its folder's module). A module depends on another when its non-test code names it by a
`crate::`, `super::` or `self::` path or through a `use` of a child module; declaring a child (`mod x;`)
is not a dependency, nor is naming where an item is visible (`pub(in crate::x)`). Cycles are looked for
between files and between the top-level modules (each with everything under it). Inline test modules (`#[cfg(test)] mod tests { … }` at a file's end) and test-only
files (`tests.rs`) are left out: tests may reach anywhere. Prints each cycle found and exits 1, or
prints the number of modules and dependencies checked and exits 0.

Usage: scripts/check-module-cycles.py [src]
"""
import re
import sys
from pathlib import Path

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_CHILD = re.compile(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?use\s+([a-z_][a-z0-9_]*)::", re.M)
BRACED_USE = re.compile(r"\b(crate|super|self)::((?:[A-Za-z_][A-Za-z0-9_]*::)*)\{([^{}]*)\}")


def module_name(src, file):
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def non_test_code(text):
    """The file without comments and without its trailing `#[cfg(test)]` module."""
    text = re.sub(r"//[^\n]*", "", text)
    cut = re.search(r"#\[cfg\(test\)\]\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+tests\s*\{", text)
    return text[: cut.start()] if cut else text


def inline_modules(code):
    """For each `mod name {` in `code`: (start, end, name), the span of its body."""
    spans, stack, depth = [], [], 0
    opening = {m.end() - 1: m.group(1) for m in re.finditer(r"\bmod\s+([a-z_][a-z0-9_]*)\s*\{", code)}
    for at, char in enumerate(code):
        if char == "{":
            depth += 1
            if at in opening:
                stack.append((opening[at], at, depth))
        elif char == "}":
            if stack and stack[-1][2] == depth:
                name, start, _ = stack.pop()
                spans.append((start, at, name))
            depth -= 1
    return spans


def dependencies(module, code, modules):
    """The modules of `modules` that `code`, the code of `module`, names."""
    found = set()
    # `pub(in crate::a::b)` names where an item is visible, not something it uses.
    code = re.sub(r"pub\(in [^)]*\)", "pub", code)
    spans = inline_modules(code)

    def here(at):
        """The module the code at offset `at` is in: the file's, or an inline module inside it."""
        inner = sorted((start, name) for start, end, name in spans if start < at < end)
        return module + tuple(name for _, name in inner)

    def resolve(root, segments, at):
        current = here(at)
        if root == "crate":
            base = ()
        elif root == "super":
            base = current[:-1]
            while segments and segments[0] == "super":
                base, segments = base[:-1], segments[1:]
        else:
            base = current
        path = base + tuple(segments)
        # The longest prefix that is a module: `crate::runtime::kernels::Window` depends on kernels.
        for end in range(len(path), 0, -1):
            if path[:end] in modules:
                return path[:end]
        return None

    for match in PATH.finditer(code):
        segments = [s for s in match.group(2).split("::") if s]
        target = resolve(match.group(1), segments, match.start())
        if target:
            found.add(target)
    for match in BRACED_USE.finditer(code):
        prefix = [s for s in match.group(2).split("::") if s]
        for item in match.group(3).split(","):
            head = item.strip().split("::")[0].split(" ")[0]
            if head and head != "self":
                target = resolve(match.group(1), prefix + [head], match.start())
                if target:
                    found.add(target)
    # `use child::Item;` and `use child::{a, b};` in a module name its own children (and theirs).
    for match in USE_CHILD.finditer(code):
        child = module + (match.group(1),)
        if child in modules:
            found.add(child)
            rest = code[match.end():code.index(";", match.end())]
            for item in re.findall(r"[a-z_][a-z0-9_]*", rest.split("{", 1)[1] if rest.startswith("{") else ""):
                if child + (item,) in modules:
                    found.add(child + (item,))
    found.discard(module)
    return found


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, on_stack, stack, result, counter = {}, {}, set(), [], [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
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
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def main():
    src = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "src")
    files = {module_name(src, f): f for f in sorted(src.rglob("*.rs")) if f.name != "tests.rs" and f.name != "main.rs"}
    modules = set(files)
    graph = {m: dependencies(m, non_test_code(f.read_text()), modules) for m, f in files.items()}
    # Whole subtrees too: `runtime` using `preprocess` while `preprocess` uses `runtime::kernels` is
    # a cycle between the top-level modules, though no two files name each other.
    top = {}
    for m, targets in graph.items():
        top.setdefault(m[:1], set()).update(t[:1] for t in targets if t[:1] != m[:1])
    found = [(c, graph) for c in cycles(graph)] + [(c, top) for c in cycles(top)]
    name = lambda m: "::".join(m) or "crate"
    if found:
        for component, edges in found:
            print("import cycle:", ", ".join(name(m) for m in component))
            for m in component:
                for t in sorted(edges.get(m, set()) & set(component)):
                    print(f"  {name(m)} -> {name(t)}")
        sys.exit(1)
    print(f"no import cycles among {len(modules)} modules ({sum(len(d) for d in graph.values())} dependencies)")


if __name__ == "__main__":
    main()
