"""The package's layers: imports go one way, from a module to the modules of the same or earlier notebooks, and none
hides inside a function (where it would close an import cycle unseen)."""
import ast, json, re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG, NBS = ROOT/'text2img_diffusion', ROOT/'nbs'
ORDER = sorted(p.stem for p in NBS.glob('[0-9]*.ipynb'))            # the reading order: nbdev's, by file name

def modules() -> dict:
    "module name → its parsed source, for every exported module"
    return {p.stem: ast.parse(p.read_text()) for p in sorted(PKG.glob('*.py')) if not p.stem.startswith('_')}

def package_imports(tree, inside_functions_only=False) -> list:
    "(module imported, line) for every import of a package module in `tree` (all of them, or those inside functions)"
    nodes = ([n for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(f)]
             if inside_functions_only else list(ast.walk(tree)))
    out = []
    for n in nodes:
        if isinstance(n, ast.ImportFrom):
            mod = n.module or ''
            if n.level: out += [(mod or a.name, n.lineno) for a in n.names] if not mod else [(mod, n.lineno)]
            elif mod.startswith('text2img_diffusion.'): out.append((mod.split('.')[1], n.lineno))
            elif mod == 'text2img_diffusion': out += [(a.name, n.lineno) for a in n.names]
        elif isinstance(n, ast.Import):
            out += [(a.name.split('.')[1], n.lineno) for a in n.names if a.name.startswith('text2img_diffusion.')]
    return out

def notebooks_of(module: str) -> set:
    "The notebooks whose cells are exported into `module`"
    return set(re.findall(r'^# %% \.\./nbs/(\S+)\.ipynb', (PKG/f'{module}.py').read_text(), re.M))

def test_no_package_import_inside_a_function():
    found = [f'{m}.py:{line} imports {k}' for m, t in modules().items() for k, line in package_imports(t, True)]
    assert not found, found

def test_import_graph_is_acyclic_and_follows_the_notebooks():
    mods = modules()
    graph = {m: {k for k, _ in package_imports(t)} - {m} for m, t in mods.items()}
    unknown = {k for ks in graph.values() for k in ks} - set(mods)
    assert not unknown, f"imports of modules that do not exist: {unknown}"
    seen, done = set(), set()
    def visit(m, path):
        assert m not in seen or m in done, f"import cycle: {' -> '.join(path + [m])}"
        if m in done: return
        seen.add(m)
        for k in sorted(graph[m]): visit(k, path + [m])
        done.add(m)
    for m in graph: visit(m, [])
    pos = {m: [ORDER.index(nb) for nb in notebooks_of(m)] for m in mods}
    late = [f"{m} (from {min(pos[m])}: {ORDER[min(pos[m])]}) imports {k} (exported from {ORDER[max(pos[k])]})"
            for m, ks in graph.items() for k in ks if max(pos[k]) > min(pos[m])]
    assert not late, late

def test_no_notebook_uses_a_later_notebooks_module():
    "Test cells too; the `t2i` command table names each command's module as 'text2img_diffusion.module:function', to be\n    imported only when that command runs: such a by-name entry is not a use"
    owner = {m: max(ORDER.index(nb) for nb in notebooks_of(m)) for m in modules()}
    late = []
    for i, nb in enumerate(ORDER):
        for c in json.loads((NBS/f'{nb}.ipynb').read_text())['cells']:
            if c['cell_type'] != 'code': continue
            s = ''.join(c['source'])
            for m in re.findall(r'text2img_diffusion\.(\w+)(?!\w*:\w)', s):
                if m in owner and owner[m] > i: late.append(f"{nb} uses {m} (from {ORDER[owner[m]]})")
    assert not late, sorted(set(late))
