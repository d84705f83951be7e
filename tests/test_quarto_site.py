"""The site as real Quarto renders it (`fusion-study site` with Quarto installed by `fusion-study install-quarto`),
held to the fallback's checks: a page per executed notebook under its configuration's heading, the answer first on the
home page, the navbar, every chart drawn and no JavaScript error in headless Chromium, the notebook and CSV files
beside every page with links that resolve, search that finds a page (served over HTTP, as Quarto's search needs),
nothing fetched from the network, and its size."""
import functools, html, http.server, json, re, shutil, threading
from pathlib import Path
import nbformat
import pytest
from conftest import CHROMIUM, cli
from test_site import HEADINGS, charts, first_sentence, open_page, pages, reads_as_a_reader, title_and_h1

needs_browser = pytest.mark.skipif(CHROMIUM is None, reason='no Chromium binary on PATH: install the Debian package '
                                   '`chromium` (.ci/run does) to run the browser test')


@pytest.fixture(scope='module')
def quarto_site(smoke_runs, tmp_path_factory):
    "The smoke runs' site built by `fusion-study site --quarto` (real Quarto), once for this module."
    from fusion_study.quarto import find_quarto
    if find_quarto() is None: pytest.skip('Quarto is not installed: run `fusion-study install-quarto` (.ci/run does)')
    runs, _ = smoke_runs
    out = tmp_path_factory.mktemp('quarto')/'_site'
    r = cli('site', '--runs-dir', runs, '--out', out, '--quarto')
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'built with Quarto' in r.stdout, r.stdout                       # it says which builder it used
    return out

def test_quarto_builds_a_page_per_notebook_under_its_heading(quarto_site, smoke_runs):
    runs, _ = smoke_runs
    executed = {p.relative_to(runs).with_suffix('.html') for p in runs.glob('*/*.ipynb')}
    assert {p.relative_to(quarto_site/'runs') for p in pages(quarto_site)} == executed
    assert 'runs/report/report.html' in (quarto_site/'index.html').read_text()
    assert 'quarto-' in (quarto_site/'runs'/'report'/'report.html').read_text()     # Quarto's page, not nbconvert's
    for page in pages(quarto_site):
        text = page.read_text(encoding='utf-8')
        assert not re.search(r'<(script|link)\b[^>]*\b(src|href)="https?://', text), page    # nothing from the network
        navbar = re.search(r'<header id="quarto-header".*?</header>', text, re.S).group(0)
        hrefs = {h for h in re.findall(r'<a\b[^>]*href="([^"#]+)"', navbar) if not h.startswith('http')}
        assert {(page.parent/h).resolve() for h in hrefs} >= {p.resolve() for p in pages(quarto_site)} - {page.resolve()}, page
        title, h1 = title_and_h1(text)
        if page.parent.name != 'report': assert h1 == HEADINGS[page.parent.name] and page.parent.name in title, (page, h1, title)
        assert 'Table 1: Table 1' not in text, page                                     # one caption, ours

def test_quarto_pages_link_their_notebook_and_csv_files(quarto_site, smoke_runs):
    runs, _ = smoke_runs
    for page in pages(quarto_site):
        text = page.read_text(encoding='utf-8')
        hrefs = {html.unescape(h) for h in re.findall(r'<a\b[^>]*class="fusion-download"[^>]*href="([^"]+)"', text)
                 + re.findall(r'<a\b[^>]*href="([^"]+)"[^>]*class="fusion-download"', text)}
        linked = {(page.parent/h).resolve() for h in hrefs}
        assert all(f.is_file() for f in linked), (page, hrefs)
        assert page.with_suffix('.ipynb').resolve() in linked, (page, hrefs)          # the notebook, not its page
        assert {(page.parent/f.name).resolve() for f in (runs/page.parent.name).glob('*.csv')} <= linked, page
        nbformat.validate(nbformat.read(page.with_suffix('.ipynb'), as_version=4))

@needs_browser
def test_quarto_pages_draw_every_chart_and_open_on_the_answer(quarto_site):
    for page in pages(quarto_site):
        dom, errors = open_page(page)
        assert '</html>' in dom and not errors, (page, errors)
        drawn = charts(dom)
        assert drawn and all(drawn), f"{page}: {drawn.count(False)} of {len(drawn)} charts not drawn"
        reads_as_a_reader(page, dom)                          # the report's first sentence: the answer and its evidence

def test_quarto_site_size(quarto_site):
    total = sum(f.stat().st_size for f in quarto_site.rglob('*') if f.is_file())
    assert total <= 5_000_000, f"the Quarto site is {total:,} bytes: over 5 MB"

SEARCH_PROBE = """<script>window.addEventListener('load', async () => {
  const out = document.createElement('pre'); out.id = 'fusion-probe';
  const wait = async (find, ms) => { for (let t = 0; t < ms; t += 100) { const x = find(); if (x) return x;
                                                                       await new Promise(r => setTimeout(r, 100)); } return null; };
  try {
    (await wait(() => document.querySelector('#quarto-search button'), 3000)).click();
    const input = await wait(() => document.querySelector('.aa-Input'), 3000);
    input.value = 'WORD'; input.dispatchEvent(new Event('input', {bubbles: true}));
    const items = await wait(() => document.querySelectorAll('.aa-Item a').length && document.querySelectorAll('.aa-Item a'), 3000);
    out.textContent = JSON.stringify([...(items || [])].map(a => a.getAttribute('href')));
  } catch (e) { out.textContent = JSON.stringify(['error: ' + e]); }
  document.body.appendChild(out);
});</script>"""

@needs_browser
def test_quarto_search_finds_a_page(quarto_site, tmp_path):
    "Typed into Quarto's search box, a word of one page only (its heading) lists that page."
    copy = tmp_path/'site'; shutil.copytree(quarto_site, copy)
    home = copy/'runs'/'report'/'report.html'
    head, _, tail = home.read_text(encoding='utf-8').rpartition('</body>')
    home.write_text(head + SEARCH_PROBE.replace('WORD', 'degradation') + '</body>' + tail, encoding='utf-8')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(copy))
    handler.log_message = lambda *a: None
    with http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        dom, _ = open_page(Path('/'), url=f'http://127.0.0.1:{server.server_port}/runs/report/report.html')
        server.shutdown()
    m = re.search(r'<pre id="fusion-probe">(.*?)</pre>', dom, re.S)
    assert m, "the search probe did not run"
    found = json.loads(html.unescape(m.group(1)))
    assert any('degradation/degradation.html' in h for h in found), found
