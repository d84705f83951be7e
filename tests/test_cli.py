"The whole path through the command line: params file → papermill → results → resume → site."
import shutil
import json
from pathlib import Path
import pandas as pd
import yaml
from conftest import ROOT, cli, digest
from fusion_study.train import RESULT_COLUMNS, METRICS

TABLES = {'study': ['results.csv', 'table1.csv', 'paired_tests.csv'], 'degradation': ['results.csv', 'table2.csv', 'paired_tests.csv'],
          'analysis': ['table3_cost.csv', 'tsne.csv'], 'theory': ['theory_fits.csv', 'theory_crossover.csv']}

def smoke_configs():
    smoke = yaml.safe_load((ROOT/'params'/'smoke.yaml').read_text())
    return smoke, [{**smoke['defaults'], **c} for c in smoke['configs']]

def test_smoke_covers_every_notebook_of_the_site():
    assert {c.get('notebook', 'study') for c in smoke_configs()[1]} == set(TABLES)

def test_smoke_run_produces_every_table(smoke_runs):
    runs, first = smoke_runs
    smoke, configs = smoke_configs()
    for c in configs:
        d, kind = runs/c['name'], c.get('notebook', 'study')
        info = json.loads((d/'run.json').read_text())
        assert info['config']['name'] == c['name'] and info['code_version'] and set(TABLES[kind]) <= set(info['files'])
        for f in info['files']: assert len(pd.read_csv(d/f)) > 0, f"{c['name']}/{f} is empty"
        nb = json.loads((d/f'{kind}.ipynb').read_text())
        assert 'injected-parameters' in json.dumps(nb)                                   # papermill ran it with our parameters
        assert nb['metadata']['papermill']['input_path'].endswith(f'_{kind}.ipynb') and Path(nb['metadata']['papermill']['input_path']).parent.name == 'nbs'
        assert not any(s.startswith(('_toy', '_html = ', '_many', '_rows = ', '_p = sample_pairs', '_sc = ', '_truth = ')) for s in (''.join(c['source']) for c in nb['cells']))   # the library's tests are nbdev_test's, not a run's
        if kind in ('study', 'degradation'):
            df = pd.read_csv(d/'results.csv')
            assert list(df.columns[:len(RESULT_COLUMNS)]) == RESULT_COLUMNS and df.code_version.notna().all()
            methods = c.get('methods', smoke['defaults'].get('methods', ['concat', 'cross']))
            grid = len(c['scales']) * len(methods) * len(c['seeds']) * len(c.get('noise', [0.0])) * len(c.get('rotation', [0.0]))
            assert len(df) == grid and set(df.method) == set(methods), (c['name'], len(df), grid)
            assert df[METRICS].apply(lambda s: s.between(0, 1)).all().all() and (df.n_train + df.n_val == df.scale).all()
        if kind == 'study':
            assert (pd.read_csv(d/'results.csv').config == c['name']).all() and info['config']['backbone'] == c.get('backbone', 'aligned')
            tests = pd.read_csv(d/'paired_tests.csv')
            assert list(tests.scale) == sorted(c['scales'] * len(c.get('rotation', [0.0]))) and tests.t_p.between(0, 1).all() and (tests.n_seeds == len(c['seeds'])).all()
            assert tests.t_p_holm.between(0, 1).all() and (tests.t_p_holm >= tests.t_p - 1e-12).all()          # Holm never lowers a p
        if kind == 'degradation':                                                      # sigma = 0 reused from the study it names
            df = pd.read_csv(d/'results.csv')
            assert info['reused_runs'] == 2 * len(c['seeds']) and set(df[df.noise == 0].config) == set(c['inputs'])
            assert list(pd.read_csv(d/'table2.csv').noise) == c['noise']
    report = json.loads((runs/'report'/'report.ipynb').read_text())
    assert 'What we found' in json.dumps(report) and 'report: rebuilt' in first.stdout
    assert 'running' in first.stdout

def test_second_run_resumes_without_training(smoke_runs):
    runs, _ = smoke_runs
    before = {k: v for k, v in digest(runs).items() if not k.startswith('report')}
    again = cli('run', ROOT/'params'/'smoke.yaml', '--runs-dir', runs)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count('skipped') == len(smoke_configs()[1]) and 'running' not in again.stdout and 'report: rebuilt' in again.stdout
    assert {k: v for k, v in digest(runs).items() if not k.startswith('report')} == before

def test_failed_configuration_keeps_finished_results(smoke_runs, tmp_path):
    runs = tmp_path/'runs'; shutil.copytree(smoke_runs[0], runs)      # a copy: the other tests keep a clean runs folder
    before = {k: v for k, v in digest(runs).items() if not k.startswith('report')}
    smoke = yaml.safe_load((ROOT/'params'/'smoke.yaml').read_text())
    bad = {'defaults': smoke['defaults'], 'configs': [smoke['configs'][0], {'name': 'broken'}, {'name': 'reads_broken', 'notebook': 'theory', 'inputs': ['broken']}]}
    (tmp_path/'bad.yaml').write_text(yaml.safe_dump(bad))
    fail = {'FUSION_STUDY_CRASH_AT': 'row', 'FUSION_STUDY_CRASH_MODE': 'raise', 'FUSION_STUDY_CRASH_DIR': str((runs/'broken').resolve())}   # `core.crash_point`
    r = cli('run', tmp_path/'bad.yaml', '--runs-dir', runs, env=fail)           # fails inside its notebook after its first run, as a bug would
    assert r.returncode == 2
    assert 'broken' in r.stderr and 'RuntimeError: injected failure at row' in r.stderr and 'Traceback' not in r.stderr
    assert "reads_broken: not run, its input 'broken' failed" in r.stdout and not (runs/'reads_broken').exists()
    assert (runs/'broken'/'study.ipynb').exists() and 'RuntimeError' in (runs/'broken'/'study.ipynb').read_text()
    assert not (runs/'broken'/'run.json').exists()
    after = digest(runs)
    assert {k: v for k, v in after.items() if not k.startswith(('broken', 'report', '.lock'))} == {k: v for k, v in before.items() if k != '.lock'}
    assert 'broken' in (runs/'report'/'report.ipynb').read_text()                 # the report lists it as not run

def test_site_fallback_builds_pages(smoke_runs, tmp_path):
    runs, _ = smoke_runs
    r = cli('site', '--runs-dir', runs, '--out', tmp_path/'site', '--no-quarto')
    assert r.returncode == 0, r.stderr
    assert 'fallback' in r.stdout and 'index.html' in r.stdout
    index = (tmp_path/'site'/'runs'/'report'/'report.html').read_text()
    assert 'smoke_aligned' in index and 'smoke_unaligned' in index and '±' in index
    df = pd.read_csv(runs/'smoke_aligned'/'results.csv')   # the table on the page is the results file's
    top = df[(df.scale == df.scale.max()) & (df.noise == 0)].pivot_table(index='seed', columns='method', values='accuracy')
    from fusion_study.report import pts
    assert f"cross − concat is {pts(((top.cross - top.concat) * 100).mean())} points at {int(df.scale.max()):,} pairs" in index   # the findings' gap, in the site's sign
    for name, nb in (('smoke_aligned', 'study'), ('smoke_unaligned', 'study'), ('degradation', 'degradation')):
        assert (tmp_path/'site'/'runs'/name/f'{nb}.html').exists()
    assert 'runs/report/report.html' in (tmp_path/'site'/'index.html').read_text()
