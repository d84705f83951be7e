"Mistakes a user can make get one clear sentence, exit status 2, and touch nothing already computed."
import pytest
from conftest import cli, digest
from fusion_study.core import FusionStudyError
from fusion_study.data import load_captions, build_pairs, synthetic_features

def _params(tmp_path, text):
    p = tmp_path/'p.yaml'; p.write_text(text); return p

@pytest.mark.parametrize('text, words', [
    ("defaults: {sclaes: [256]}\nconfigs: [{name: a}]\n", ["'sclaes'", "did you mean 'scales'"]),
    ("configs: [{name: a, epochs: ten}]\n", ["'epochs'", 'must be int']),
    ("defaults: {}\nconfigs: [{name: a}]\nextra: 1\n", ["'extra'"]),
    ("configs: [{name: a, n_images: 50, scales: [1024]}]\n", ['Scale 1024', 'more than the data allows']),
    ("configs: [{name: a, methods: [concat, lstm]}]\n", ["'lstm'", 'concat']),
    ("configs: [{name: a}, {name: a}]\n", ['unique']),
])
def test_bad_params_fail_before_any_work(tmp_path, smoke_runs, text, words):
    runs, _ = smoke_runs
    before = digest(runs)
    r = cli('run', _params(tmp_path, text), '--runs-dir', runs)
    assert r.returncode == 2
    msg = r.stderr.strip()
    assert msg.startswith('fusion-study: error:') and len(msg.splitlines()) == 1 and 'Traceback' not in msg
    for w in words: assert w in msg
    assert digest(runs) == before

def test_missing_params_file(tmp_path):
    r = cli('run', tmp_path/'nope.yaml')
    assert r.returncode == 2 and 'does not exist' in r.stderr

def test_missing_captions_file(tmp_path):
    with pytest.raises(FusionStudyError, match='does not exist'): load_captions(tmp_path/'Flickr8k.token.txt')

def test_malformed_caption_line_names_file_and_line(tmp_path):
    p = tmp_path/'Flickr8k.token.txt'
    p.write_text("a.jpg#0\tA dog .\na.jpg#1 a caption with no tab\n")
    with pytest.raises(FusionStudyError, match=r'Line 2 of .*Flickr8k.token.txt'): load_captions(p)

def test_bad_kaggle_header(tmp_path):
    p = tmp_path/'captions.txt'; p.write_text("image,caption,extra\na.jpg,x,y\n")
    with pytest.raises(FusionStudyError): load_captions(p)

def test_too_many_pairs_is_an_error_not_a_shrink():
    f = synthetic_features(20)
    assert len(build_pairs(f.caption_image, 200, seed=0)) == 200
    with pytest.raises(FusionStudyError, match='at most 200'): build_pairs(f.caption_image, 202, seed=0)
    with pytest.raises(FusionStudyError, match='even'): build_pairs(f.caption_image, 101, seed=0)

NO_TORCH = """import sys
from fusion_study.cli import main
rc = main(sys.argv[1:])
assert rc == 2 and 'torch' not in sys.modules, (rc, 'torch was imported before the mistake was found')"""

@pytest.mark.parametrize('args, text, words', [
    (['run', 'p.yaml'], "configs: [{name: a, methods: [concat, lstm]}]\n", ["Unknown method 'lstm'"]),
    (['run', 'p.yaml'], "configs: [{name: a, engine: fast}]\n", ["Unknown engine 'fast'"]),
    (['run', 'p.yaml'], "configs: [{name: a, device: gpu}]\n", ["Unknown device 'gpu'"]),
    (['run', 'p.yaml'], "configs: [{name: a, notebook: studdy}]\n", ["No notebook named 'studdy'", "'study'"]),
    (['run', 'p.yaml'], "configs: [{name: a, source: features, image_encoder: vit-b}]\n", ["Unknown encoder name 'vit-b'"]),
    (['run', 'p.yaml'], "configs: [{name: a, source: file, features_file: mine.npz}]\n", ['No features file', 'mine.npz']),
    (['advise', 'mine.npz'], None, ['No features file', 'mine.npz']),
    (['advise', 'mine.txt'], 'x', ['unknown kind .txt']),
    (['advise', 'synthetic:alinged'], None, ["Unknown synthetic features 'synthetic:alinged'"]),
    (['advise', 'synthetic:aligned', '--out', 'held'], None, ['already holds advice.json']),
])
def test_a_wrong_name_or_file_answers_before_torch_loads(tmp_path, args, text, words):
    "Goal: every mistake in a command line or params file answers in under 3 s; importing torch alone takes 3–6 s here, so none may import it."
    import subprocess, sys
    if text is not None: (tmp_path/args[1]).write_text(text)
    (tmp_path/'held').mkdir(); (tmp_path/'held'/'advice.json').write_text('{}')
    r = subprocess.run([sys.executable, '-c', NO_TORCH, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for w in words: assert w in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
