"""The site built from the smoke runs: every page shows its configuration's results under a title naming it, never the library's tests, toy data,
prompts or an absolute path; opened in headless Chromium at 1,400 × 1,000, every page loads without JavaScript errors, draws its charts, needs no
horizontal scrolling for a table and shows its heading and first result on the first screen, its navbar on one line, and the report shows its
verdict table and a table of contents. The site is small: the Vega bundle once, nbconvert's CSS in shared files; beside each page its notebook
and its CSV files, every link to them resolving."""
import html, json, re, shutil, subprocess, tempfile
from pathlib import Path
import nbformat
import pandas as pd
import pytest
from conftest import CHROMIUM, ROOT

FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--enable-logging=stderr', '--v=0', '--virtual-time-budget=10000', '--window-size=1400,1000', '--dump-dom']
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason='no Chromium binary on PATH: install the Debian package `chromium` (.ci/run does) to run the browser test')


def pages(site): return sorted((site/'runs').rglob('*.html'))

def open_page(path:Path, url:str=None) -> tuple[str, list]:
    "The page's DOM after its scripts ran (the file at `path`, or `url`), and the JavaScript errors Chromium logged."
    with tempfile.TemporaryDirectory() as profile:
        p = subprocess.run([CHROMIUM, *FLAGS, f'--user-data-dir={profile}', url or path.as_uri()], capture_output=True, text=True, timeout=180)
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
    from fusion_study.report import pts
    gap = pd.read_csv(runs/'smoke_aligned'/'paired_tests.csv').query('noise == 0').iloc[-1]      # the findings' gap at the largest scale
    assert f"cross − concat is {pts(-gap.mean_diff)} points at {int(gap.scale):,} pairs" in report           # the site's one sign: method − concat
    t2 = pd.read_csv(runs/'degradation'/'table2.csv')
    assert f"{pts(-t2.advantage.iloc[-1])} [{pts(-t2.advantage_hi.iloc[-1])}, {pts(-t2.advantage_lo.iloc[-1])}]" in report    # table2.csv's concat − cross, shown as cross − concat
    for verdict in ('not reproduced', 'not testable on this data', 'not an empirical claim'): assert verdict in report

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
            assert re.search(r'<table[^>]*class="report-table', dom) and "The paper's claims, judged" in dom and 'What we found' in dom
        reads_as_a_reader(page, dom)

def visible(dom:str) -> str:
    "What a reader reads of a page's DOM: no scripts, styles, navbar, contents box or download line; tags dropped, entities decoded."
    seen = re.sub(r'<nav\b.*?</nav>|<p class="fusion-files".*?</p>', ' ', body_text(dom), flags=re.S)
    return html.unescape(re.sub(r'<[^>]+>', ' ', seen))

def legend_colours(dom:str) -> dict:
    "{legend label: colours} of every legend entry Vega drew into the page's SVG (the symbol's fill, or its stroke where the fill is transparent)."
    found = {}
    for sym, label in re.findall(r'role-legend-symbol"[^>]*>\s*<path ([^>]*)>.*?role-legend-label"[^>]*>\s*<text[^>]*>([^<]*)</text>', dom, re.S):
        fill, stroke = (re.search(rf'\b{a}="([^"]*)"', sym) for a in ('fill', 'stroke'))
        found.setdefault(html.unescape(label), set()).add(fill.group(1) if fill and fill.group(1) not in ('transparent', 'none') else stroke.group(1) if stroke else None)
    return found

def first_sentence(dom:str) -> str:
    "The first sentence a reader meets under the page's heading."
    text = ' '.join(visible(dom[dom.index('</h1>') + 5:]).split())
    return re.split(r'(?<=[.!?])\s', text, maxsplit=1)[0]

def reads_as_a_reader(page:Path, dom:str):
    """Issue 27, on the drawn page: each method id a reader can read is defined on that page (a `<dfn>` from the word table); each legend entry that names
    a method has that method's one colour (`words.METHODS`), the same on every page; the home page's first sentence names a method and the kind of evidence."""
    from fusion_study.words import METHODS, EVIDENCE
    text = visible(dom)
    defined = {html.unescape(d).strip() for d in re.findall(r'<dfn\b[^>]*>([^<]*)</dfn>', dom)}
    used = {m for m in METHODS if re.search(rf'(?<![\w-]){re.escape(m)}(?![\w-])', text)}
    assert used <= defined, f"{page}: method ids a reader meets without a definition on the page: {sorted(used - defined)}"
    for label, colours in legend_colours(dom).items():
        if label in METHODS: assert colours == {METHODS[label].colour}, (page, label, colours)
    if page.name == 'report.html':
        first = first_sentence(dom)
        assert re.match(r'(Use|Measure)\b', first) and ('(concat)' in first or '(cross)' in first or first.startswith('Measure')), first
        assert any(w.long in first or w.short in first for w in EVIDENCE.values()), first

# What each smoke configuration's page must be headed with (params/smoke.yaml): the paper's table/figure and the features it ran on.
HEADINGS = {'smoke_aligned': 'Table 1 — synthetic aligned features', 'smoke_unaligned': 'Table 1 — synthetic unaligned features',
            'degradation': 'Table 2 — noise on synthetic aligned features', 'analysis': 'Fig. 4 and Table 3 — synthetic aligned features',
            'theory': 'Table 4 and Fig. 6 — sample complexity from smoke_aligned, smoke_unaligned',
            'smoke_instrument': 'Is it alignment? — synthetic features of alignment 1'}
# What only the library's own cells show: nbdev directives, checks, toy data, the nbdev_test defaults, and notebook prompts.
TEST_MARKERS = ('#| hide', '#| export', '#| default_exp', 'assert ', '_toy', 'nbdev', 'In&nbsp;[', 'In [', 'Out[', 'IProgress')

def body_text(page:str) -> str:
    "A page without its scripts and styles: what the reader can see (and the markup around it)."
    return re.sub(r'<(script|style)\b[^>]*>.*?</\1>', '', page, flags=re.S)

def title_and_h1(page:str) -> tuple[str, str]:
    title = re.search(r'<title>(.*?)</title>', page, re.S)
    h1 = re.search(r'<h1\b[^>]*>(.*?)</h1>', page, re.S)
    clean = lambda m: html.unescape(re.sub(r'<[^>]+>', '', m.group(1))).replace('¶', '').strip() if m else ''
    return clean(title), clean(h1)

def test_every_page_is_titled_by_its_configuration(site):
    for page in pages(site):
        title, h1 = title_and_h1(page.read_text(encoding='utf-8'))
        assert title and title != 'Notebook', (page, title)
        name = page.parent.name
        if name == 'report': assert 'fusion_study' in title, title; continue
        assert h1 == HEADINGS[name], (page, h1)
        assert title.startswith(HEADINGS[name]) and name in title, (page, title)

def test_no_page_shows_a_test_cell_prompts_or_absolute_paths(site, smoke_runs):
    runs, _ = smoke_runs
    paths = {str(runs), str(runs.resolve()), str(ROOT), str(ROOT.resolve()), tempfile.gettempdir().rstrip('/') + '/'}
    for page in pages(site):
        text = page.read_text(encoding='utf-8')
        seen = body_text(text)
        assert not [m for m in TEST_MARKERS if m in seen], (page, [m for m in TEST_MARKERS if m in seen])
        assert not re.search(r'class="jp-(Input|Output)Prompt[^"]*">\s*[^<\s]', seen), page          # no In [ ] / Out [ ] prompt text
        assert 'jp-InputArea-editor' not in seen, page                                                     # outputs only: no code input
        assert not [p for p in paths if p in text], (page, [p for p in paths if p in text])

def test_result_pages_show_formatted_numbers_and_words(site, smoke_runs):
    from fusion_study.fusion import METHODS                                                                # method names (cross_tokens) are names, not columns
    runs, _ = smoke_runs
    study = body_text((site/'runs'/'smoke_aligned'/'study.html').read_text(encoding='utf-8'))
    t1 = pd.read_csv(runs/'smoke_aligned'/'table1.csv').query("metric == 'accuracy' and method == 'concat'").iloc[-1]
    assert f"{t1['mean'] * 100:.2f} ± {t1['std'] * 100:.2f}" in study and 'Table 1 — validation accuracy' in study
    results = pd.read_csv(runs/'smoke_aligned'/'results.csv')
    assert f"{int(results.n_params.iloc[0]):,}" in study                                                   # parameters with thousands separators
    for page in pages(site):
        if page.parent.name == 'report': continue
        seen = body_text(page.read_text(encoding='utf-8'))
        cell = lambda tag: [html.unescape(re.sub(r'<[^>]+>', '', c)).strip() for c in re.findall(rf'<{tag}\b[^>]*>(.*?)</{tag}>', seen, re.S)]
        cells, heads = cell('td'), cell('th')
        assert cells and heads, page
        raw = [c for c in cells + heads if re.fullmatch(r'[-−]?(inf|∞)|nan|NaN|None|\d{4,}\.0|\d*\.\d{5,}|.*e-\d\d+.*', c)]
        assert not raw, (page, raw[:10])                                                                  # no inf, 295554.0, 0.0799333, 5.6e-161
        assert not [h for h in heads if re.fullmatch(r'\w+_\w+', h) and h not in METHODS], (page, heads)  # headers in words: no n_params, train_seconds
        assert not re.search(r'no \(\d', seen), page

def test_published_notebooks_hold_results_only(smoke_runs):
    "What both builders publish (nbconvert's pages, Quarto's staged notebooks): no hidden check, library cell, parameters, stderr or empty cell, no path."
    from fusion_study.site import published, quarto_notebook, site_pages
    from fusion_study.display import md_text                # the heading as Markdown text
    runs, _ = smoke_runs
    hidden_seen = 0
    for page in site_pages(runs):
        nb = nbformat.read(page['nb'], as_version=4)
        hidden_seen += sum(c.cell_type == 'code' and c.source.startswith('#| hide') for c in nb.cells)
        pub = published(nb, page, runs)
        code = [c for c in pub.cells if c.cell_type == 'code']
        assert code and all(c.outputs for c in code), page['href']                                          # outputs only, none empty
        assert not [c.source for c in code if c.source.lstrip().startswith('#|')], page['href']            # no #| hide / #| export cell
        assert not [c for c in code if {'parameters', 'injected-parameters'} & set(c.metadata.get('tags', []))], page['href']
        assert not [o for c in code for o in c.outputs if o.get('name') == 'stderr'], page['href']
        text = nbformat.writes(pub)
        assert str(runs.resolve()) not in text and str(ROOT) not in text, page['href']
        if page['kind'] != 'report':
            assert pub.cells[0].source.startswith(f"# {md_text(HEADINGS[page['name']])}") and page['name'] in pub.metadata.title, page['href']
            front = quarto_notebook(pub).cells[0]
            assert front.cell_type == 'raw' and f"title: {md_text(HEADINGS[page['name']])}" in front.source and 'echo: false' in front.source
    assert hidden_seen, "the smoke notebooks hold no #| hide cell: nothing was tested"

PROBE = """<script>window.addEventListener('load', () => setTimeout(() => {
  const top = e => e ? Math.round(e.getBoundingClientRect().top + window.scrollY) : -1, vw = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('table')].filter(t => t.getBoundingClientRect().right > vw + 1 || t.parentElement.scrollWidth > t.parentElement.clientWidth + 1)
                                                   .map(t => (t.querySelector('caption, th') || t).textContent.trim().slice(0, 60));
  const probe = document.createElement('pre'); probe.id = 'fusion-probe';
  const nav = document.querySelector('.fusion-nav'), menus = [...document.querySelectorAll('.fusion-drop > ul')];
  const shut = menus.every(m => m.getBoundingClientRect().height === 0), navHeight = nav ? Math.round(nav.getBoundingClientRect().height) : -1;
  const span = document.querySelector('.fusion-drop > span'); if (span) span.focus();           // a menu opens on keyboard focus, no script of ours
  const opened = span ? [...span.parentElement.querySelectorAll('ul a')].every(a => a.getBoundingClientRect().height > 0) : null;
  if (span) span.blur();
  const toc = [...document.querySelectorAll('.fusion-toc a')].map(a => { location.hash = a.getAttribute('href');
                                                                     return document.querySelector(':target') === document.getElementById(a.getAttribute('href').slice(1)); });
  probe.textContent = JSON.stringify({vw, wide, h1: top(document.querySelector('h1')), title: document.title, nav: navHeight, shut, opened, toc,
                                      first: top(document.querySelector('.jp-OutputArea-output table, .fusion-chart svg, .fusion-chart canvas'))});
  document.body.appendChild(probe);
}, 2000));</script>"""

@needs_browser
def test_pages_fit_the_screen_and_open_on_their_result(site, tmp_path):
    """At 1,400 × 1,000: no table wider than the page (no horizontal scrolling), a result page's heading and first table or chart on the first screen,
    the navbar on one line with its menus shut until one has the focus, and each link of the report's table of contents going to its section."""
    copy = tmp_path/'site'; shutil.copytree(site, copy)
    for page in pages(copy):
        head, _, tail = page.read_text(encoding='utf-8').rpartition('</body>')         # the last one: the charts' own code holds the string '</body>'
        page.write_text(head + PROBE + '</body>' + tail, encoding='utf-8')
        dom, _ = open_page(page)
        m = re.search(r'<pre id="fusion-probe">(.*?)</pre>', dom, re.S)
        assert m, f"{page}: the layout probe did not run"
        probe = json.loads(html.unescape(m.group(1)))
        assert probe['vw'] > 1300 and not probe['wide'], f"{page}: tables wider than the page: {probe['wide']}"
        assert probe['title'] and probe['title'] != 'Notebook', page
        assert 0 < probe['nav'] <= 60 and probe['shut'] and probe['opened'] is not False, f"{page}: navbar {probe['nav']} px high, menus shut {probe['shut']}, opened on focus {probe['opened']}"
        assert all(probe['toc']), f"{page}: table of contents links that go nowhere: {probe['toc']}"
        if page.parent.name == 'report': assert len(probe['toc']) >= 4 and probe['opened'], probe
        if page.parent.name != 'report':
            assert 0 <= probe['h1'] < 300 and 0 <= probe['first'] < 1000, f"{page}: heading at {probe['h1']} px, first result at {probe['first']} px"

# ---- the site as a reader meets it: small, Vega once, the files beside each page, a table of contents, the navbar in words
def site_files(site) -> list: return sorted(f for f in site.rglob('*') if f.is_file())

def test_the_site_is_small_with_one_vega_bundle_and_shared_css(site):
    from fusion_study.display import vega_bundle
    total = sum(f.stat().st_size for f in site_files(site))
    assert total <= 4_000_000, f"the site is {total:,} bytes: over 4 MB"
    bundle = vega_bundle()
    chunk = re.search(r'[\w .,;:()=+*!?&|<>\[\]{}-]{120}', bundle[len(bundle) // 2:]).group(0)     # a piece of it that no file escapes
    holders = [str(f.relative_to(site)) for f in site_files(site) if chunk in f.read_text(encoding='utf-8', errors='replace')]
    assert holders == ['site_libs/vega.js'], f"the Vega bundle is in {holders}: it must be in site_libs/vega.js only"
    for page in pages(site):
        text = page.read_text(encoding='utf-8')
        head = text[:text.index('</head>')]
        assert '<script src="../../site_libs/vega.js"></script>' in head or 'fusion-chart' not in text, page
        assert not re.search(r'<style[^>]*>[^<]{5000}', head), f"{page}: a large inline <style> in its head"
        for href in re.findall(r'<link rel="stylesheet" href="([^"]+)"', head): assert (page.parent/href).resolve().is_file(), (page, href)

def test_every_page_links_its_notebook_and_csv_files_beside_it(site, smoke_runs):
    "Beside each page: its executed notebook (valid, every chart as Vega-Lite, no absolute path) and every CSV file of its run folder; every link to them resolves."
    from fusion_study.site import check_site_out, SITE_MARK
    runs, _ = smoke_runs
    paths = {str(runs), str(runs.resolve()), str(ROOT), str(ROOT.resolve()), tempfile.gettempdir().rstrip('/') + '/'}
    for page in pages(site):
        text, name = page.read_text(encoding='utf-8'), page.parent.name
        links = re.findall(r'<a\b[^>]*class="fusion-(?:csv|download)"[^>]*>', text)
        hrefs = {html.unescape(re.search(r'href="([^"]+)"', a).group(1)) for a in links}
        assert all(' download' in a for a in links), page
        assert not [h for h in hrefs if not (page.parent/h).is_file()], (page, [h for h in hrefs if not (page.parent/h).is_file()])
        notebook = page.with_suffix('.ipynb').name
        assert notebook in hrefs, (page, hrefs)
        csvs = {f.name for f in (runs/name).glob('*.csv')}
        assert csvs <= hrefs and (csvs or name == 'report'), (page, csvs - hrefs)                # every CSV of the run folder, linked
        nb_text = (page.parent/notebook).read_text(encoding='utf-8')
        nb = nbformat.reads(nb_text, as_version=4); nbformat.validate(nb)
        assert not [p for p in paths if p in nb_text], (page, [p for p in paths if p in nb_text])
        assert 'window.vegaEmbed' not in nb_text and ('vegalite' in nb_text or 'fusion-chart' not in text), page
    assert not (site/'runs'/'smoke_aligned'/'rows').exists()                                     # the run folder's own files, not its subfolders
    manifest = set(json.loads((site/SITE_MARK).read_text())['files'])
    assert manifest == {str(f.relative_to(site)) for f in site_files(site)} - {SITE_MARK}
    assert check_site_out(site, runs) == site.resolve()                                         # the next build may replace it

def test_long_pages_have_a_table_of_contents(site):
    for page in pages(site):
        text = page.read_text(encoding='utf-8')
        sections = re.findall(r'<h2 id="([^"]+)"', text)
        toc = re.search(r'<nav class="fusion-toc".*?</nav>', text, re.S)
        assert bool(toc) == (len(sections) >= 4), (page, len(sections))
        if toc:
            assert [html.unescape(h) for h in re.findall(r'href="#([^"]+)"', toc.group(0))] == [html.unescape(i) for i in sections], page
            assert text.index('</h1>') < toc.start() < text.index(f'id="{sections[0]}"'), page   # under the heading, above the first section
    assert '<nav class="fusion-toc"' in (site/'runs'/'report'/'report.html').read_text(encoding='utf-8')

def test_the_navbar_links_every_page_in_words(site, smoke_runs):
    "Every page in the navbar of every page, a kind with several pages a menu; a configuration's link in words, never its name alone."
    from fusion_study.site import site_pages
    runs, _ = smoke_runs
    all_pages = site_pages(runs)
    for page in pages(site):
        nav = re.search(r'<nav class="fusion-nav">.*?</nav>', page.read_text(encoding='utf-8'), re.S).group(0)
        hrefs = re.findall(r'<a href="(?:\.\./)*([^"]+)"', nav)
        assert {p['href'] for p in all_pages} <= set(hrefs), (page, hrefs)
        texts = [html.unescape(re.sub(r'<span class="fusion-id">.*?</span>|<[^>]+>', '', a)).strip() for a in re.findall(r'<a\b[^>]*>.*?</a>', nav)]
        assert not [t for t in texts if t in {p['name'] for p in all_pages} - {'report', 'degradation', 'analysis', 'theory'}], (page, texts)
        assert 'fusion-drop' in nav and '>synthetic aligned features <span class="fusion-id">smoke_aligned</span>' in nav, nav

def test_quarto_yml_names_the_default_configurations_in_words():
    "_quarto.yml (the navbar both builders show for runs/) links each configuration of params/default.yaml once, in words, and nothing else."
    import yaml
    from fusion_study.site import project_navbar
    cfg = yaml.safe_load((ROOT/'_quarto.yml').read_text())
    assert cfg['project']['type'] == 'website' and cfg['format']['html']['toc'] is True
    links = [l for item in cfg['website']['navbar']['left'] for l in item.get('menu', [item])]
    default = yaml.safe_load((ROOT/'params'/'default.yaml').read_text())['configs']
    want = sorted(['runs/report/report.ipynb'] + [f"runs/{c['name']}/{c.get('notebook', 'study')}.ipynb" for c in default])
    assert sorted(l['href'] for l in links) == want
    assert not [l['text'] for l in links if re.search(r'knob|\ba =|backbone$', l['text'])], [l['text'] for l in links]
    assert project_navbar(ROOT/'runs') == cfg['website']['navbar'] and project_navbar(ROOT/'params') is None

def test_every_table_links_its_csv_and_the_rotation_page_has_a_theta_column(site):
    "Every table on every page links the CSV file it shows, and the link resolves; the rotated instrument's page lists θ as a column, one distinct row per feature set × method."
    n = 0
    for page in pages(site):
        for table in re.findall(r'<table\b.*?</table>', body_text(page.read_text(encoding='utf-8')), re.S):
            link = re.search(r'<caption>.*?<a class="fusion-csv"[^>]*\bhref="([^"]+)"', table, re.S)
            assert link, (page, ' '.join(re.sub(r'<[^>]+>', ' ', table).split())[:200])
            assert (page.parent/html.unescape(link.group(1))).is_file(), (page, link.group(1)); n += 1
    assert n >= 10, n
    rotated = body_text((site/'runs'/'smoke_instrument'/'study.html').read_text(encoding='utf-8'))
    heads = lambda t: [html.unescape(re.sub(r'<[^>]+>', '', h)).strip() for h in re.findall(r'<th\b[^>]*>(.*?)</th>', t, re.S)]
    rows = lambda t: [tuple(html.unescape(re.sub(r'<[^>]+>', '', c)).strip() for c in re.findall(r'<td\b[^>]*>(.*?)</td>', r, re.S))
                      for r in re.findall(r'<tr\b.*?</tr>', t, re.S) if '<td' in r]
    tables = [t for t in re.findall(r'<table\b.*?</table>', rotated, re.S) if any(h.startswith('θ') or 'rotation θ' in h for h in heads(t))]
    assert tables, 'no table with a θ column on the rotation page'
    for t in tables:
        r = rows(t)
        assert len(r) == len(set(r)), r
        assert any('π/2' in c for row in r for c in row) and not any(re.fullmatch(r'1\.57\d*', c) for row in r for c in row), r
