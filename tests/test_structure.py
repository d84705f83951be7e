"The package's shape: no import circle, no second copy of a model, paper numbers and file names each in one module."
import ast, re
from pathlib import Path

import fusion_study
from fusion_study.fusion import METHODS

PKG = Path(fusion_study.__file__).parent

def imports(path:Path) -> set:
    "Modules of the package that `path` imports anywhere (top level or inside functions)."
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ''
            if node.level == 1: out |= {mod.split('.')[0]} if mod else {a.name for a in node.names}
            elif mod.startswith('fusion_study.'): out.add(mod.split('.')[1])
            elif mod == 'fusion_study': out |= {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.split('.')[1] for a in node.names if a.name.startswith('fusion_study.')}
        elif isinstance(node, ast.Call) and getattr(node.func, 'id', None) == '__import__' and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and str(arg.value).startswith('fusion_study.'): out.add(arg.value.split('.')[1])
    return {m for m in out if (PKG / f'{m}.py').exists()} - {path.stem}

def test_no_import_circle():
    graph = {p.stem: imports(p) for p in PKG.glob('*.py') if not p.stem.startswith('_')}
    state = {}
    def visit(m, path):
        if state.get(m) == 'done': return
        assert state.get(m) != 'open', f"import circle: {' → '.join(path + [m])}"
        state[m] = 'open'
        for n in graph[m]: visit(n, path + [m])
        state[m] = 'done'
    for m in graph: visit(m, [])
    assert 'extract' not in graph['data'] and 'batched' in graph['train'] and 'loop' in graph['batched']
    assert {'paper', 'results'} <= graph['report'] and 'results' in graph['study']      # report reads through the schema and paper.py

def test_no_model_written_twice():
    "The engines name no fusion method and no parameter of one: they read the modules."
    for name in ('loop', 'batched', 'train'):
        src = (PKG / f'{name}.py').read_text()
        if name != 'loop':                           # the loop's RunSpec has a default method, its one mention
            for m in METHODS: assert not re.search(rf"['\"]{m}['\"]", src), f"{name}.py names the method {m!r}"
        assert not re.search(r"['\"](attn|head|fuse|text_proj|image_proj)\.", src), f"{name}.py names a parameter"
