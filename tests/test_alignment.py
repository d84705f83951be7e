"Issue 12: alignment measured, misalignment that keeps the information, and the baselines that test the explanation."
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fusion_study import train as T
from fusion_study.alignment import alignment_metrics, alignment_table, linear_cka, measure_alignment, mutual_knn
from fusion_study.core import FusionStudyError, RunConfig
from fusion_study.data import (Features, knob_weight, misalign, permute_features, rotate_features, synthetic_features,
                               synthetic_token_features)
from fusion_study.fusion import METHODS, make_model, n_params
from fusion_study.results import ALIGNMENT_CSV, schema


@pytest.fixture(scope='module')
def aligned(): return synthetic_features(2000, alignment=1.0)

def _rotated(f, theta): return Features(f.ids, f.image, rotate_features(f.text, theta), f.caption_image)

# --- alignment metrics on constructed cases

def test_identical_features_are_perfectly_aligned():
    g = torch.Generator().manual_seed(0)
    v = F.normalize(torch.randn(300, 64, generator=g), dim=-1)
    owner = torch.arange(300).repeat_interleave(2)
    m = alignment_metrics(v, v[owner], owner)
    assert m['zero_shot_auc'] == 1.0 and m['i2t_r1'] == m['t2i_r1'] == 1.0
    assert abs(m['cka'] - 1) < 1e-9 and m['mutual_knn'] == 1.0 and m['modality_gap'] < 1e-6

def test_independent_features_are_at_chance():
    g = torch.Generator().manual_seed(1)
    v, t = torch.randn(400, 64, generator=g), torch.randn(1200, 64, generator=g)
    owner = torch.arange(400).repeat_interleave(3)
    m = alignment_metrics(v, t, owner)
    assert abs(m['zero_shot_auc'] - 0.5) < 0.04 and abs(m['cka']) < 0.05 and m['mutual_knn'] < 3 * m['knn_chance']
    assert m['t2i_r5'] < 0.05 and m['n_images'] == 400 and m['n_captions'] == 1200

def test_cka_and_knn_see_through_isometries_the_zero_shot_numbers_do_not(aligned):
    base = measure_alignment(aligned, n=500)
    for f in (_rotated(aligned, math.pi / 2), Features(aligned.ids, aligned.image, permute_features(aligned.text), aligned.caption_image)):
        m = measure_alignment(f, n=500)
        assert abs(m['cka'] - base['cka']) < 1e-6 and abs(m['mutual_knn'] - base['mutual_knn']) < 1e-6
        assert abs(m['zero_shot_auc'] - 0.5) < 0.05 and base['zero_shot_auc'] > 0.98

# --- rotation and permutation

@pytest.mark.parametrize('theta', [math.pi / 8, math.pi / 4, math.pi / 3, math.pi / 2])
def test_rotation_is_an_isometry_by_exactly_theta(aligned, theta):
    x = aligned.text[:300]
    y = rotate_features(x, theta)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.allclose(torch.cdist(y.double(), y.double()), torch.cdist(x.double(), x.double()), atol=1e-5)
    assert torch.allclose((x * y).sum(-1), torch.full((300,), math.cos(theta)), atol=1e-5)

def test_rotation_at_zero_is_the_identity_and_odd_widths_work(aligned):
    assert torch.equal(rotate_features(aligned.text, 0.0), aligned.text)
    x = F.normalize(torch.randn(20, 7), dim=-1)
    assert torch.allclose(rotate_features(x, 1.0).norm(dim=-1), torch.ones(20), atol=1e-6)
    assert torch.equal(misalign(x), x) and not torch.equal(misalign(x, 0.0, True), x)

# --- the synthetic knob

def test_knob_auc_is_monotone_and_roughly_even():
    auc = np.array([measure_alignment(synthetic_features(2000, alignment=a, seed=3), n=1000)['zero_shot_auc'] for a in (0, .25, .5, .75, 1)])
    steps = np.diff(auc)
    assert abs(auc[0] - 0.5) < 0.03 and auc[-1] > 0.98
    assert (steps > 0.07).all() and steps.max() < 2.5 * steps.min(), auc          # even: no step dwarfs another
    assert [knob_weight(a) for a in (0, 1)] == [0.0, 1.0]
    with pytest.raises(FusionStudyError): knob_weight(1.2)

def test_random_pairs_have_positive_cosine_like_clip(aligned):
    m = measure_alignment(aligned, n=500)
    assert 0.1 < m['random_pair_cosine'] < 0.3 and m['modality_gap'] > 0.3

def test_token_features_match_one_region():
    f = synthetic_token_features(200, tokens=8)
    v, t = f.image.view(200, 8, 64), f.text.view(1000, 8, 64)
    assert torch.allclose(t[:, 0], t[:, 5])                                       # the caption's vector, tiled
    sims = torch.einsum('nkd,nd->nk', v[f.caption_image], t[:, 0]) * 8
    assert (sims.max(1).values - sims.median(1).values).mean() > 0.3
    with pytest.raises(FusionStudyError): synthetic_token_features(10, dim=512, tokens=7)

# --- the methods

def test_cosine_is_near_chance_rotated_and_near_its_auc_aligned(aligned):
    specs = [T.RunSpec(method='cosine', scale=2048, seed=42, rotation=r) for r in (0.0, math.pi / 2)]
    torch.set_num_threads(1)
    acc = T.train_runs(aligned, specs, engine='loop', device='cpu', progress=False).accuracy.tolist()
    auc = measure_alignment(aligned, n=1000)['zero_shot_auc']
    assert acc[0] > 0.9 and acc[0] > auc - 0.06, (acc, auc)
    assert abs(acc[1] - 0.5) < 0.06, acc
    assert n_params(make_model('cosine')) == 2

def test_cosine_refuses_different_widths():
    with pytest.raises(FusionStudyError, match='cosine_proj'): make_model('cosine', 512, 256)
    assert make_model('cosine_proj', 512, 256)(torch.randn(3, 512), torch.randn(3, 256)).shape == (3, 2)

@pytest.mark.parametrize('method', list(METHODS))
def test_each_method_depends_on_both_inputs(method):
    "Every output moves with the image and with the text; `eq3` (the literal Eq. 3, one key) sees the image only, by construction."
    torch.manual_seed(0)
    v, t = F.normalize(torch.randn(8, 512), dim=-1), F.normalize(torch.randn(8, 512), dim=-1)
    model = make_model(method).eval()
    out = model(v, t)
    assert not torch.allclose(out, model(v.roll(1, 0), t)), f'{method} ignores the image'
    if method == 'eq3': assert torch.equal(out, model(v, t.roll(1, 0)))
    else: assert not torch.allclose(out, model(v, t.roll(1, 0))), f'{method} ignores the text'

def test_matched_sizes():
    n = {m: n_params(make_model(m)) for m in ('concat', 'bilinear', 'concat_matched', 'cross')}
    assert abs(n['bilinear'] / n['concat'] - 1) < 0.01 and n['concat'] < n['concat_matched'] < n['cross']

# --- runs and results carry rotation and the measured alignment

def test_rotation_is_a_grid_axis_and_permute_part_of_the_data():
    cfg = RunConfig(methods=['cosine'], scales=[256], seeds=[1], rotation=[0.0, math.pi / 4], permute=True)
    specs = T.config_specs(cfg)
    assert [s.rotation for s in specs] == [0.0, math.pi / 4] and all(s.permute for s in specs) and len({s.key() for s in specs}) == 2
    assert RunConfig(rotation=[0.3]).identity() == RunConfig().identity() != RunConfig(permute=True).identity()
    with pytest.raises(FusionStudyError, match="'rotation'"): RunConfig(rotation=[2.0])

def test_alignment_table_follows_the_grid(aligned):
    cfg = RunConfig(name='t', n_images=2000, noise=[0.0, 0.3], rotation=[0.0, math.pi / 2], scales=[256])
    tab = alignment_table(cfg, aligned, n=300)
    assert len(tab) == 4 and set(tab.columns) <= set(schema(ALIGNMENT_CSV).columns) and set(schema(ALIGNMENT_CSV).required) <= set(tab.columns)
    clean = tab[(tab.noise == 0) & (tab.rotation == 0)].iloc[0]
    turned = tab[(tab.noise == 0) & (tab.rotation > 0)].iloc[0]
    noisy = tab[(tab.noise > 0) & (tab.rotation == 0)].iloc[0]
    assert turned.zero_shot_auc < 0.6 < clean.zero_shot_auc and abs(turned.cka - clean.cka) < 1e-6   # alignment gone, information kept
    assert noisy.cka < clean.cka / 3                                                                     # noise: information gone
