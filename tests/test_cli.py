"The whole path through the command line: params file → papermill → results → resume → site."
import json
import pandas as pd
import yaml
from conftest import ROOT, cli, digest
from fusion_study.train import RESULT_COLUMNS, METRICS

def test_smoke_run_produces_results_and_notebooks(smoke_runs):
    runs, first = smoke_runs
    cfg = yaml.safe_load((ROOT/'params'/'smoke.yaml').read_text())
    for c in cfg['configs']:
        d = runs/c['name']
        df = pd.read_csv(d/'results.csv')
        assert list(df.columns[:len(RESULT_COLUMNS)]) == RESULT_COLUMNS
        n = len(cfg['defaults']['scales']) * 2 * len(cfg['defaults']['seeds'])
        assert len(df) == n and set(df.method) == {'concat', 'cross'} and (df.config == c['name']).all()
        assert df[METRICS].apply(lambda s: s.between(0, 1)).all().all()
        assert (df.n_train + df.n_val == df.scale).all() and df.code_version.notna().all()
        info = json.loads((d/'run.json').read_text())
        assert info['config']['name'] == c['name'] and info['config']['backbone'] == c['backbone'] and info['code_version']
        nb = json.loads((d/'study.ipynb').read_text())
        outputs = json.dumps([c.get('outputs') for c in nb['cells'] if c['cell_type'] == 'code'], ensure_ascii=False)
        assert '±' in outputs and 'injected-parameters' in json.dumps(nb)   # papermill ran it with our parameters
    assert 'running' in first.stdout

def test_second_run_resumes_without_training(smoke_runs):
    runs, _ = smoke_runs
    before = digest(runs)
    again = cli('run', ROOT/'params'/'smoke.yaml', '--runs-dir', runs)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count('skipped') == 2 and 'running' not in again.stdout
    assert digest(runs) == before

def test_failed_configuration_keeps_finished_results(smoke_runs, tmp_path):
    runs, _ = smoke_runs
    before = digest(runs)
    smoke = yaml.safe_load((ROOT/'params'/'smoke.yaml').read_text())
    bad = {'defaults': smoke['defaults'], 'configs': [smoke['configs'][0], {'name': 'broken', 'alignment': 1.5}]}
    (tmp_path/'bad.yaml').write_text(yaml.safe_dump(bad))
    r = cli('run', tmp_path/'bad.yaml', '--runs-dir', runs)
    assert r.returncode == 2
    assert 'broken' in r.stderr and 'alignment' in r.stderr and 'Traceback' not in r.stderr
    assert (runs/'broken'/'study.ipynb').exists() and 'FusionStudyError' in (runs/'broken'/'study.ipynb').read_text()
    assert not (runs/'broken'/'run.json').exists()
    after = digest(runs)
    assert {k: v for k, v in after.items() if not k.startswith('broken')} == before

def test_site_fallback_builds_pages(smoke_runs, tmp_path):
    runs, _ = smoke_runs
    r = cli('site', '--runs-dir', runs, '--out', tmp_path/'site', '--no-quarto')
    assert r.returncode == 0, r.stderr
    assert 'fallback' in r.stdout and 'index.html' in r.stdout
    index = (tmp_path/'site'/'runs'/'index.html').read_text()
    assert 'smoke_aligned' in index and 'smoke_unaligned' in index and '±' in index
    df = pd.read_csv(runs/'smoke_aligned'/'results.csv')   # the table on the page is the results file's
    m = df[(df.method == 'concat') & (df.scale == df.scale.max())].accuracy
    assert f"{m.mean() * 100:.2f} ± {m.std() * 100:.2f}" in index
    for name in ('smoke_aligned', 'smoke_unaligned'):
        assert (tmp_path/'site'/'runs'/name/'study.html').exists()
    assert 'runs/index.html' in (tmp_path/'site'/'index.html').read_text()
