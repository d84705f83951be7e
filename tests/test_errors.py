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
