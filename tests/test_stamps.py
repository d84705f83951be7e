"`fusion-study data stamps`: Tux Paint's captioned drawings as a Flickr8k-shaped folder (02f_stamps)."
import json, shutil, subprocess, time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

import fusion_study.stamps as st
from fusion_study.core import FusionStudyError
from fusion_study.flickr8k import scan_dataset
from conftest import cli

DPKG = shutil.which('dpkg-deb')
needs_dpkg = pytest.mark.skipif(DPKG is None, reason='dpkg-deb is not installed')


@pytest.fixture(scope='module')
def fixture_build(tmp_path_factory):
    "The fixture in the package's layout, built once."
    tmp = tmp_path_factory.mktemp('stamps')
    src = st.fake_stamps(tmp/'src')
    dest = st.build_stamps(tmp/'built', source=src, log=lambda *a: None)
    return src, dest


def siblings(dest:Path) -> list:
    "What the build left beside `dest` (temporary or old folders are hidden: .<name>.*)."
    return sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(f'.{dest.name}.'))


def test_fixture_build_counts_exact(fixture_build):
    src, dest = fixture_build
    info = st.read_stamps_info(dest)
    assert info['counts'] == dict(found=11, kept=5, kept_png=4, kept_svg=1, left_out=1, caption_without_image=1,
                                  caption_empty_or_undecodable=2, svg_no_rasteriser=0, declares_entities=1,
                                  damaged=1, svg_alternate_unused=1, images_without_caption=2, variant_images=1)
    c = info['counts']
    assert c['found'] == c['kept'] + sum(c[k] for k in st.SKIPS)
    assert info['categories'] == {'animals': 2, 'food': 2, 'household': 1}
    assert info['rule'] == st.RULE and 'PNG preferred' in info['rule'] and info['package'] == st.STAMPS_PACKAGE
    assert {s['source']: s['why'] for s in info['skipped']} == {
        'food/bread.svg': st.SKIPS['declares_entities'], 'food/plate.png': st.SKIPS['damaged']}
    assert info['skipped'][0]['error'].startswith('EntitiesForbidden')
    man = st.read_manifest(dest)
    assert list(man.columns) == ['image', 'caption', 'category', 'format', 'source']
    assert man.set_index('image').loc['food__pear.jpg', 'source'] == 'food/pear.png'          # PNG preferred
    assert man.set_index('image').loc['food__apple.jpg'].tolist() == ['An apple.', 'food', 'svg', 'food/apple.svg']
    assert not man.category.isin(st.LEFT_OUT).any()
    caps = pd.read_csv(dest/'captions.txt')
    assert list(caps.columns) == ['image', 'caption'] and caps.equals(man[['image', 'caption']])
    assert sorted(p.name for p in (dest/'Images').iterdir()) == sorted(man.image)
    ds = scan_dataset(dest)
    assert ds.report['images'] == ds.report['captions'] == 5 and ds.report['images_without_caption'] == []
    assert ds.report['captions_without_image'] == 0


def test_transparency_composited_onto_white(fixture_build):
    src, dest = fixture_build
    for name in ('animals__horse.jpg', 'household__cup.jpg', 'food__apple.jpg'):     # RGBA, palette, SVG
        im = Image.open(dest/'Images'/name)
        assert im.mode == 'RGB' and im.getpixel((1, 1)) == (255, 255, 255), name
    assert Image.open(src/'animals'/'horse.png').getpixel((1, 1))[3] == 0                 # it was transparent
    r, g, b = Image.open(dest/'Images'/'animals__horse.jpg').getpixel((32, 24))
    assert abs(r - 150) < 8 and abs(g - 80) < 8 and abs(b - 20) < 8                        # the object is kept
    assert Image.open(dest/'Images'/'food__apple.jpg').size == (512, 256)                  # longer side 512


def test_large_png_downscaled(tmp_path):
    src = st.fake_stamps(tmp_path/'src')
    Image.new('RGBA', (1200, 600), (10, 200, 10, 255)).save(src/'animals'/'horse.png')
    st.build_stamps(tmp_path/'built', source=src, log=lambda *a: None)
    assert Image.open(tmp_path/'built'/'Images'/'animals__horse.jpg').size == (512, 256)


def test_entity_svg_is_refused_not_expanded(fixture_build):
    from defusedxml import EntitiesForbidden
    src, _ = fixture_build
    with pytest.raises(EntitiesForbidden): st.rasterise(src/'food'/'bread.svg')


def test_rebuilding_reuses(fixture_build):
    src, dest = fixture_build
    before = {p.name: p.stat().st_mtime_ns for p in dest.rglob('*')}
    said = []
    assert st.build_stamps(dest, source=src, log=said.append) == dest
    assert said == [f"{dest}: already built from the same stamps, reused"]
    assert {p.name: p.stat().st_mtime_ns for p in dest.rglob('*')} == before


def test_changed_stamp_rebuilds(tmp_path):
    src = st.fake_stamps(tmp_path/'src')
    dest = st.build_stamps(tmp_path/'built', source=src, log=lambda *a: None)
    (src/'animals'/'horse.txt').write_text('A pony.\n')
    said = []
    st.build_stamps(dest, source=src, log=said.append)
    assert 'reused' not in ' '.join(said) and 'A pony.' in (dest/'captions.txt').read_text()
    assert siblings(dest) == []


def test_failure_mid_build_leaves_nothing(tmp_path, monkeypatch):
    src = st.fake_stamps(tmp_path/'src')
    calls, real = [], st.load_stamp
    def flaky(path, size=st.MAX_SIDE):
        calls.append(path)
        if len(calls) == 2: raise RuntimeError('injected failure')     # the second stamp, a PNG
        return real(path, size)
    monkeypatch.setattr(st, 'load_stamp', flaky)
    dest = tmp_path/'built'
    with pytest.raises(RuntimeError, match='injected'): st.build_stamps(dest, source=src, log=lambda *a: None)
    assert not dest.exists() and siblings(dest) == [] and sorted(p.name for p in tmp_path.iterdir()) == ['src']


def test_failure_keeps_the_previous_build(tmp_path, monkeypatch):
    src = st.fake_stamps(tmp_path/'src')
    dest = st.build_stamps(tmp_path/'built', source=src, log=lambda *a: None)
    old = (dest/'stamps.json').read_text()
    (src/'animals'/'horse.txt').write_text('A pony.\n')
    monkeypatch.setattr(st, 'load_stamp', lambda *a, **k: (_ for _ in ()).throw(RuntimeError('injected')))
    with pytest.raises(RuntimeError): st.build_stamps(dest, source=src, log=lambda *a: None)
    assert (dest/'stamps.json').read_text() == old and siblings(dest) == []


def test_without_cairosvg_svg_skipped_and_counted(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, 'cairosvg', None)            # `import cairosvg` raises ImportError
    dest = st.build_stamps(tmp_path/'built', source=st.fake_stamps(tmp_path/'src'), log=lambda *a: None)
    info = st.read_stamps_info(dest)
    c = info['counts']
    assert (c['kept'], c['kept_svg'], c['svg_no_rasteriser'], c['declares_entities'], c['damaged']) == (4, 0, 2, 0, 1)
    assert 'pip install cairosvg' in st.format_stamps_report(info)


def test_dest_holding_other_files_refused(tmp_path):
    other = tmp_path/'mine'; other.mkdir(); (other/'notes.txt').write_text('keep me')
    with pytest.raises(FusionStudyError, match='already holds other files'):
        st.build_stamps(other, source=st.fake_stamps(tmp_path/'src'), log=lambda *a: None)
    assert (other/'notes.txt').read_text() == 'keep me'


def test_bad_sources_one_sentence(tmp_path):
    with pytest.raises(FusionStudyError, match='does not exist'): st.find_stamps_package(tmp_path/'nowhere')
    (tmp_path/'empty').mkdir()
    with pytest.raises(FusionStudyError, match='holds no captioned stamp'):
        st.build_stamps(tmp_path/'out', source=tmp_path/'empty', log=lambda *a: None)
    with pytest.raises(FusionStudyError, match='no manifest.csv'): st.read_manifest(tmp_path/'empty')


# ---- the package: a .deb built with dpkg-deb --build, extracted and verified against its md5sums
@needs_dpkg
def test_deb_extracted_and_verified(tmp_path):
    deb = st.fake_stamps_deb(tmp_path/'deb', version='1.2-3')
    listing = subprocess.run(['dpkg-deb', '-c', str(deb)], capture_output=True, text=True, check=True).stdout
    assert './usr/share/tuxpaint/stamps/animals/horse.png' in listing
    got = st.fetch_stamps_package(tmp_path/'cache'/st.STAMPS_PACKAGE, deb=deb, log=lambda *a: None)
    root = st.find_stamps_package(got)
    assert root == got/st.STAMPS_IN_DEB and st.package_version(root) == '1.2-3'
    assert sorted(p.name for p in (tmp_path/'cache').iterdir()) == [st.STAMPS_PACKAGE]     # no temporary left
    dest = st.build_stamps(tmp_path/'built', source=got, log=lambda *a: None)
    info = st.read_stamps_info(dest)
    assert info['version'] == '1.2-3' and info['counts']['kept'] == 5
    again = st.fetch_stamps_package(got, deb=deb, log=lambda *a: None)           # an earlier extraction: replaced
    assert again == got and (got/'package.json').is_file() and sorted(p.name for p in (tmp_path/'cache').iterdir()) == [st.STAMPS_PACKAGE]


@needs_dpkg
def test_altered_deb_refused_in_one_sentence(tmp_path):
    bad = st.fake_stamps_deb(tmp_path/'bad', tamper=True)
    with pytest.raises(FusionStudyError) as e: st.fetch_stamps_package(tmp_path/'cache'/'x', deb=bad)
    msg = str(e.value)
    assert 'is damaged' in msg and 'does not match its md5sums' in msg and 'download it again' in msg
    assert msg.count('. ') == 0 and '\n' not in msg
    assert not (tmp_path/'cache'/'x').exists() and list((tmp_path/'cache').iterdir()) == []


@needs_dpkg
def test_not_a_package_refused(tmp_path):
    junk = tmp_path/'junk.deb'; junk.write_bytes(b'not a deb')
    with pytest.raises(FusionStudyError, match='is not a readable Debian package'):
        st.fetch_stamps_package(tmp_path/'cache'/'x', deb=junk)
    assert not (tmp_path/'cache').exists() or list((tmp_path/'cache').iterdir()) == []


@needs_dpkg
def test_download_through_the_runner(tmp_path):
    "The download step takes the command runner: a fake apt-get that 'downloads' the fixture package."
    deb = st.fake_stamps_deb(tmp_path/'deb')
    seen = []
    def apt(cmd, cwd, **kw):
        seen.append(cmd); shutil.copy(deb, Path(cwd)/'tuxpaint-stamps-default_0.0-test_all.deb')
        return subprocess.CompletedProcess(cmd, 0, '', '')
    got = st.fetch_stamps_package(tmp_path/'cache', run=apt, log=lambda *a: None)
    assert seen == [['apt-get', 'download', st.STAMPS_PACKAGE]] and (got/st.STAMPS_IN_DEB/'animals').is_dir()
    fail = lambda cmd, cwd, **kw: subprocess.CompletedProcess(cmd, 100, '', 'E: Unable to locate package tuxpaint-stamps-default\n')
    with pytest.raises(FusionStudyError, match=r'apt-get download tuxpaint-stamps-default failed \(E: Unable to locate'):
        st.fetch_stamps_package(tmp_path/'cache2', run=fail, log=lambda *a: None)
    def missing(cmd, cwd, **kw): raise FileNotFoundError(cmd[0])
    with pytest.raises(FusionStudyError, match='apt-get is not on this machine'):
        st.fetch_stamps_package(tmp_path/'cache3', run=missing, log=lambda *a: None)
    assert not (tmp_path/'cache2').exists() and not (tmp_path/'cache3').exists()


# ---- the command
def test_cli_builds_from_a_folder(tmp_path):
    src = st.fake_stamps(tmp_path/'src')
    r = cli('data', 'stamps', '--from', src, '--dest', tmp_path/'built')
    assert r.returncode == 0, r.stdout + r.stderr
    assert '5 stamps kept of 11 caption files' in r.stdout and '4 PNG, 1 SVG' in r.stdout
    assert '1 SVG declaring XML entities (not expanded) (food/bread.svg)' in r.stdout
    assert r.stdout.strip().splitlines()[-1] == 'next: fusion-study extract --params params/stamps.yaml'
    again = cli('data', 'stamps', '--from', src, '--dest', tmp_path/'built')
    assert again.returncode == 0 and 'reused' in again.stdout


def test_cli_bad_from_one_sentence(tmp_path):
    r = cli('data', 'stamps', '--from', tmp_path/'nowhere', '--dest', tmp_path/'built')
    assert r.returncode == 2 and r.stdout == ''
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('fusion-study: error: The stamps folder') and 'does not exist' in lines[0]
    assert not (tmp_path/'built').exists()


# ---- the real package
@pytest.fixture(scope='session')
def real_build(tmp_path_factory):
    "tuxpaint-stamps-default as installed, built once (timed)."
    if not st.SYSTEM_STAMPS.is_dir(): pytest.skip(f'{st.SYSTEM_STAMPS} is absent (apt-get install {st.STAMPS_PACKAGE})')
    dest = tmp_path_factory.mktemp('real')/'stamps'
    t = time.perf_counter()
    st.build_stamps(dest, log=lambda *a: None)
    return dest, time.perf_counter() - t


def test_real_package(real_build):
    dest, seconds = real_build
    info = st.read_stamps_info(dest)
    c = info['counts']
    print(f"real build: {seconds:.1f} s; {st.format_stamps_report(info, dest)}")
    assert seconds < 120, f"the real build took {seconds:.0f} s"
    assert 650 <= c['kept'] <= 800 and c['kept_png'] > 400 and c['kept_svg'] > 100
    assert c['left_out'] >= 200 and info['scan']['left_out'] == c['left_out']
    assert c['found'] == c['kept'] + sum(c[k] for k in st.SKIPS)
    assert c['declares_entities'] >= 1 and 'food/loaf_of_bread.svg' in {s['source'] for s in info['skipped']}
    man = st.read_manifest(dest)
    assert not man.category.isin(st.LEFT_OUT).any() and 'symbols' not in info['categories']
    assert not man.caption.str.contains(r'\bletter [A-Z]\b').any()
    ds = scan_dataset(dest)
    assert ds.report['images'] == ds.report['captions'] == c['kept'] and ds.report['images_without_caption'] == []
    for name in man.image.sample(5, random_state=0):
        im = Image.open(dest/'Images'/name)
        assert im.mode == 'RGB' and max(im.size) <= st.MAX_SIDE


@needs_dpkg
def test_find_falls_back_to_the_cache_then_fetches(tmp_path, monkeypatch):
    "No installed copy: fetch once into cache_dir()/downloads (the runner stands in for apt-get), then reuse it."
    deb = st.fake_stamps_deb(tmp_path/'deb')
    monkeypatch.setattr(st, 'SYSTEM_STAMPS', tmp_path/'not-installed')
    monkeypatch.setenv('FUSION_STUDY_CACHE', str(tmp_path/'cache'))
    runs = []
    def apt(cmd, cwd, **kw):
        runs.append(cmd); shutil.copy(deb, cwd)
        return subprocess.CompletedProcess(cmd, 0, '', '')
    want = tmp_path/'cache'/'downloads'/st.STAMPS_PACKAGE/st.STAMPS_IN_DEB
    assert st.find_stamps_package(run=apt, log=lambda *a: None) == want and len(runs) == 1
    assert st.find_stamps_package(run=apt, log=lambda *a: None) == want and len(runs) == 1     # cached
