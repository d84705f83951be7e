"""Issue 39: a user's strings on the site are text, never markup. Features files named like HTML and
Markdown (legal file names), item ids and a params description holding a script, run through the
notebooks that name them and published both ways (the static fallback, and Quarto where installed);
each page opened in headless Chromium: no handler attribute and no script of the payload in the DOM,
the payload did not run (it would retitle the page), and each name is shown as typed where a page
names it — the home page's findings, the headings of Tables 1 and 2, the who-wins and configurations
tables, each page's heading and `<title>`, the instrument's words, the navbar."""
import math
from pathlib import Path
import pytest
import yaml
from bs4 import BeautifulSoup
from conftest import CHROMIUM, cli
from test_site import open_page

needs_browser = pytest.mark.skipif(CHROMIUM is None, reason='no Chromium binary on PATH: install '
    'the Debian package `chromium` (.ci/run does) to run the browser test')
RAN = 'pwned'                                  # what the payload would set the page's title to
A = f"<img src=x onerror=\"document.title='{RAN}'\"> *x* a|b"   # file names: HTML, Markdown's marks
B = f"<svg onload=\"document.title='{RAN}'\"> _u_ [l](u) $m$ {{#i}} a--b"
SCRIPT = f"<script>document.title='{RAN}'</script>"   # in ids and the description (no / in a name)


@pytest.fixture(scope='module')
def hostile_runs(tmp_path_factory):
    """Two features files with hostile names, a study on each, the rotated instrument and a
    degradation: the run, once (about a minute)."""
    from fusion_study.data import synthetic_features
    from fusion_study.features_file import save_features
    root = tmp_path_factory.mktemp('hostile')
    for name, alignment in ((A, 1.0), (B, 0.0)):
        f = synthetic_features(n_images=200, captions_per_image=2, dim=32, alignment=alignment)
        save_features(root/f'{name}.npz', f.image, f.text, f.caption_image,
                      image_ids=[f'{SCRIPT}{i}' for i in range(200)])
    defaults = dict(source='file', features_file=f'{A}.npz', scales=[128, 256], seeds=[42],
                    epochs=2, device='cpu')
    configs = [dict(name='mine'),
               dict(name='mine2', features_file=f'{B}.npz', backbone='unaligned', scales=[128]),
               dict(name='rot', features_file=f'{B}.npz', scales=[128], rotation=[math.pi / 2]),
               dict(name='degradation', notebook='degradation', scales=[256], noise=[0.0, 0.2],
                    inputs=['mine'])]
    params = dict(description=f'hostile {SCRIPT}', defaults=defaults, configs=configs)
    (root/'h.yaml').write_text(yaml.safe_dump(params, sort_keys=False))
    r = cli('run', 'h.yaml', '--runs-dir', 'runs', cwd=root)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return root/'runs'

@pytest.fixture(scope='module', params=['static', 'quarto'])
def hostile_site(request, hostile_runs):
    "The site of those runs, built by the static fallback and by Quarto (skipped without Quarto)."
    from fusion_study.quarto import find_quarto
    if request.param == 'quarto' and find_quarto() is None:
        pytest.skip('Quarto is not installed: run `fusion-study install-quarto` (.ci/run does)')
    out = hostile_runs.parent/f'site_{request.param}'
    builder = '--no-quarto' if request.param == 'static' else '--quarto'
    r = cli('site', '--runs-dir', hostile_runs, '--out', out, builder)
    assert r.returncode == 0, r.stdout + r.stderr
    return out

def words(e) -> str: return ' '.join(e.get_text().replace('¶', '').split())

def read(soup, selector) -> list[str]: return [words(e) for e in soup.select(selector)]

def has(found:list, text:str, where:str, exact=False):
    shown = any((t == text) if exact else (text in t) for t in found)
    assert shown, f"{where}: {text!r} not shown as typed in {found[:8]}"

@needs_browser
def test_hostile_names_show_as_typed_and_never_run(hostile_site):
    doms = {}
    for page in sorted((hostile_site/'runs').rglob('*.html')):
        dom, _ = open_page(page)
        assert '</html>' in dom, f"{page}: no DOM came back"
        soup = BeautifulSoup(dom, 'html.parser')
        where = page.relative_to(hostile_site)
        assert words(soup.title) != RAN, f"{where}: the payload ran"
        handlers = [(e.name, a) for e in soup.find_all(True) for a, v in e.attrs.items()
                    if a.lower().startswith('on') and RAN in str(v)]
        assert not handlers, f"{where}: a handler attribute from a user's string: {handlers}"
        for s in soup.find_all('script'):
            text = s.string or ''
            mine = text.lstrip().startswith('document.title') or '<img' in text or '<svg' in text
            assert not mine, f"{where}: a script from a user's string: {text[:200]}"
        doms[str(where.parent.name)] = soup
    a, b = f"your features ({A}.npz)", f"your features ({B}.npz)"
    home = doms['report']
    has(read(home, 'li'), f"On {a}, ", 'home: What we found')
    has(read(home, 'li'), f"Under feature noise on {a}, ", 'home: What we found')
    has(read(home, 'p strong'), a, 'home: Table 1 heading', exact=True)
    has(read(home, 'td'), f"your ({A}.npz)", 'home: who wins on each feature set')
    for name, label in ((A, 'aligned'), (B, 'unaligned')):
        has(read(home, 'td'), f"your features ({name}.npz, labelled {label})", 'configurations',
            exact=True)
    for name, heading in (('mine', f"Table 1 — {a}"), ('mine2', f"Table 1 — {b}"),
                          ('rot', f"Is it alignment? — {b}"),
                          ('degradation', f"Table 2 — noise on {a}")):
        has(read(doms[name], 'h1'), heading, f"{name}: heading", exact=True)
        tab = words(doms[name].title)
        assert tab.startswith(heading), f"{name}: <title> {tab!r}"
    has(read(doms['rot'], 'p'), f"What it changes, on {b}: ", 'rot: what the instrument changes')
    nav = read(home, 'nav.fusion-nav a, #quarto-header .dropdown-item')   # the fallback's, Quarto's
    has(nav, a, 'navbar: the study menu')
    has(nav, b, 'navbar: the study menu')
    assert not [t for t in nav if '&lt;' in t or '\\' in t], f"navbar: escaped twice {nav}"

def test_no_page_file_holds_the_payload_as_markup(hostile_site):
    "Without a browser: no page's HTML holds a user's tag (with the payload's handler) nor script."
    import re
    for page in sorted((hostile_site/'runs').rglob('*.html')):
        text = page.read_text(encoding='utf-8')
        tag = rf'<(img|svg)\b[^>]*\bon(error|load)\s*=\s*"document\.title=\'{RAN}\''
        assert not re.search(tag, text), page
        assert SCRIPT not in text, page

SEARCH_ITEMS = ("out.textContent = JSON.stringify([...(items || [])].map(a => "
                "a.getAttribute('href')));")
SEARCH_SHOWN = ("await new Promise(r => setTimeout(r, 1000)); out.textContent = JSON.stringify({"
                "title: document.title, shown: [...document.querySelectorAll('.aa-Item')]"
                ".map(e => e.textContent), handlers: [...document.querySelectorAll('.aa-Panel *')]"
                ".filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length});")

@needs_browser
def test_quarto_search_shows_hostile_names_as_text(hostile_site, tmp_path):
    "Quarto's search box lists the pages that name the file (search.json holds it decoded) as text."
    import functools, html, http.server, json, re, shutil, threading
    from test_quarto_site import SEARCH_PROBE
    if hostile_site.name != 'site_quarto': pytest.skip('the static fallback has no search box')
    assert SEARCH_ITEMS in SEARCH_PROBE, 'the search probe of test_quarto_site changed'
    copy = tmp_path/'site'; shutil.copytree(hostile_site, copy)
    home = copy/'runs'/'report'/'report.html'
    head, _, tail = home.read_text(encoding='utf-8').rpartition('</body>')
    probe = SEARCH_PROBE.replace('WORD', RAN).replace(SEARCH_ITEMS, SEARCH_SHOWN)
    home.write_text(head + probe + '</body>' + tail, encoding='utf-8')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(copy))
    handler.log_message = lambda *a: None
    with http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f'http://127.0.0.1:{server.server_port}/runs/report/report.html'
        dom, _ = open_page(Path('/'), url=url)
        server.shutdown()
    m = re.search(r'<pre id="fusion-probe">(.*?)</pre>', dom, re.S)
    assert m, "the search probe did not run"
    found = json.loads(html.unescape(m.group(1)))
    assert found['title'] != RAN and found['handlers'] == 0, found
    assert any(f"Table 1 — your features ({A}.npz)" in t for t in found['shown']), found['shown']
