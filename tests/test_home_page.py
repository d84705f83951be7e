"The home page answers first: the findings in words on the first screen, then every cell of the paper's Tables 1 and 2, verdicts with intervals."
import re, shutil, subprocess, tempfile
import pytest
from conftest import CHROMIUM
from fusion_study.paper import TABLE1, TABLE2


@pytest.fixture(scope='module')
def home(site):
    return site/'runs'/'report'/'report.html'

def text(html:str) -> str:
    "The page's visible text, roughly: tags and scripts removed, whitespace collapsed."
    html = re.sub(r'<(script|style)\b.*?</\1>', ' ', html, flags=re.S)
    return re.sub(r'\s+', ' ', re.sub(r'<[^>]+>', ' ', html)).replace('&amp;', '&')

def test_findings_come_first_in_words(home):
    page = text(home.read_text(encoding='utf-8'))
    heads = re.findall(r'<h2[^>]*>(.*?)</h2>', home.read_text(encoding='utf-8'), flags=re.S)
    assert re.sub(r'<[^>]+>', '', heads[0]).strip().startswith('What we found'), heads[:3]
    found = page[page.index('What we found'):][:3000]
    assert re.search(r'On synthetic aligned features, .+\(95% interval [+−-]?\d', found)          # who wins, by how much, how sure
    assert "The paper's central claim" in found and 'synthetic generator' in found                  # the paper's claim, honest about the evidence

def test_every_cell_of_the_papers_tables_is_on_the_home_page(home):
    page = text(home.read_text(encoding='utf-8'))
    for t in (TABLE1, TABLE2):
        for r in t.itertuples(): assert f"{r.mean:.1f} ± {r.std:.1f}" in page, (r.source, r.mean)
    for v in ('77.9', '73.5', '93.3', '89.2', '94.7', '83.3'): assert v in page
    assert 'Where the paper disagrees with itself' in page and 'Welch' in page

def test_home_page_shows_words_not_code(home):
    html = home.read_text(encoding='utf-8')
    assert re.search(r'<title>[^<]*concat or cross-attention', html, flags=re.I), re.findall(r'<title>.*?</title>', html)
    page = text(html)
    for raw in ('decided_by', 'mean_diff', 'config_hash', 'n_params', 'Out[', 'In [', 'assert ', '#| hide'): assert raw not in page, raw
    assert not re.search(r'\d\.\d{5,}', page), re.search(r'.{40}\d\.\d{5,}.{20}', page).group(0)    # no raw floats

@pytest.mark.skipif(CHROMIUM is None, reason='no Chromium binary on PATH: install the Debian package `chromium` (.ci/run does)')
def test_findings_fit_the_first_screen(home, tmp_path):
    "In a 1400 × 1000 browser window the findings paragraph ends above the fold."
    probe = tmp_path/'report.html'
    probe.write_text(home.read_text(encoding='utf-8').replace('</body>', """<script>
      window.addEventListener('load', () => {
        const h = [...document.querySelectorAll('h2')].find(e => e.textContent.includes('What we found'));
        const p = h && h.nextElementSibling;
        document.body.setAttribute('data-findings', p ? `${Math.round(p.getBoundingClientRect().bottom)}|${p.textContent.length}` : 'missing');
      });</script></body>"""), encoding='utf-8')
    for f in home.parent.iterdir():
        if f.name != 'report.html' and f.is_file(): shutil.copy(f, tmp_path/f.name)
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--window-size=1400,1000', '--virtual-time-budget=8000',
                              f'--user-data-dir={profile}', '--dump-dom', probe.as_uri()], capture_output=True, text=True, timeout=180).stdout
    m = re.search(r'data-findings="(\d+)\|(\d+)"', dom)
    assert m, re.search(r'data-findings="[^"]*"', dom)
    bottom, length = map(int, m.groups())
    assert length > 200 and bottom <= 1000, (bottom, length)

def test_home_page_answers_is_it_alignment(home):
    "The central figure beside the paper's claim: every method against concat by measured alignment, and per feature set who wins (issue 12)."
    html = home.read_text(encoding='utf-8')
    page = text(html)
    sec = page[re.search(r'Is it alignment\?[\s¶]*The paper:', page).start():]                     # the section (the contents box names it first)
    assert sec.index('The paper:') < 300 and 'feature alignment quality' in sec[:700]                  # the paper's claim, in its words, first
    assert 'measured alignment (zero-shot AUC)' in html                                                    # the chart's x axis (its Vega spec)
    assert re.search(r'Does the ranking follow measured alignment\? cross − concat .+(the ranking flips|the ranking never flips|overlap in measured alignment)', sec)   # the answer in words
    table = sec[sec.index('Who wins on each feature set'):]
    for label in ('aligned backbone', 'unaligned backbone', 'θ = π/2', 'σ = 0.5'): assert label in table, label   # knob at 1 pooled with the aligned backbone
    assert 'level with the best' in table and 'cosine, zero-shot' in table
    t1 = page[page.rindex('Table 1, cell by cell'):page.rindex('Table 2: noise')]                         # the sections, not the contents box
    assert 'smoke_aligned' in t1 and 'smoke_instrument' not in t1                                          # the instrument is not a Table 1 study
