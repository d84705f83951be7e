"The caption parsers and the pair builder on real Flickr8k text, and determinism of the trainer."
import subprocess, sys
import pandas as pd
import pytest, torch
from conftest import SHARED_TEXT
from fusion_study.data import load_captions, drop_missing_images, split_pairs, synthetic_features
from fusion_study.train import RunSpec, train_runs, METRICS

TOKEN = SHARED_TEXT/'Flickr8k.token.txt'
needs_real = pytest.mark.skipif(not TOKEN.exists(), reason=f'real Flickr8k captions not at {TOKEN}')

@needs_real
def test_real_token_file_parses():
    caps = load_captions(TOKEN)
    assert len(caps) == 40460 and caps.table.image.nunique() == 8092
    assert caps.report['folded_image_names'] == 1
    assert not caps.table.image.str.contains(r'\.jpg\.').any()
    assert (caps.table.groupby('image').size() == 5).all()

@needs_real
def test_missing_image_gives_40455_usable_captions():
    caps = load_captions(TOKEN)
    on_disk = set(caps.images) - {'2258277193_586949ec62.jpg'}     # what the official image archive holds
    usable = drop_missing_images(caps, on_disk)
    assert len(usable) == 40455 and usable.table.image.nunique() == 8091
    assert usable.report['captions_without_image'] == 5

@needs_real
def test_pair_builder_on_real_captions():
    caps = load_captions(TOKEN)
    ids = {im: i for i, im in enumerate(caps.images)}
    ci = torch.tensor(caps.table.image.map(ids).values)
    for by_image in (False, True):
        tr, va = split_pairs(ci, 16384, seed=42, by_image=by_image)
        assert len(tr) + len(va) == 16384 and len(va) == round(16384 * .2 / 2) * 2
        for p in (tr, va):
            assert p.label.float().mean() == .5
            pos, neg = p.label == 1, p.label == 0
            assert (ci[p.text][pos] == p.image[pos]).all() and (ci[p.text][neg] != p.image[neg]).all()
        if by_image: assert not set(tr.image.tolist()) & set(va.image.tolist())

def test_kaggle_and_official_layouts_agree(tmp_path):
    (tmp_path/'Flickr8k.token.txt').write_text('x.jpg#0\tA man, smiling .\nx.jpg#1\tHe said "hi" .\ny.jpg#0\tA dog .\n')
    (tmp_path/'captions.txt').write_text('image,caption\nx.jpg,"A man, smiling ."\nx.jpg,"He said ""hi"" ."\ny.jpg,A dog .\n')
    a, b = load_captions(tmp_path/'Flickr8k.token.txt'), load_captions(tmp_path/'captions.txt')
    pd.testing.assert_frame_equal(a.table, b.table)

def test_training_is_deterministic():
    f = synthetic_features(200, alignment=1.0)
    specs = [RunSpec(method=m, scale=256, seed=7, epochs=2) for m in ('concat', 'cross', 'cross_tokens')]
    a, b = train_runs(f, specs, device='cpu', progress=False), train_runs(f, specs, device='cpu', progress=False)
    pd.testing.assert_frame_equal(a[METRICS], b[METRICS])

def test_data_imports_no_extraction():
    "data is below extraction: importing it loads neither extract, encoders nor flickr8k (no import circle)."
    code = "import sys, fusion_study.data; print(' '.join(sorted(m for m in sys.modules if m.startswith('fusion_study'))))"
    loaded = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split()
    assert 'fusion_study.data' in loaded and not {'fusion_study.extract', 'fusion_study.encoders', 'fusion_study.flickr8k'} & set(loaded), loaded
