"The analysis and theory notebooks' library parts: FLOPs measured, fits recover a known truth, missing inputs are named."
import numpy as np, pytest
from fusion_study.core import FusionStudyError, RunConfig
from fusion_study.analysis import cost_table, sample_pairs, alignment_scores
from fusion_study.data import synthetic_features
from fusion_study.theory import (crossover_n, fit_curves, fit_risk, learning_points, read_inputs, sample_complexity,
                                 synthetic_learning_curves, theory_claims)

def test_sample_complexity_ratio_is_256_for_512d():
    t = sample_complexity(512, 512).set_index('method')
    assert t.samples['concat'] == 1024 and t.samples['cross'] == 262144 and t.vs_concat['cross'] == 256

def test_flops_are_measured_and_follow_parameters():
    t = cost_table(['concat', 'cross'], 512, 512).set_index('method')
    assert t.params['concat'] == 295_554 and t.flops_forward['concat'] == 2 * (1024 * 256 + 256 * 128 + 128 * 2)     # every Linear weight: one multiply–add
    assert t.flops_forward['cross'] > t.flops_forward['concat'] and t.params['cross'] > t.params['concat']

def test_alignment_scores_tell_aligned_from_unaligned():
    s = {a: alignment_scores(f := synthetic_features(200, alignment=a, seed=0), sample_pairs(f, 100, seed=0)) for a in (0.0, 1.0)}
    assert s[1.0]['retrieval_r1'] > 0.3 > s[0.0]['retrieval_r1'] and s[1.0]['matched_cosine'] > s[0.0]['matched_cosine'] + 0.2

def test_fit_recovers_truth_and_crossover():
    truth = {'unaligned': {'concat': (0.30, 60.0), 'cross': (0.20, 400.0)}}
    fits, cross = fit_curves(learning_points(synthetic_learning_curves(truth, sd=0.002)), n_boot=50)
    f = fits.set_index('method')
    assert abs(f.B['concat'] - 0.30) < 0.01 and abs(f.B['cross'] - 0.20) < 0.01
    assert abs(cross.N_star[0] - crossover_n(0.30, 60, 0.20, 400)) / 3400 < 0.2 and cross.p_crossover[0] == 1

def test_no_crossover_when_concat_bias_is_not_higher():
    assert np.isnan(crossover_n(0.1, 10, 0.2, 500))
    truth = {'aligned': {'concat': (0.10, 60.0), 'cross': (0.12, 400.0)}}
    fits, cross = fit_curves(learning_points(synthetic_learning_curves(truth, sd=0.002)), n_boot=50)
    assert np.isinf(cross.N_star[0]) and cross.verdict[0].startswith('no crossover')
    claims = theory_claims(sample_complexity(512, 512).assign(input='a'), cross)
    assert list(claims.columns) == ['table', 'claim', 'paper', 'ours', 'verdict', 'decided_by']
    assert claims.verdict.tolist() == ['not an empirical claim', 'reproduced', 'reproduced']   # 256× is arithmetic; V ratio; no crossover

def test_fit_needs_two_scales():
    with pytest.raises(FusionStudyError, match='two or more scales'): fit_risk([512, 512], [0.2, 0.3])

def test_missing_input_names_configuration_and_fix(tmp_path):
    with pytest.raises(FusionStudyError, match=r"reads configuration 'study_a'.*fusion-study run"):
        read_inputs(tmp_path/'theory', RunConfig(name='theory', notebook='theory', inputs=['study_a']))
    with pytest.raises(FusionStudyError, match='names no inputs'):
        read_inputs(tmp_path/'theory', RunConfig(name='theory', notebook='theory'))
