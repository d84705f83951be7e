"Real data path on fixtures: Flickr8k folders and download (flickr8k) → encoders by name (encoders) → cached extraction → a study on the cache (extract). No network."
import http.server, io, json, os, shutil, subprocess, threading, time, zipfile
from pathlib import Path
import pandas as pd
import pytest, torch, yaml
from conftest import ROOT, SHARED_TEXT, cli, digest
import fusion_study.extract as X
import fusion_study.flickr8k as K
from fusion_study.core import FusionStudyError, RunConfig

@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    "Each test has its own feature cache, and Hugging Face libraries never go online."
    monkeypatch.setenv('FUSION_STUDY_CACHE', str(tmp_path/'cache'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')

def cli_here(*args) -> subprocess.CompletedProcess:
    """`fusion-study` through the command's own `main`, in this process (torch and the encoders already imported): for the steps below that
    refuse or read the cache, the same exit status and lines as the installed command, without an interpreter's start and imports each."""
    import contextlib, io
    from fusion_study.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: rc = main([str(a) for a in args])
        except SystemExit as e: rc = e.code
    return subprocess.CompletedProcess(['fusion-study', *map(str, args)], rc, out.getvalue(), err.getvalue())

def _extract(data, image, text, **kw):
    kw = {**dict(device='cpu', num_workers=2, max_bad_frac=0.1, progress=False, log=lambda *a: None), **kw}
    return X.extract_features(data, image, text, **kw)

# ---------------------------------------------------------------- data folders
def test_both_layouts_scan_alike(flickr):
    off, kag = K.scan_dataset(flickr.official), K.scan_dataset(flickr.kaggle)
    assert (off.report['layout'], kag.report['layout']) == ('official', 'kaggle')
    pd.testing.assert_frame_equal(off.captions.table, kag.captions.table)
    for r in (off.report, kag.report):
        assert r['images'] == 12 and r['captions'] == 60 and r['images_on_disk'] == 13
        assert r['images_without_caption'] == ['9999_no_captions.jpg'] and r['captions_without_image'] == 1
    assert off.report['folded_image_names'] == 1
    assert off.images_fingerprint() == kag.images_fingerprint() and off.captions_fingerprint() == kag.captions_fingerprint()

@pytest.mark.skipif(not (SHARED_TEXT/'Flickr8k.token.txt').exists(), reason='real Flickr8k captions absent')
def test_official_archive_without_one_image_gives_40455_captions(tmp_path):
    "The real token file beside a folder holding the 8,091 images of the official archive (empty stand-ins)."
    root = tmp_path/'flickr8k'; (root/'Flicker8k_Dataset').mkdir(parents=True)
    shutil.copy(SHARED_TEXT/'Flickr8k.token.txt', root)
    names = set(pd.read_csv(root/'Flickr8k.token.txt', sep='\t', header=None, quoting=3)[0].str.replace(r'(\.jpg)(\.\d+)?#\d+$', r'\1', regex=True))
    assert len(names) == 8092
    for n in names - {'2258277193_586949ec62.jpg'}: (root/'Flicker8k_Dataset'/n).touch()
    r = K.scan_dataset(root).report
    assert (r['images'], r['captions'], r['captions_without_image']) == (8091, 40455, 5)
    assert r['images_missing'] == ['2258277193_586949ec62.jpg'] and r['folded_image_names'] == 1 and not r['images_without_caption']

def test_missing_folder_and_wrong_layout_say_what_to_do(tmp_path):
    with pytest.raises(FusionStudyError, match='fusion-study data flickr8k --dest'): K.scan_dataset(tmp_path/'nope')
    with pytest.raises(FusionStudyError, match='neither Flickr8k layout'): K.scan_dataset(tmp_path)

# ---------------------------------------------------------------- download
class _Server:
    "A local HTTP server for files in a dict, with Range support; `cut` serves only that many bytes of a file, then hangs up."
    def __init__(self, files):
        self.files, self.cut, self.ranges = files, {}, []
        server = self
        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_GET(self):
                name = self.path.rsplit('/', 1)[-1]
                if name not in server.files: self.send_error(404); return
                data, start = server.files[name], 0
                rng = self.headers.get('Range')
                server.ranges.append((name, rng))
                if rng:
                    start = int(rng.split('=')[1].split('-')[0])
                    self.send_response(206); self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
                else: self.send_response(200)
                self.send_header('Content-Length', str(len(data) - start)); self.end_headers()
                self.wfile.write(data[start:server.cut.get(name, len(data))])
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/Flickr8k'
    def close(self): self.httpd.shutdown(); self.httpd.server_close()

def _archives(src:Path) -> dict:
    "The two archives as the mirror lays them out (images under Flicker8k_Dataset/, macOS junk included)."
    out = {}
    for name, members in (('Flickr8k_Dataset.zip', [('Flicker8k_Dataset/' + p.name, p.read_bytes()) for p in sorted((src/'Flicker8k_Dataset').iterdir())]),
                          ('Flickr8k_text.zip', [('Flickr8k.token.txt', (src/'Flickr8k.token.txt').read_bytes())])):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, 'w') as z:
            for m, b in members + [('__MACOSX/._junk', b'x')]: z.writestr(m, b)
        out[name] = buf.getvalue()
    return out

def test_download_resumes_verifies_renames_and_unpacks(flickr, tmp_path):
    files = _archives(flickr.official)
    srv = _Server(files)
    try:
        dest = tmp_path/'data'
        srv.cut['Flickr8k_Dataset.zip'] = len(files['Flickr8k_Dataset.zip']) // 3      # the connection drops a third of the way
        with pytest.raises(FusionStudyError, match='run the same command again to resume'):
            K.get_flickr8k(dest, base_url=srv.url, progress=False, log=lambda *a: None)
        part = dest/'Flickr8k_Dataset.zip.part'
        assert part.stat().st_size == len(files['Flickr8k_Dataset.zip']) // 3 and not (dest/'Flickr8k_Dataset.zip').exists()
        srv.cut.clear()
        ds = K.get_flickr8k(dest, base_url=srv.url, progress=False, log=lambda *a: None)
        assert ('Flickr8k_Dataset.zip', f'bytes={len(files["Flickr8k_Dataset.zip"]) // 3}-') in srv.ranges   # resumed, not restarted
        for n, b in files.items(): assert (dest/n).read_bytes() == b and not (dest/(n + '.part')).exists()
        assert ds.report['layout'] == 'official' and ds.report['images'] == 12 and not (dest/'__MACOSX').exists()
        n_requests = len(srv.ranges)
        assert K.get_flickr8k(dest, base_url=srv.url, progress=False).report == ds.report and len(srv.ranges) == n_requests   # accepted as is
    finally: srv.close()

def test_corrupt_archive_is_refused(flickr, tmp_path):
    files = _archives(flickr.official)
    bad = bytearray(files['Flickr8k_text.zip']); bad[40:60] = b'\0' * 20
    srv = _Server({**files, 'Flickr8k_text.zip': bytes(bad)})
    try:
        with pytest.raises(FusionStudyError, match='not a valid zip'):
            K.get_flickr8k(tmp_path, base_url=srv.url, progress=False, log=lambda *a: None)
        assert not (tmp_path/'Flickr8k_text.zip').exists() and not (tmp_path/'Flickr8k_text.zip.part').exists()
    finally: srv.close()

def test_offline_download_fails_at_once_with_instructions(tmp_path):
    t = time.time()
    r = cli('data', 'flickr8k', '--dest', tmp_path/'d', '--base-url', 'http://127.0.0.1:9/Flickr8k')
    assert r.returncode == 2 and time.time() - t < 60
    msg = r.stderr.strip()
    assert len(msg.splitlines()) == 1 and 'Traceback' not in msg
    for w in ('by hand', 'Flickr8k_Dataset.zip', 'Flickr8k_text.zip', str(tmp_path/'d')): assert w in msg

def test_existing_folder_is_accepted_by_the_command(flickr):
    r = cli('data', 'flickr8k', '--dest', flickr.kaggle)
    assert r.returncode == 0, r.stderr
    assert 'kaggle layout' in r.stdout and '12 images with 60 captions' in r.stdout and '9999_no_captions.jpg' in r.stdout

# ---------------------------------------------------------------- extraction and cache
def test_extract_end_to_end_and_cache_reuse(flickr, monkeypatch):
    f = _extract(flickr.official, flickr.clip, flickr.clip)
    assert len(f.ids) == 11 and f.meta['bad_images'] == [K.scan_dataset(flickr.official).images[0]]   # the truncated one
    assert len(f.text) == 55 and f.meta['captions_of_bad_images'] == 5 and f.dims == (32, 32)
    assert torch.allclose(f.image.norm(dim=-1), torch.ones(11)) and torch.allclose(f.text.norm(dim=-1), torch.ones(55))
    table = K.scan_dataset(flickr.official).captions.table
    assert [f.ids[i] for i in f.caption_image] == table[table.image.isin(f.ids)].image.tolist()
    root = Path(os.environ['FUSION_STUDY_CACHE'])/'features'
    metas = [json.loads(p.read_text()) for p in sorted(root.glob('*/meta.json'))]
    assert len(metas) == 2 and all(m['versions']['torch'] and m['key_fields']['items'] for m in metas)
    assert [b['id'] for m in metas for b in m['bad']] == f.meta['bad_images']
    before = digest(root)
    def boom(*a, **k): raise AssertionError('the encoder was loaded although the cache is complete')
    monkeypatch.setattr(X, 'load_encoder', boom)
    lines = []
    again = X.extract_features(flickr.official, flickr.clip, flickr.clip, device='cpu', max_bad_frac=0.1, progress=False, log=lines.append)
    kaggle = _extract(flickr.kaggle, flickr.clip, flickr.clip)                  # same files, same captions: same cache entries
    assert sum('cached' in l for l in lines) == 2 and digest(root) == before
    for g in (again, kaggle): assert torch.equal(g.image, f.image) and torch.equal(g.text, f.text) and torch.equal(g.caption_image, f.caption_image)

def test_interrupted_extraction_resumes_from_last_chunk(flickr, tmp_path, monkeypatch):
    def stop_after_two(c):
        if c == 1: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        _extract(flickr.official, flickr.clip, flickr.clip, batch_size=2, chunk_size=4, on_chunk=stop_after_two)
    root = Path(os.environ['FUSION_STUDY_CACHE'])/'features'
    assert len(list(root.glob('*/chunk-*.safetensors'))) == 2 and not list(root.glob('*/meta.json'))
    f = _extract(flickr.official, flickr.clip, flickr.clip, batch_size=2, chunk_size=4)
    image_meta = [json.loads(p.read_text()) for p in root.glob('*/meta.json') if json.loads(p.read_text())['key_fields']['modality'] == 'image'][0]
    assert image_meta['computed_items'] == 4 and image_meta['n_items'] == 12          # only the last chunk was computed again
    assert not list(root.glob('*/chunk-*'))
    monkeypatch.setenv('FUSION_STUDY_CACHE', str(tmp_path/'fresh'))
    fresh = _extract(flickr.official, flickr.clip, flickr.clip)
    assert torch.allclose(f.image, fresh.image, atol=1e-6) and torch.allclose(f.text, fresh.text, atol=1e-6)

def test_more_than_one_percent_bad_images_is_an_error(flickr):
    with pytest.raises(FusionStudyError, match=r'1 of 12 images could not be decoded.*more than 1%'):
        _extract(flickr.official, flickr.clip, flickr.clip, max_bad_frac=0.01)

def test_a_cache_that_does_not_match_is_never_used(flickr, tmp_path):
    _extract(flickr.official, flickr.clip, flickr.clip)
    data = tmp_path/'changed'; shutil.copytree(flickr.official, data)
    X.cached_features(data, flickr.clip, flickr.clip)                             # a copy is the same data set
    victim = sorted((data/'Flicker8k_Dataset').iterdir())[3]
    victim.write_bytes(victim.read_bytes() + b'\0')                                # one image changed: a new key
    with pytest.raises(FusionStudyError, match=r'No cached image features.*fusion-study extract --data'):
        X.cached_features(data, flickr.clip, flickr.clip)
    meta = next(p for p in (Path(os.environ['FUSION_STUDY_CACHE'])/'features').glob('*/meta.json'))
    m = json.loads(meta.read_text()); m['key_fields']['encoder'] = 'something else'; meta.write_text(json.dumps(m))
    with pytest.raises(FusionStudyError, match='does not match its key'):
        X.cached_features(flickr.official, flickr.clip, flickr.clip)

def test_resnet18_and_a_transformers_text_encoder(flickr):
    f = _extract(flickr.official, 'torchvision:resnet18/none', flickr.hf, keep_raw=True)
    assert f.dims == (512, 32) and len(f.ids) == 11 and len(f.text) == 55           # ResNet18's pooled 512-d features
    assert torch.allclose(f.image.norm(dim=-1), torch.ones(11)) and not torch.allclose(f.raw['image'].norm(dim=-1), torch.ones(11))
    assert torch.allclose(torch.nn.functional.normalize(f.raw['text'], dim=-1), f.text, atol=1e-5)
    g = _extract(flickr.official, 'torchvision:resnet18/none', flickr.hf + '@none')   # random weights from the config
    assert g.dims == (512, 32) and torch.equal(g.image, f.image) and not torch.allclose(g.text, f.text)

@pytest.mark.parametrize('image, text, words', [
    ('clip:ViT-B-23/openai', None, ["'ViT-B-23'", "did you mean 'ViT-B-32'"]),
    ('torchvision:resnet81/IMAGENET1K_V1', None, ["'resnet81'", 'resnet18']),
    ('torchvision:resnet18/IMAGENET', None, ["'IMAGENET'", 'IMAGENET1K_V1']),
    ('vit', None, ['Unknown encoder name']),
    (None, 'torchvision:resnet18/none', ['image model']),
    ('torchvision:resnet18/IMAGENET1K_V1', None, ['not in the local cache', 'resnet18-f37072fd.pth']),
    (None, 'hf:sentence-transformers/all-MiniLM-L6-v2', ['could not be loaded', 'all-MiniLM-L6-v2']),
])
def test_encoder_names_and_missing_weights_give_one_sentence(flickr, tmp_path, monkeypatch, image, text, words):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))
    with pytest.raises(FusionStudyError) as e: _extract(flickr.official, image or flickr.clip, text or flickr.clip)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and all(w in msg for w in words), msg

def test_missing_clip_weights_offline_via_the_command(flickr, tmp_path):
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_HOME': str(tmp_path/'hf')}
    r = subprocess.run(['fusion-study', 'extract', '--data', str(flickr.official), '--image-encoder', 'clip:ViT-B-32/openai',
                        '--text-encoder', flickr.clip, '--max-bad-frac', '0.1'], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    msg = r.stderr.strip().splitlines()[-1]
    assert msg.startswith('fusion-study: error: The weights of clip:ViT-B-32/openai are not in the local cache')

# ---------------------------------------------------------------- the study on cached features
def test_check_features_reads_no_tensor(flickr, monkeypatch):
    "The preflight of cached features answers from meta.json and the safetensors header alone, with the messages of loading them."
    _extract(flickr.official, flickr.clip, flickr.clip)
    cfg = RunConfig(source='features', data_dir=str(flickr.official), image_encoder=flickr.clip, text_encoder=flickr.clip, scales=[110], feature_dims=[32, 32])
    import safetensors.torch
    def no_tensors(*a, **k): raise AssertionError('a tensor was read')
    with monkeypatch.context() as mp:
        mp.setattr(safetensors.torch, 'load_file', no_tensors)
        X.check_features(cfg)                                                    # 55 captions of decoded images: 110 pairs
        for bad, words in ((dict(scales=[112]), 'Scale 112 in configuration'), (dict(feature_dims=[32, 64]), 'expects feature_dims [32, 64]'),
                           (dict(text_encoder=flickr.hf + '@none'), 'No cached text features'), (dict(source='sql'), "Unknown feature source 'sql'")):
            with pytest.raises(FusionStudyError) as e: X.check_features(RunConfig(**{**cfg.to_dict(), **bad}))
            assert words in str(e.value) and '\n' not in str(e.value), str(e.value)
        with pytest.raises(FusionStudyError, match=r'\(110 pairs from 55 captions\)'): X.check_features(RunConfig(**{**cfg.to_dict(), 'scales': [112]}))
    assert X.load_features(cfg).max_pairs == 110

def test_study_runs_on_cached_features_through_the_command(flickr, tmp_path):
    p = tmp_path/'real.yaml'
    p.write_text(yaml.safe_dump({'defaults': dict(source='features', data_dir=str(flickr.official), scales=[40, 80], seeds=[42],
                                                  epochs=1, device='cpu', text_encoder=flickr.clip, feature_dims=[32, 32]),
                                 'configs': [dict(name='tiny_aligned', backbone='aligned', image_encoder=flickr.clip)]}))
    runs = tmp_path/'runs'
    r = cli_here('run', p, '--runs-dir', runs)
    assert r.returncode == 2 and 'fusion-study extract --data' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not runs.exists()
    r = cli('extract', '--params', p, '--max-bad-frac', '0.1', '--workers', '2')
    assert r.returncode == 0, r.stderr
    assert 'bad image' in r.stdout and r.stdout.count('extracted') == 2
    again = cli_here('extract', '--params', p, '--max-bad-frac', '0.1')
    assert again.returncode == 0 and again.stdout.count(': cached (') == 2 and 'extracted' not in again.stdout
    r = cli('run', p, '--runs-dir', runs)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(runs/'tiny_aligned'/'results.csv')
    assert len(df) == 4 and (df.source == 'features').all()
    info = json.loads((runs/'tiny_aligned'/'run.json').read_text())
    assert info['features']['source'] == 'features' and len(info['features']['bad_images']) == 1 and info['features']['captions'] == 55

def test_paper_params_files_point_to_real_features(tmp_path):
    from fusion_study.params import load_params
    clip, rn = load_params(ROOT/'params'/'clip_flickr8k.yaml'), load_params(ROOT/'params'/'resnet18_flickr8k.yaml')
    assert [c.image_encoder for c in clip + rn] == ['clip:ViT-B-32/openai', 'torchvision:resnet18/IMAGENET1K_V1']
    assert {c.text_encoder for c in clip + rn} == {'clip:ViT-B-32/openai'}                      # identical text features
    for c in clip + rn:
        assert c.source == 'features' and c.scales == [2048, 4096, 8192, 16384] and c.seeds == [42, 123, 456] and c.feature_dims == [512, 512]
    r = cli_here('run', ROOT/'params'/'clip_flickr8k.yaml', '--runs-dir', tmp_path/'runs')        # no data yet: says how to get it
    assert r.returncode == 2 and 'fusion-study data flickr8k' in r.stderr and not (tmp_path/'runs').exists()
