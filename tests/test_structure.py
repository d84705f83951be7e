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

# ---- issue 26: small rooms, one word table, no text read back
NBS = PKG.parent/'nbs'
MAX_LINES, MAX_COMPLEXITY = 450, 25

def modules() -> list:
    return sorted(p for p in PKG.glob('*.py') if not p.stem.startswith('_'))

def test_no_module_over_450_lines():
    long = {p.name: n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"

def test_no_function_over_complexity_25():
    "Cyclomatic complexity (radon, the McCabe count) of every function and method of the package."
    from radon.complexity import cc_visit
    high = [f"{p.name}:{b.fullname} {b.complexity}" for p in modules() for b in cc_visit(p.read_text()) if b.complexity > MAX_COMPLEXITY]
    assert not high, f"functions over complexity {MAX_COMPLEXITY}: {high}"

def test_the_complexity_count_can_fail():
    from radon.complexity import cc_visit
    branches = '\n'.join(f"    if x == {i}: return {i}" for i in range(MAX_COMPLEXITY + 1))
    assert max(b.complexity for b in cc_visit(f"def f(x):\n{branches}\n")) > MAX_COMPLEXITY

def code_cells(nb:Path) -> str:
    import json
    return '\n'.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code')

def test_only_cli_imports_site():
    "The site is the top floor: no module and no notebook but the command line (and the site's own) imports it."
    users = [p.stem for p in modules() if 'site' in imports(p) and p.stem not in ('cli', 'site')]
    users += [nb.name for nb in NBS.glob('*.ipynb') if re.search(r'fusion_study\.site\b|from fusion_study import .*\bsite\b', code_cells(nb)) and not nb.stem.endswith(('_site', '_cli'))]
    assert not users, f"below cli, these import site: {users}"

OWN_TEXT_READ_BACK = {                     # the known cases of the package parsing words it wrote itself (issue 26), each by its pattern
    r"\.split\(' \('\)\[0\]": "advise._short cut a method's name out of its own sentence",
    r"\.split\(\)\[0\]\.replace\(',', ''\)": "alignment_chart read '1,024 training pairs' back as a number",
    r"claim\.str\.startswith": "findings found the central claim by its wording",
    r"'text–text' in d\b|d\.startswith\('synthetic'\)": "findings guessed the kind of features from short_label's text",
    r"HOLDER = re\.compile|\\\(pid \(\\d\+\) on": "the runner regex-parsed the lock file's sentence",
    r"float\(r?\.?\w*\['zero-shot AUC'\]": "baselines_sentence turned a 2-decimal AUC string back into a float",
}

def test_no_text_this_package_wrote_is_parsed_back():
    found = [f"{p.name}: {why}" for p in modules() for pat, why in OWN_TEXT_READ_BACK.items() if re.search(pat, p.read_text())]
    assert not found, found

def test_the_read_back_patterns_match_what_they_name():
    "Each pattern catches the code it was written for (so the test above can fail)."
    old = {"WORDS.get(m, m).split(' (')[0]": 0, "int(p.split()[0].replace(',', ''))": 1, "v[v.claim.str.startswith('Alignment decides')]": 2,
           "'real text–text' if 'text–text' in d else 'synthetic' if d.startswith('synthetic')": 3, "HOLDER = re.compile(r'\\(pid (\\d+) on (.+?), since')": 4}
    pats = list(OWN_TEXT_READ_BACK)
    for code, i in old.items(): assert re.search(pats[i], code), (pats[i], code)

def test_every_method_and_kind_of_evidence_has_one_entry_in_the_word_table():
    from fusion_study.words import METHODS as WORDS, EVIDENCE, evidence
    from fusion_study.core import METHOD_CLASSES
    assert set(WORDS) == set(METHOD_CLASSES) == set(METHODS)
    cnn = evidence(dict(source='features', image_encoder='effnet-lite:lite0'))          # an ImageNet CNN's images: a kind of its own
    assert {evidence(dict(source=s)) for s in ('synthetic', 'features', 'captions', 'file')} | {'token-level', cnn} == set(EVIDENCE)
    for name in ('report', 'findings', 'verdicts', 'instrument', 'site', 'advise'):      # the words are read, not typed again
        src = (PKG/f'{name}.py').read_text()
        assert not re.search(r"\bWORDS = \{|EVIDENCE = \(|def (evidence|feature_words|source_label|short_label|feature_label|set_label)\(", src), name

def test_readme_notebook_table_matches_the_notebooks():
    """The README's notebook table (README.md is made from nbs/index.ipynb by nbdev_readme) lists every module notebook with the module it
    defines, in reading order; index.ipynb, the front page, and any other page that defines no module are not rows."""
    readme = (PKG.parent/'README.md').read_text()
    rows = re.findall(r"^\| `(\d\d\w*?_\w+)` \| `fusion_study\.(\w+)` \|", readme, flags=re.M)
    want, not_modules = [], []
    for nb in sorted(NBS.glob('*.ipynb')):
        exp = re.search(r'#\| default_exp (\S+)', code_cells(nb))
        if exp: want.append((nb.stem, exp.group(1)))
        else: not_modules.append(nb.name)
    assert 'index.ipynb' in not_modules
    assert rows == want, f"README table {rows} != notebooks {want}"
