"Issue 24: attention methods that can win — the token-set controls with known answers, trained small, and token sets through both engines."
import pytest
import torch

from fusion_study import train as T
from fusion_study.core import FusionStudyError, RunConfig, TOKEN_TASKS
from fusion_study.data import token_controls, token_mask, ATTENTION_WINS
from fusion_study.study import attention_tests, preflight, CONTROL_BASELINES

SMALL = dict(n_images=400, dim=32, k_v=8)          # 2,000 captions; 8 image tokens and up to 3 caption tokens of width 32

@pytest.fixture(scope='module')
def verdicts():
    "Each control trained small (1,024 pairs, 5 epochs, 2 seeds): attend and the pooled baselines, judged by the study's rule."
    out = {}
    for task in TOKEN_TASKS:
        f = token_controls(task, **SMALL, seed=1)
        specs = [T.RunSpec(method=m, scale=1024, seed=s, epochs=5, tags=dict(config=task)) for m in ('attend', *CONTROL_BASELINES) for s in (1, 2)]
        out[task] = attention_tests(T.train_runs(f, specs, device='cpu', progress=False), task)
    return out

@pytest.mark.parametrize('task', [t for t in TOKEN_TASKS if ATTENTION_WINS[t]])
def test_attention_beats_every_pooled_method_where_it_must(verdicts, task):
    v = verdicts[task]
    assert set(v.baseline) == set(CONTROL_BASELINES) and v.beats.all() and v.as_expected.all(), v[['baseline', 'mean_diff', 'ci_lo', 'ci_hi']]

def test_attention_does_not_beat_every_pooled_method_on_the_negative_control(verdicts):
    v = verdicts['pooled']
    assert not v.beats_all.any() and v.as_expected.all(), v[['baseline', 'mean_diff', 'ci_lo', 'ci_hi']]

def test_pooled_methods_are_at_chance_on_the_invariant_control(verdicts):
    "Every image pools to the same vector: no pooled method can learn anything."
    assert (verdicts['invariant'].baseline_mean.between(40, 60)).all()

@pytest.mark.parametrize('method', ['attend', 'xattn', 'concat', 'match_mlp'])
def test_token_sets_train_alike_in_both_engines(method):
    "Token sets (zero padding, masks recovered in the forward pass) with noise and a rotated text side train to equal metrics in both engines."
    f = token_controls('pointer', 60, dim=8, k_v=4, seed=0)
    specs = [T.RunSpec(method=method, scale=n, seed=s, noise=sig, rotation=rot, epochs=1)
             for n in (64, 128) for s in (1, 2) for sig, rot in ((0.0, 0.0), (0.3, 0.5))]
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try: loop = T.train_runs(f, specs, engine='loop', device='cpu', progress=False)
    finally: torch.set_num_threads(threads)
    batched = T.train_runs(f, specs, engine='batched', device='cpu', progress=False)
    assert (batched[T.METRICS] - loop[T.METRICS]).abs().max().max() <= 1e-6

def test_padding_is_invisible_to_the_attention_methods():
    "Adding padding tokens (zero rows) to every item changes no prediction: the mask travels with the features."
    from fusion_study.fusion import make_model, methods_for
    f = token_controls('invariant', 30, dim=8, k_v=4, seed=0)
    v, t = f.image[:12], f.text[:12]
    pad = lambda x, k, extra: torch.cat([x.view(len(x), k, -1), torch.zeros(len(x), extra, x.shape[1] // k)], 1).flatten(1)
    for m in ('attend', 'xattn', 'concat', 'cross'):
        torch.manual_seed(0); a = make_model(m, *f.dims, methods=methods_for((4, 3))).eval()
        torch.manual_seed(0); b = make_model(m, 6 * 8, 5 * 8, methods=methods_for((6, 5))).eval()
        if m == 'xattn':           # its learned positions grow with K: give the wider model the same first positions
            b.pos_v.data[:4], b.pos_t.data[:4] = a.pos_v.data, a.pos_t.data
        b.load_state_dict({k: x for k, x in a.state_dict().items() if not k.startswith('pos_')}, strict=False)
        assert torch.allclose(a(v, t), b(pad(v, 4, 2), pad(t, 3, 2)), atol=1e-5), m
        assert token_mask(pad(v, 4, 2), 6)[:, 4:].any().item() is False

def test_a_control_configuration_is_checked_before_training():
    cfg = RunConfig(name='c', token_task='pointer', dim=16, n_images=50, scales=[200], methods=['concat', 'attend', 'xattn'])
    preflight(cfg)
    for bad, what in ((dict(token_task='pointers'), 'token_task'), (dict(dim=15), 'even')):
        with pytest.raises(FusionStudyError, match=what): preflight(RunConfig(**{**cfg.to_dict(), **bad}))

def test_a_study_with_attention_off_the_controls_writes_its_attention_tests(tmp_path):
    "A study that runs `attend` on other features writes attention_tests.csv against every other method it ran, with no known answer."
    from fusion_study.study import run_study
    from fusion_study.results import read_table, ATTENTION_CSV
    cfg = RunConfig(name='pooled_attend', n_images=120, dim=16, scales=[128], seeds=[1, 2], epochs=1, methods=['concat', 'cosine', 'attend'])
    out = run_study(cfg, tmp_path)
    t = read_table(tmp_path, ATTENTION_CSV)
    assert len(out['attention']) == len(t) == 2 and set(t.baseline) == {'concat', 'cosine'} and set(t.method) == {'attend'}
    assert t.task.isna().all() and t.as_expected.isna().all() and t.ci_lo.le(t.mean_diff).all()
    import dataclasses
    assert run_study(dataclasses.replace(cfg, methods=['concat', 'cross']), tmp_path/'none')['attention'] is None     # no attention method: no file
