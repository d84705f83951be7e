"""The notebooks as their readers open them: a real JupyterLab server (the one the project installs) on the smoke
runs and on the site built from them, each executed notebook opened in headless Chromium, and every chart output the
notebook holds drawn by JupyterLab's own Vega renderer (a `canvas.marks` or `svg.marks` per chart), in the runs
folder's copy and in the copy the site offers for download. Nothing here trusts a notebook: an untrusted one must draw."""
import json, os, re, shutil, socket, subprocess, sys, tempfile, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest
from conftest import CHROMIUM

needs_browser = pytest.mark.skipif(CHROMIUM is None, reason='no Chromium binary on PATH: install the Debian package '
                                   '`chromium` (.ci/run does) to run the JupyterLab test')
FLAGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--window-size=1400,1600', '--virtual-time-budget=20000', '--dump-dom']
NOTEBOOKS = ['smoke_aligned/study.ipynb', 'degradation/degradation.ipynb', 'theory/theory.ipynb',
             'report/report.ipynb']
MARKS = re.compile(r'<(canvas|svg)\b[^>]*class="marks"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def jupyterlab(smoke_runs, site, tmp_path_factory):
    """A JupyterLab server on copies of the smoke runs' notebooks (runs/) and of the site's (site/): opening a
    notebook makes Jupyter write a checkpoint beside it, which must not land in the shared runs and site.
    Yields (its address, its root)."""
    runs, _ = smoke_runs
    root = tmp_path_factory.mktemp('lab')
    for name, folder in (('runs', runs), ('site', site/'runs')):
        for n in NOTEBOOKS:
            (root/name/n).parent.mkdir(parents=True, exist_ok=True); shutil.copyfile(folder/n, root/name/n)
    state, port = tmp_path_factory.mktemp('jupyter'), free_port()
    env = {**os.environ, 'JUPYTER_RUNTIME_DIR': str(state/'runtime'), 'JUPYTERLAB_WORKSPACES_DIR': str(state/'ws')}
    server = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', '--allow-root', f'--port={port}',
                               '--IdentityProvider.token=', '--ServerApp.password=', f'--ServerApp.root_dir={root}',
                               '--LabApp.news_url=None', f'--LabApp.workspaces_dir={state/"ws"}'],
                              env=env, stdout=subprocess.DEVNULL, stderr=open(state/'server.log', 'w'))
    url = f'http://127.0.0.1:{port}'
    try:
        for _ in range(120):
            try: urllib.request.urlopen(f'{url}/api/status', timeout=1); break
            except OSError: time.sleep(0.25)
        else: pytest.fail(f"JupyterLab did not start: {(state/'server.log').read_text()[-2000:]}")
        yield url, root
    finally:
        server.terminate(); server.wait(timeout=30)

def chart_outputs(path:Path) -> int:
    "How many outputs of the notebook at `path` hold a chart (any Vega or Vega-Lite spec, whatever its version)."
    nb = json.loads(path.read_text(encoding='utf-8'))
    return sum(any('vega' in k for k in o.get('data', {})) for c in nb['cells'] for o in c.get('outputs', []))

def open_in_lab(url:str, rels:list) -> list:
    """The DOM of JupyterLab with each notebook of `rels` open alone (a fresh workspace), after its outputs
    were drawn; one browser profile for all of them, so JupyterLab's code is fetched once."""
    doms = []
    with tempfile.TemporaryDirectory() as profile:
        for rel in rels:
            ws = f'test-{len(doms)}-{abs(hash(rel))}'
            p = subprocess.run([CHROMIUM, *FLAGS, f'--user-data-dir={profile}', f'{url}/lab/workspaces/{ws}/tree/{rel}?reset'],
                               capture_output=True, text=True, timeout=180)
            doms.append(p.stdout)
    return doms

@needs_browser
def test_jupyterlab_draws_every_chart_of_the_runs_and_the_published_notebooks(jupyterlab, smoke_runs, site):
    url, root = jupyterlab
    copies = [root/'runs'/n for n in NOTEBOOKS] + [root/'site'/n for n in NOTEBOOKS]
    rels = [str(p.relative_to(root)) for p in copies]
    with ThreadPoolExecutor(2) as pool:                                    # two browsers, one per core
        halves = list(pool.map(open_in_lab, [url] * 2, [rels[:len(rels) // 2], rels[len(rels) // 2:]]))
    for path, dom in zip(copies, halves[0] + halves[1]):
        want = chart_outputs(path)
        assert 'jp-Notebook' in dom, f"{path}: JupyterLab did not open it"
        assert want > 0, f"{path}: no chart output to draw"
        drawn = len(MARKS.findall(dom))
        assert drawn == want, f"{path}: JupyterLab drew {drawn} of its {want} charts"
        assert 'alt.LayerChart(' not in dom and 'alt.FacetChart(' not in dom and 'chart error' not in dom, path
