#!/usr/bin/env python3
"""dvc.yaml code deps from the import graph: every audiolab module a stage runs must be one of its deps.

A stage's entry points are what its `cmd` runs (a papermill notebook, a `.py` script, `python -m audiolab...`) and
the scripts its deps list outside the package (`bench` = every `bench/*.py`). Their audiolab imports (code cells
parsed with `ast`; `!` shell lines, `-m audiolab...` and `"audiolab.x.y:fn"` strings count too) are closed over the
package's own import graph (every `audiolab/**/*.py`, relative and function-local imports included). Each module
file reached must be covered by a dep: its own path or a listed parent folder (`audiolab/train`, `audiolab`).

    python scripts/dvc_deps.py --check   # exit 1 naming each stage and the module paths its deps miss
    python scripts/dvc_deps.py --write   # rewrite the stages' deps lists in place

`--write` edits only the `deps:` lists, as text, so comments, the order of keys and every other line stay as they
are. Deps outside `audiolab/` (notebooks, data, models, params) are kept; a package dep is kept while it exists and
covers a module the stage imports, and dropped otherwise; missing modules are added after the stage's last package
dep (or after its entry point). Package `__init__.py` files that only set `__version__` are not required.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PKG = "audiolab"
MODULE_STRING = re.compile(rf"^{PKG}(?:\.\w+)+(?::\w*)?$")  # "audiolab.models.kick:train_kick_vae"
MODULE_TOKEN = re.compile(rf"\b{PKG}(?:\.\w+)+")  # in `!` shell lines of notebooks


# ---------------------------------------------------------------------------------------------- the import graph
def module_name(path: Path, root: Path) -> str:
    "`audiolab/nn/attention.py` -> `audiolab.nn.attention`; a package's `__init__.py` -> the package."
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(root: Path) -> dict[str, Path]:
    "Every module of the package under `root`: dotted name -> file."
    return {
        module_name(p, root): p
        for p in sorted((root / PKG).rglob("*.py"))
        if p.name != "_modidx.py" and "__pycache__" not in p.parts
    }


def _code_cells(nb_path: Path) -> tuple[str, list[str]]:
    "A notebook's code cells as one Python source (IPython `!`/`%` lines blanked) and the shell lines apart."
    cells = json.loads(nb_path.read_text(encoding="utf-8"))["cells"]
    lines, shell = [], []
    for c in cells:
        if c.get("cell_type") != "code":
            continue
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        if src.lstrip().startswith("%%"):  # a cell magic: not Python
            shell.append(src)
            continue
        for line in src.splitlines():
            s = line.lstrip()
            if s.startswith(("!", "%")):
                shell.append(s)
                line = line[: len(line) - len(s)] + "pass"
            lines.append(line)
        lines.append("")
    return "\n".join(lines), shell


def _resolve_from(node: ast.ImportFrom, me: str, is_pkg: bool) -> str:
    "The absolute module an `ImportFrom` names, relative levels resolved against module `me`."
    if not node.level:
        return node.module or ""
    base = me.split(".") if is_pkg else me.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def imported_names(source: str, me: str = "", is_pkg: bool = False) -> set[str]:
    """Dotted names a Python source may import: `import`/`from` statements anywhere (relative ones resolved against
    module `me`), `from m import x` also as `m.x` (x may be a submodule), and strings that are a whole module path."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # a source we cannot parse: fall back on the tokens that look like module paths
        return set(MODULE_TOKEN.findall(source))
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out.update(a.name for a in n.names)
        elif isinstance(n, ast.ImportFrom):
            mod = _resolve_from(n, me, is_pkg)
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in n.names if a.name != "*")
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and MODULE_STRING.match(n.value):
            out.add(n.value.split(":")[0])  # importlib.import_module("audiolab.x"), "-m", "audiolab.x:fn"
    return out


def known_modules(names: set[str], modules: dict[str, Path]) -> set[str]:
    "The package modules `names` reach: each name's longest prefix that is a module, and the packages above it."
    out = set()
    for name in names:
        if not (name == PKG or name.startswith(PKG + ".")):
            continue
        while name and name not in modules:
            name = name.rpartition(".")[0]
        while name:  # importing audiolab.nn.attention runs audiolab/__init__.py and audiolab/nn/__init__.py
            if name in modules:
                out.add(name)
            name = name.rpartition(".")[0]
    return out


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    "module -> the package modules it imports (at top level or inside functions)."
    return {
        m: known_modules(imported_names(p.read_text(encoding="utf-8"), m, p.name == "__init__.py"), modules) - {m}
        for m, p in modules.items()
    }


def closure(start: set[str], graph: dict[str, set[str]]) -> set[str]:
    "Every module reachable from `start`."
    seen, todo = set(), list(start)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return seen


def trivial_init(path: Path) -> bool:
    "A package `__init__.py` with nothing but a docstring and `__version__`: editing it changes no stage."
    if path.name != "__init__.py":
        return False
    for n in ast.parse(path.read_text(encoding="utf-8")).body:
        doc = isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
        version = isinstance(n, ast.Assign) and all(
            isinstance(t, ast.Name) and t.id == "__version__" for t in n.targets
        )
        if not (doc or version):
            return False
    return True


# ------------------------------------------------------------------------------------------------------- stages
@dataclass
class Stage:
    name: str
    deps: list[str]
    entries: list[str] = field(default_factory=list)  # notebooks / scripts the stage runs, repo-relative
    modules: set[str] = field(default_factory=set)  # package modules they reach
    required: list[str] = field(default_factory=list)  # files the deps must cover
    missing: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # package deps that do not exist or cover nothing imported
    whole: set[str] = field(default_factory=set)  # package folders whose every module the stage imports


def _norm(p: str) -> str:
    return os.path.normpath(str(p).strip()).replace(os.sep, "/")


def covered(path: str, deps: list[str]) -> bool:
    "Is repo-relative `path` one of `deps` or inside a folder of `deps`?"
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in map(_norm, deps))


def _is_package_path(d: str) -> bool:
    d = _norm(d)
    return d == PKG or d.startswith(PKG + "/")


def _cmd_tokens(cmd) -> list[str]:
    cmds = cmd if isinstance(cmd, list) else [cmd]
    out = []
    for c in cmds:
        try:
            out += shlex.split(str(c))
        except ValueError:
            out += str(c).split()
    return out


def entry_points(spec: dict, root: Path) -> tuple[list[str], set[str]]:
    "What a stage runs: repo-relative notebooks/scripts, and modules it runs with `-m`."
    outs = {_norm(next(iter(o)) if isinstance(o, dict) else o) for o in spec.get("outs", []) or []}
    files, mods = [], set()
    toks = _cmd_tokens(spec.get("cmd", ""))
    for i, t in enumerate(toks):
        if "${" in t:
            continue
        if t.endswith((".ipynb", ".py")) and (root / t).is_file() and _norm(t) not in outs:
            files.append(_norm(t))
        if i and toks[i - 1] == "-m" and (t == PKG or t.startswith(PKG + ".")):
            mods.add(t)
    for d in spec.get("deps", []) or []:  # scripts the stage lists (e.g. `bench`: every bench/*.py it runs)
        d = _norm(d)
        if _is_package_path(d) or "${" in d:
            continue
        p = root / d
        if p.is_file() and p.suffix == ".py":
            files.append(d)
        elif p.is_dir():
            files += [_norm(q.relative_to(root)) for q in sorted(p.glob("*.py"))]
    return list(dict.fromkeys(files)), mods


def _entry_imports(path: Path, root: Path, seen: set[Path]) -> tuple[set[str], list[str]]:
    "Names an entry notebook/script imports, and the sibling scripts it imports (`import _common` in bench/)."
    seen.add(path)
    if path.suffix == ".ipynb":
        source, shell = _code_cells(path)
        names = imported_names(source)
        for line in shell:
            names.update(MODULE_TOKEN.findall(line))
    else:
        names = imported_names(path.read_text(encoding="utf-8"))
    siblings = []
    for n in sorted(names):
        sib = path.parent / (n.split(".")[0] + ".py")
        if not n.startswith(PKG) and sib.is_file() and sib not in seen:
            siblings.append(_norm(sib.relative_to(root)))
            more, more_sibs = _entry_imports(sib, root, seen)
            names |= more
            siblings += more_sibs
    return names, siblings


def analyse(root: Path, dvc_file: str = "dvc.yaml") -> list[Stage]:
    "Every stage of `root/dvc_file` with what it runs, the modules it reaches and what its deps miss."
    root = Path(root)
    spec_all = yaml.safe_load((root / dvc_file).read_text(encoding="utf-8")) or {}
    modules = package_modules(root)
    graph = import_graph(modules)
    folders = {}  # package folder -> the module files under it that count
    for p in modules.values():
        if not trivial_init(p):
            rel = _norm(p.relative_to(root))
            for k in range(1, rel.count("/") + 1):
                folders.setdefault(rel.rsplit("/", k)[0], []).append(rel)
    stages = []
    for name, spec in (spec_all.get("stages") or {}).items():
        spec = spec.get("do", spec) if isinstance(spec, dict) and ("foreach" in spec or "matrix" in spec) else spec
        deps = [str(d) for d in (spec.get("deps") or [])]
        st = Stage(name, deps)
        files, mods = entry_points(spec, root)
        names, seen = set(mods), set()
        for f in list(files):
            got, sibs = _entry_imports(root / f, root, seen)
            names |= got
            files += [s for s in sibs if s not in files]
        st.entries = files
        st.modules = closure(known_modules(names, modules), graph)
        paths = sorted(_norm(modules[m].relative_to(root)) for m in st.modules if not trivial_init(modules[m]))
        st.required = list(dict.fromkeys(files + paths))
        st.missing = [p for p in st.required if not covered(p, deps)]
        st.stale = [
            d
            for d in deps
            if _is_package_path(d) and (not (root / _norm(d)).exists() or not any(covered(p, [d]) for p in paths))
        ]
        st.whole = {f for f in folders if all(p in paths for p in folders[f])}
        stages.append(st)
    return stages


# ------------------------------------------------------------------------------------------------- --write
def new_deps(st: Stage) -> list[str]:
    """The stage's deps with stale package deps dropped and the missing files added after its last package dep
    (a folder when the stage imports every module in it); non-code deps stay as they are."""
    keep = [d for d in st.deps if d not in st.stale]
    missing = [p for p in st.required if not covered(p, keep)]
    entries = [m for m in missing if not _is_package_path(m)]  # the stage's own notebook/script: first
    mods = []
    for m in (m for m in missing if _is_package_path(m)):
        top = [f for f in sorted(st.whole, key=len) if m.startswith(f + "/")]  # the widest folder fully imported
        mods.append(top[0] if top else m)
    mods = list(dict.fromkeys(mods))
    out = entries + keep
    last_pkg = max((i for i, d in enumerate(out) if _is_package_path(d)), default=None)
    at = last_pkg + 1 if last_pkg is not None else (len(entries) + (1 if keep and keep[0] in st.entries else 0))
    out = out[:at] + mods + out[at:]
    # a package dep inside another listed package folder says nothing more
    return [d for d in out if not (_is_package_path(d) and any(e != d and covered(_norm(d), [e]) for e in out))]


_SCALAR = re.compile(r"""^(?P<val>"[^"]*"|'[^']*'|[^#\s][^#]*?)\s*(?P<comment>#.*)?$""")


def _unquote(s: str) -> str:
    s = s.strip()
    return s[1:-1] if len(s) > 1 and s[0] == s[-1] and s[0] in "'\"" else s


def _stage_spans(lines: list[str]) -> dict[str, tuple[int, int]]:
    "stage name -> (first, end) line indices of its block under `stages:`."
    start = next(i for i, ln in enumerate(lines) if re.match(r"^stages:\s*(#.*)?$", ln))
    heads = []
    for i in range(start + 1, len(lines)):
        ln = lines[i]
        if ln.strip() and not ln.startswith(" ") and not ln.startswith("#"):
            heads.append((None, i))  # the next top-level key ends the stages
            break
        m = re.match(r"^  ([^\s#][^:]*):\s*(#.*)?$", ln)
        if m:
            heads.append((_unquote(m.group(1)), i))
    end_all = heads[-1][1] if heads and heads[-1][0] is None else len(lines)
    heads = [h for h in heads if h[0] is not None]
    return {n: (i, heads[k + 1][1] if k + 1 < len(heads) else end_all) for k, (n, i) in enumerate(heads)}


def _flow_lines(indent: str, items: list[str], comment: str, width: int = 120) -> list[str]:
    "`deps: [a, b, ...]` wrapped at `width`, continuation lines aligned after the bracket."
    head = f"{indent}deps: ["
    out, cur = [], head
    for k, it in enumerate(items):
        piece = it + ("," if k < len(items) - 1 else "]")
        if cur not in (head,) and len(cur) + 1 + len(piece) > width:
            out.append(cur)
            cur = " " * len(head) + piece
        else:
            cur = cur + ("" if cur == head else " ") + piece
    if not items:
        cur += "]"
    out.append(cur + (f"  {comment}" if comment else ""))
    return out


def rewrite_deps(text: str, new: dict[str, list[str]]) -> str:
    "dvc.yaml `text` with the deps lists of the stages in `new` replaced, every other line unchanged."
    lines = text.split("\n")
    spans = _stage_spans(lines)
    for name in sorted(new, key=lambda n: -spans[n][0]):  # bottom-up: earlier indices stay valid
        first, end = spans[name]
        items = new[name]
        k = next((i for i in range(first + 1, end) if re.match(r"^\s+deps:", lines[i])), None)
        if k is None:  # no deps key: add a block one line under the stage's `cmd`
            ind = re.match(r"^(\s+)", lines[first + 1]).group(1)
            c = next(i for i in range(first + 1, end) if re.match(rf"^{ind}cmd:", lines[i]))
            c += 1
            while c < end and (lines[c].startswith(ind + " ") or not lines[c].strip()):
                c += 1
            lines[c:c] = [f"{ind}deps:"] + [f"{ind}  - {it}" for it in items]
            continue
        ind = re.match(r"^(\s+)", lines[k]).group(1)
        rest = lines[k][len(ind) + len("deps:") :].strip()
        if rest.startswith("["):  # flow style, possibly over several lines
            j, body = k, rest
            while "]" not in re.sub(r"#.*$", "", body):
                j += 1
                body += " " + lines[j].strip()
            inner, _, after = body[1:].partition("]")
            lines[k : j + 1] = _flow_lines(ind, items, after.strip())
            continue
        j, entries = k + 1, []  # block style: `- item  # comment` lines
        item_ind = None
        while j < end:
            ln = lines[j]
            m = re.match(r"^(\s*)- (.*)$", ln)
            if m and len(m.group(1)) >= len(ind):
                item_ind = item_ind or m.group(1)
                sm = _SCALAR.match(m.group(2).strip())
                entries.append((_unquote(sm.group("val")) if sm else m.group(2).strip(), [ln]))
            elif ln.strip().startswith("#") and entries and len(ln) - len(ln.lstrip()) > len(ind):
                entries[-1][1].append(ln)  # a comment line under an item travels with it
            else:
                break
            j += 1
        item_ind = item_ind or ind + "  "
        by_val = {v: ls for v, ls in entries}
        body = []
        for it in items:
            body += by_val.get(it, [f"{item_ind}- {it}"])
        lines[k + 1 : j] = body
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 when a stage's deps miss a module it imports")
    mode.add_argument("--write", action="store_true", help="rewrite the deps lists of dvc.yaml in place")
    ap.add_argument("--root", default=".", help="repository root (default: .)")
    ap.add_argument("--dvc", default="dvc.yaml", help="the pipeline file, relative to --root")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each stage's entry points and modules")
    a = ap.parse_args(argv)
    root = Path(a.root)
    stages = analyse(root, a.dvc)
    if a.verbose:
        for st in stages:
            print(f"{st.name}: runs {st.entries}; imports {sorted(st.modules)}")
    if a.check:
        missing = [f"{st.name}: deps miss {p}" for st in stages for p in st.missing]
        stale = [f"{st.name}: dep {d} is gone or covers no module the stage imports" for st in stages for d in st.stale]
        for line in stale:
            print(f"warning: {line}", file=sys.stderr)
        for line in missing:
            print(line)
        gone = [d for st in stages for d in st.stale if not (root / _norm(d)).exists()]
        if missing or gone:
            print(f"{len(missing)} module(s) missing from dvc.yaml deps; fix: python scripts/dvc_deps.py --write")
            return 1
        print(f"dvc.yaml deps cover every module the {len(stages)} stages import")
        return 0
    changed = {st.name: new_deps(st) for st in stages if st.missing or st.stale}
    path = root / a.dvc
    if changed:
        path.write_text(rewrite_deps(path.read_text(encoding="utf-8"), changed), encoding="utf-8")
    for st in stages:
        if st.name in changed:
            added = [d for d in changed[st.name] if d not in st.deps]
            print(f"{st.name}: + {added or '-'}  - {st.stale or '-'}")
    again = [st for st in analyse(root, a.dvc) if st.missing]
    if again:  # the text edit did not take (an unusual layout): say so rather than pretend
        print("still missing after --write:", {st.name: st.missing for st in again}, file=sys.stderr)
        return 1
    print(f"{path}: {len(changed)} stage(s) rewritten" if changed else f"{path}: deps already complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
