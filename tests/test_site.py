"The site built from the smoke runs, opened in headless Chromium: every page loads without JavaScript errors and draws its charts, and the report shows its verdict table."
import re, shutil, subprocess, tempfile
from pathlib import Path
import pandas as pd
import pytest
from conftest import cli

CHROMIUM = next((shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(n)), None)
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--enable-logging=stderr', '--v=0', '--virtual-time-budget=10000', '--dump-dom']
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason='no Chromium binary on PATH: install the Debian package `chromium` (.ci/run does) to run the browser test')

@pytest.fixture(scope='session')
def site(smoke_runs, tmp_path_factory):
    runs, _ = smoke_runs
    out = tmp_path_factory.mktemp('site')/'_site'
    r = cli('site', '--runs-dir', runs, '--out', out, '--no-quarto')
    assert r.returncode == 0, r.stdout + r.stderr
    return out

def pages(site): return sorted((site/'runs').rglob('*.html'))

def open_page(path:Path) -> tuple[str, list]:
    "The page's DOM after its scripts ran, and the JavaScript errors Chromium logged."
    with tempfile.TemporaryDirectory() as profile:
        p = subprocess.run([CHROMIUM, *FLAGS, f'--user-data-dir={profile}', path.as_uri()], capture_output=True, text=True, timeout=180)
    errors = [l for l in p.stderr.splitlines() if 'Uncaught' in l or ('CONSOLE' in l and 'rror' in l)]
    return p.stdout, errors

def charts(dom:str) -> list:
    "For each inline chart container, whether vega-embed drew an <svg> or <canvas> into it."
    return [bool(re.match(r'\s*(<[^>]*>\s*)*?<(svg|canvas)\b', dom[m.end():m.end() + 5000]))
            for m in re.finditer(r'<div[^>]*class="fusion-chart[^"]*"[^>]*>', dom)]

def test_site_has_a_page_per_notebook_and_the_report_as_home(site, smoke_runs):
    runs, _ = smoke_runs
    executed = {p.relative_to(runs).with_suffix('.html') for p in runs.glob('*/*.ipynb')}
    assert {p.relative_to(site/'runs') for p in pages(site)} == executed and Path('report/report.html') in executed
    assert 'runs/report/report.html' in (site/'index.html').read_text()
    for page in pages(site):
        text = page.read_text(encoding='utf-8')
        assert 'class="fusion-nav"' in text                                                             # the navbar
        assert not re.search(r'<(script|link)\b[^>]*\b(src|href)="https?://', text), page                 # nothing loaded from the network
        for href in re.findall(r'href="(\.\./[^"#]+\.html)"', text): assert (page.parent/href).resolve().exists(), (page, href)

def test_report_tables_come_from_the_results_files(site, smoke_runs):
    runs, _ = smoke_runs
    report = (site/'runs'/'report'/'report.html').read_text(encoding='utf-8')
    for name in ('smoke_aligned', 'smoke_unaligned', 'degradation'): assert name in report
    t1 = pd.read_csv(runs/'smoke_aligned'/'table1.csv').query("metric == 'accuracy' and method == 'concat'").iloc[-1]
    assert f"{t1['mean'] * 100:.2f} ± {t1['std'] * 100:.2f}" in report
    t2 = pd.read_csv(runs/'degradation'/'table2.csv')
    assert f"{t2.advantage.iloc[-1]:+.2f}" in report
    for verdict in ('reproduced', 'not reproduced', 'not testable on this data'): assert verdict in report

@needs_browser
def test_every_page_renders_in_chromium_without_errors(site):
    for page in pages(site):
        dom, errors = open_page(page)
        assert '</html>' in dom, f"{page}: no DOM came back"
        assert not errors, f"{page}: JavaScript errors {errors}"
        drawn = charts(dom)
        assert drawn and all(drawn), f"{page}: {drawn.count(False)} of {len(drawn)} charts not drawn"
        assert not re.search(r'class="fusion-chart[^"]*"[^>]*>\s*chart error', dom), f"{page}: a chart failed"
        if page.name == 'report.html':
            assert re.search(r'<table[^>]*class="report-table', dom) and 'Claims and verdicts' in dom
