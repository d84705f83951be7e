"Every bad input is one `FusionStudyError` sentence naming the thing and the fix: caption files, `--dest` folders, non-finite features."
import hashlib, json, os, subprocess
from functools import partial
from pathlib import Path
import pandas as pd
import pytest, torch
from safetensors.torch import load_file, save_file
import fusion_study.extract as X
import fusion_study.flickr8k as K
from fusion_study.encoders import tiny_clip_config
from fusion_study.core import FusionStudyError, RunConfig
from fusion_study.data import Features, load_captions, parse_flickr8k_token, parse_kaggle_captions

SHARED_TEXT = Path(__file__).resolve().parent.parent.parent/'shared'/'data'/'flickr8k_text'
BOM, OFFLINE = b'\xef\xbb\xbf', 'http://127.0.0.1:9/Flickr8k'      # port 9 (discard): a download fails at once
TOKEN = b'a.jpg#0\tA dog runs .\na.jpg#1\tA brown dog .\nb.jpg.1#0\tPeople wait\nb.jpg#1\tA train station .\n'
CSV = b'image,caption\na.jpg,"A dog, running"\na.jpg,"He said ""hi"""\nb.jpg,People wait\n'
LATIN1_TOKEN = b'a.jpg#0\tA dog runs .\na.jpg#1\tA brown dog .\nb.jpg#0\tA caf\xe9 .\n'     # line 3, column 14 is Latin-1
LATIN1_CSV = b'image,caption\na.jpg,A dog runs .\nb.jpg,"A caf\xe9, at noon"\n'            # line 3, column 13

@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv('FUSION_STUDY_CACHE', str(tmp_path/'cache'))
    (tmp_path/'cache').mkdir()

def digest(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).rglob('*')) if p.is_file()}

def write(path, data:bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True); path.write_bytes(data); return path

# ---------------------------------------------------------------- the builders: each makes its input in `tmp` and returns the failing call
def dataset_with(tmp, layout, captions:bytes) -> Path:
    "A Flickr8k-shaped folder in `layout` whose caption file is replaced by `captions`."
    root = K.fake_flickr8k(tmp/'flickr8k', n_images=2, size=(32, 24), truncated=0, extras=False, layout=layout)
    write(root/('Flickr8k.token.txt' if layout == 'official' else 'captions.txt'), captions)
    return root

def get(dest): return lambda: K.get_flickr8k(dest, base_url=OFFLINE, progress=False, timeout=5, log=lambda *a: None)

def not_writable(mp, folder):
    "Simulate a read-only `folder` (root may write anywhere, so chmod proves nothing in CI); the check itself is the real one."
    real = os.access
    mp.setattr(K.os, 'access', lambda p, mode, **kw: False if Path(p) == folder and mode & os.W_OK else real(p, mode, **kw))

def features_with(modality, row, value):
    img, txt = torch.eye(4)[:3], torch.eye(4)[[0, 0, 1, 2]]
    (img if modality == 'image' else txt)[row, 1] = value
    return lambda: Features(['i0.jpg', 'i1.jpg', 'i2.jpg'], img, txt, torch.tensor([0, 0, 1, 2]))

def cache_entry_with(tmp, key, row, value):
    "A complete cache entry written by hand, with one bad value in tensor `key`."
    fields = dict(format=X.CACHE_FORMAT, modality='image', items='x', n_items=5, outputs=['l2', 'raw'])
    out = X.cache_path(fields); out.mkdir(parents=True)
    t = dict(features=torch.nn.functional.normalize(torch.randn(5, 4), dim=-1), raw=torch.randn(5, 4), index=torch.arange(5))
    t[key][row, 2] = value
    save_file(t, str(out/'features.safetensors'))
    (out/'meta.json').write_text(json.dumps(dict(key=X.cache_key(fields), key_fields=fields, n_ok=5, dim=4, ids=[f'im{i}.jpg' for i in range(5)])))
    return lambda: X.read_cache(fields)

CASES = {   # name: (build(tmp, monkeypatch) -> the failing call, its input already written, words the one sentence must hold)
    'token file not UTF-8':          (lambda t, mp: partial(load_captions, write(t/'Flickr8k.token.txt', LATIN1_TOKEN)),
                                      ['Line 3 of', 'Flickr8k.token.txt is not valid UTF-8 (byte 0xe9 at column 14)', 're-save it as UTF-8']),
    'token file with BOM, not UTF-8': (lambda t, mp: partial(parse_flickr8k_token, write(t/'tok.txt', BOM + LATIN1_TOKEN)),
                                      ['Line 3 of', 'byte 0xe9 at column 14']),
    'captions.txt not UTF-8':        (lambda t, mp: partial(load_captions, write(t/'captions.txt', LATIN1_CSV)),
                                      ['Line 3 of', 'captions.txt is not valid UTF-8 (byte 0xe9 at column 13)']),
    'captions.txt, BOM, not UTF-8':  (lambda t, mp: partial(parse_kaggle_captions, write(t/'captions.txt', BOM + LATIN1_CSV)),
                                      ['Line 3 of', 'byte 0xe9 at column 13']),
    'captions file is a folder':     (lambda t, mp: partial(load_captions, t), ['Cannot read the captions file', 'readable file']),
    'data: token file not UTF-8':    (lambda t, mp: get(dataset_with(t, 'official', LATIN1_TOKEN)), ['Line 3 of', 'not valid UTF-8']),
    'data: captions.txt not UTF-8':  (lambda t, mp: get(dataset_with(t, 'kaggle', LATIN1_CSV)), ['Line 3 of', 'not valid UTF-8']),
    'data: --dest is a file':        (lambda t, mp: get(write(t/'notes.txt', b'x')), ['notes.txt is a file, not a folder', 'pass a folder']),
    'data: --dest inside a file':    (lambda t, mp: get(write(t/'notes.txt', b'x')/'flickr8k'), ['notes.txt is a file, not a folder']),
    'data: --dest read-only':        (lambda t, mp: (not_writable(mp, t/'ro'), (t/'ro').mkdir(), get(t/'ro'))[-1],
                                      ['ro is not writable', 'cannot be downloaded into it', 'you can write to']),
    'data: --dest in read-only':     (lambda t, mp: (not_writable(mp, t/'ro'), (t/'ro').mkdir(), get(t/'ro'/'a'/'b'))[-1],
                                      ['ro is not writable', 'cannot be put in', 'ro/a/b', 'you can write to']),
    'Features: NaN image':           (lambda t, mp: features_with('image', 2, float('nan')), ['image features', 'NaN/Inf', "row 2 (image 'i2.jpg')"]),
    'Features: Inf text':            (lambda t, mp: features_with('text', 1, float('-inf')), ['text features', "row 1 (a caption of image 'i0.jpg')"]),
    'cache: NaN feature':            (lambda t, mp: cache_entry_with(t, 'features', 3, float('nan')),
                                      ['features.safetensors has non-finite values (NaN/Inf) in row 3', 'im3.jpg', 'delete the folder', 'fusion-study extract']),
    'cache: Inf raw feature':        (lambda t, mp: cache_entry_with(t, 'raw', 0, float('inf')), ["in row 0 ('raw' of im0.jpg)"]),
}

@pytest.mark.parametrize('name', CASES)
def test_bad_input_is_one_sentence_and_changes_nothing(name, tmp_path, monkeypatch):
    build, words = CASES[name]
    call = build(tmp_path, monkeypatch)
    before = digest(tmp_path)
    with pytest.raises(Exception) as e: call()
    msg = str(e.value)
    assert type(e.value) is FusionStudyError, f"{type(e.value).__name__}: {msg}"
    assert '\n' not in msg and msg.rstrip().endswith('.'), msg
    for w in words: assert w in msg, (w, msg)
    assert 'Cannot reach' not in msg                                       # the real reason, not the download that followed
    assert digest(tmp_path) == before                                     # nothing written, nothing deleted

@pytest.mark.skipif(hasattr(os, 'geteuid') and os.geteuid() == 0, reason='root writes into read-only folders; the simulated cases cover it')
def test_a_really_read_only_folder(tmp_path):
    ro = tmp_path/'ro'; ro.mkdir(); ro.chmod(0o555)
    try:
        for dest in (ro, ro/'flickr8k'):
            with pytest.raises(FusionStudyError, match='is not writable'): get(dest)()
    finally: ro.chmod(0o755)

@pytest.mark.parametrize('dest', ['file', 'broken'])
def test_the_command_says_one_sentence(tmp_path, dest):
    target = write(tmp_path/'notes.txt', b'x') if dest == 'file' else dataset_with(tmp_path, 'official', LATIN1_TOKEN)
    r = subprocess.run(['fusion-study', 'data', 'flickr8k', '--dest', str(target), '--base-url', OFFLINE], capture_output=True, text=True, timeout=300)
    msg = r.stderr.strip()
    assert r.returncode == 2 and 'Traceback' not in msg and len(msg.splitlines()) == 1, msg
    assert ('is a file, not a folder' if dest == 'file' else 'is not valid UTF-8') in msg

def test_non_finite_cached_features_are_refused_by_the_study(tmp_path):
    "End to end: extract tiny features, damage one text row, and the study's loader names the file; the other entry is kept."
    data = K.fake_flickr8k(tmp_path/'flickr8k', n_images=4, size=(40, 30), truncated=0)
    clip = f"clip:{tiny_clip_config(tmp_path/'tiny-clip.json')}/none"
    X.extract_features(data, clip, clip, device='cpu', num_workers=0, progress=False, log=lambda *a: None)
    entry = X.cache_path(X.make_plan(data, clip, clip).fields('text'))
    t = load_file(str(entry/'features.safetensors')); t['features'][7, 0] = float('nan'); save_file(t, str(entry/'features.safetensors'))
    before = digest(tmp_path/'cache')
    with pytest.raises(FusionStudyError) as e:
        X.features_for_config(RunConfig(source='features', data_dir=str(data), image_encoder=clip, text_encoder=clip))
    assert f"Feature file {entry/'features.safetensors'} has non-finite values (NaN/Inf) in row 7" in str(e.value)
    assert f'delete the folder {entry} and run `fusion-study extract` again' in str(e.value) and '\n' not in str(e.value)
    assert digest(tmp_path/'cache') == before

# ---------------------------------------------------------------- a byte-order mark changes nothing
def _same_with_bom(path:Path, tmp_path, fmt):
    plain = load_captions(path)
    for variant, data in (('bom', BOM + path.read_bytes()), ('bom-crlf', BOM + path.read_bytes().replace(b'\n', b'\r\n'))):
        got = load_captions(write(tmp_path/variant/path.name, data))
        pd.testing.assert_frame_equal(got.table, plain.table)
        assert got.report['format'] == plain.report['format'] == fmt
        assert {k: v for k, v in got.report.items() if k != 'file'} == {k: v for k, v in plain.report.items() if k != 'file'}
    return plain

@pytest.mark.parametrize('name, data, fmt', [('Flickr8k.token.txt', TOKEN, 'flickr8k_token'), ('captions.txt', CSV, 'kaggle_csv')], ids=['token', 'kaggle'])
def test_bom_parses_the_same_rows_small(tmp_path, name, data, fmt):
    caps = _same_with_bom(write(tmp_path/'plain'/name, data), tmp_path, fmt)
    assert caps.table.image.iat[0] == 'a.jpg' and len(caps) == (4 if fmt == 'flickr8k_token' else 3)

@pytest.mark.skipif(not (SHARED_TEXT/'Flickr8k.token.txt').exists(), reason=f'real Flickr8k captions not at {SHARED_TEXT}')
def test_bom_parses_the_same_rows_real(tmp_path):
    tok = _same_with_bom(SHARED_TEXT/'Flickr8k.token.txt', tmp_path, 'flickr8k_token')
    assert len(tok) == 40460
    (tmp_path/'kaggle').mkdir(); tok.table.to_csv(tmp_path/'kaggle'/'captions.txt', index=False)   # the same captions as Kaggle lays them out
    kag = _same_with_bom(tmp_path/'kaggle'/'captions.txt', tmp_path, 'kaggle_csv')
    pd.testing.assert_frame_equal(kag.table, tok.table)
