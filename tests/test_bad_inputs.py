"""Nothing lost, nothing half-done published, every bad input one sentence: params mistakes, runs and site folders, a kill at
every write boundary, damaged results, concurrent commands, Ctrl-C. Each case states its input, the expected sentence and that
what was there before is byte-for-byte unchanged."""
import json, os, shutil, signal, subprocess, time
import pandas as pd
import pytest
from conftest import ROOT, cli, digest
from fusion_study.core import CRASH_POINTS, folder_lock
from fusion_study.params import load_params
from fusion_study.train import METRICS

def _params(tmp_path, text, name='p.yaml'):
    p = tmp_path/name; p.write_text(text); return p

def cli_here(*args, cwd=None) -> subprocess.CompletedProcess:
    """`fusion-study` through the command's own `main`, in this process: for the commands below that refuse before any work, the same
    exit status and lines as the installed command, without starting an interpreter per case (`cwd`: the folder it runs in)."""
    import contextlib, io
    from fusion_study.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        if cwd is not None: stack.enter_context(contextlib.chdir(cwd))
        stack.enter_context(contextlib.redirect_stdout(out)); stack.enter_context(contextlib.redirect_stderr(err))
        try: rc = main([str(a) for a in args])
        except SystemExit as e: rc = e.code                                   # argparse's own refusals
    return subprocess.CompletedProcess(['fusion-study', *map(str, args)], rc, out.getvalue(), err.getvalue())

def one_sentence(r, *words):
    msg = r.stderr.strip()
    assert r.returncode == 2, r.stdout + r.stderr
    assert msg.startswith('fusion-study: error:') and len(msg.splitlines()) == 1 and 'Traceback' not in msg, msg
    for w in words: assert w in msg, (w, msg)

# ------------------------------------------------------------------------------------------------ params: one sentence, before any work
BAD_PARAMS = [   # (params file text, words of the one sentence)
    ("configs: [{name: a, epochs: -1}]\n", ["'epochs'", 'at least 1', '-1']),
    ("configs: [{name: a, epochs: 0}]\n", ["'epochs'", 'at least 1']),
    ("configs: [{name: a, batch_size: 0}]\n", ["'batch_size'"]),
    ("configs: [{name: a, batch_size: -32}]\n", ["'batch_size'"]),
    ("configs: [{name: a, dim: 0}]\n", ["'dim'"]),
    ("configs: [{name: a, scales: [2]}]\n", ['Scale 2', 'too small', 'at least 6']),
    ("configs: [{name: a, scales: [255]}]\n", ["'scales'", 'even']),
    ("configs: [{name: a, noise: [-0.1]}]\n", ["'noise'", '-0.1']),
    ("configs: [{name: a, noise: [.inf]}]\n", ["'noise'", 'finite', 'inf']),
    ("configs: [{name: a, noise: [.nan]}]\n", ["'noise'", 'finite']),
    ("configs: [{name: a, lr: -1e-3}]\n", ["'lr'", 'above 0']),
    ("configs: [{name: a, weight_decay: -1}]\n", ["'weight_decay'"]),
    ("configs: [{name: a, val_frac: 1.5}]\n", ["'val_frac'"]),
    ("configs: [{name: a, alignment: 1.5}]\n", ["'alignment'", 'between 0 and 1']),
    ("configs: [{name: a, n_images: 1}]\n", ["'n_images'"]),
    ("configs: [{name: a, seeds: [42, 42]}]\n", ["'seeds'", '42 twice']),
    ("configs: [{name: a, scales: [512, 512]}]\n", ["'scales'", 'twice']),
    ("configs: [{name: a, methods: [concat, concat]}]\n", ["'methods'", 'twice']),
    ("configs: [{name: a, noise: [0.1, 0.1]}]\n", ["'noise'", 'twice']),
    ("configs: [{name: a, seeds: []}]\n", ["'seeds'", 'empty']),
    ("configs: [{name: ../escaped}]\n", ["'name'", "'../escaped'", 'letters, digits']),
    ("configs: [{name: ''}]\n", ["'name'", "''"]),
    ("configs: [{name: sub/dir}]\n", ["'name'", "'sub/dir'"]),
    ("configs: [{name: report}]\n", ["'report'", 'reserved']),
    ("configs: [{name: a, inputs: [nosuch]}]\n", ["'nosuch'", 'inputs']),
    ("configs: [{name: a, inputs: [a]}]\n", ['itself']),
    ("configs: [{name: a, n_images: 50, scales: [1024]}]\n", ['Scale 1024', 'more than the data allows']),
    ("configs: [{name: a, methods: [concat, lstm]}]\n", ["'lstm'", 'concat']),
    ("configs: [{name: a, sclaes: [256]}]\n", ["'sclaes'", "did you mean 'scales'"]),
]

@pytest.mark.parametrize('text, words', BAD_PARAMS, ids=[t.split('{', 1)[1][:-3] for t, _ in BAD_PARAMS])
def test_params_mistake_is_one_sentence_and_touches_nothing(tmp_path, smoke_runs, text, words):
    runs, _ = smoke_runs
    before = digest(runs)
    one_sentence(cli_here('run', _params(tmp_path, text), '--runs-dir', runs), *words)
    assert digest(runs) == before
    assert not (tmp_path/'escaped').exists() and not (runs.parent/'escaped').exists()

def test_yaml_1_2_numbers_are_accepted(tmp_path):
    cfg, = load_params(_params(tmp_path, "configs: [{name: a, lr: 1e-3, weight_decay: 5e-2}]\n"))
    assert (cfg.lr, cfg.weight_decay) == (1e-3, 5e-2)

def test_runs_dir_that_is_a_file(tmp_path):
    (tmp_path/'runs').write_text('my notes')
    one_sentence(cli('run', ROOT/'params'/'smoke.yaml', '--runs-dir', tmp_path/'runs'), 'is a file')
    assert (tmp_path/'runs').read_text() == 'my notes'

def test_site_runs_dir_that_is_missing(tmp_path):
    one_sentence(cli('site', '--runs-dir', tmp_path/'nope', '--out', tmp_path/'site'), 'No runs folder')

# ------------------------------------------------------------------------------------------------ the site never deletes what is not its own
@pytest.mark.parametrize('target, words', [('thesis', 'did not make'), ('runs', 'runs folder'), ('.', 'runs folder'), ('notes.txt', 'is a file'), ('runs/site', 'runs folder')])
def test_site_refuses_a_folder_it_did_not_make(tmp_path, smoke_runs, target, words):
    runs, _ = smoke_runs
    work = tmp_path/'work'; shutil.copytree(runs, work/'runs')
    (work/'thesis').mkdir(); (work/'thesis'/'chapter1.tex').write_text('two years of work'); (work/'notes.txt').write_text('mine')
    before = digest(work)
    one_sentence(cli_here('site', '--runs-dir', 'runs', '--out', target, '--no-quarto', cwd=work), words)
    assert {k: v for k, v in digest(work).items() if not k.endswith('.lock')} == {k: v for k, v in before.items() if not k.endswith('.lock')}

def test_site_replaces_its_own_folder_and_a_failed_build_keeps_the_old_one(tmp_path, smoke_runs, monkeypatch):
    import fusion_study.site as S
    runs, _ = smoke_runs
    out = tmp_path/'site'
    index, problems = S.build_site(runs, out, use_quarto=False, log=lambda *a: None)
    assert index.exists() and not problems and (out/S.SITE_MARK).exists()
    S.build_site(runs, out, use_quarto=False, log=lambda *a: None)            # a site it made is replaced
    before = digest(out)
    def broken(*a, **kw): raise RuntimeError('disk full')
    monkeypatch.setattr(S, '_html', broken)
    with pytest.raises(RuntimeError): S.build_site(runs, out, use_quarto=False, log=lambda *a: None)
    assert digest(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ['site']     # old site intact, no temporary left
    monkeypatch.undo()
    (out/'MY_NOTES.txt').write_text('mine'); (out/'mydir').mkdir(); (out/'mydir'/'keep.txt').write_text('mine too')    # the user's files in the old site
    before = digest(out)
    with pytest.raises(Exception, match=r"MY_NOTES.txt, mydir/keep.txt in it were not written by `fusion-study site`"):
        S.build_site(runs, out, use_quarto=False, log=lambda *a: None)
    assert digest(out) == before                                                                # nothing of theirs deleted

def test_a_report_left_half_run_by_a_kill_is_rebuilt_not_published(tmp_path, smoke_runs):
    "Issue 25: a run killed once the report notebook had started leaves it half-executed (papermill's pending cells); `site` must not publish it as finished."
    import nbformat
    import fusion_study.site as S
    runs = tmp_path/'runs'; shutil.copytree(smoke_runs[0], runs)
    nb_path = runs/'report'/'report.ipynb'
    nb = nbformat.read(nb_path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == 'code']
    for c in code[2:]:                                                   # what papermill leaves when the kernel dies at the third cell
        c.outputs = []; c.metadata.setdefault('papermill', {})['status'] = 'pending'
    code[2].metadata['papermill']['status'] = 'running'
    nbformat.write(nb, nb_path)
    assert S.report_stale(runs) and 'did not run to the end' in S.notebook_unfinished(nb)
    (runs/'smoke_unaligned'/'study.ipynb').write_text('{"cells": [')             # a damaged notebook, and a deleted one: pages that say so, no traceback
    (runs/'analysis'/'analysis.ipynb').unlink()
    index, problems = S.build_site(runs, tmp_path/'site', use_quarto=False, log=lambda *a: None)
    rebuilt = nbformat.read(nb_path, as_version=4)
    assert S.notebook_unfinished(rebuilt) is None and not any(p.startswith('runs/report/') for p in problems), problems
    assert 'What we found' in (tmp_path/'site'/'runs'/'report'/'report.html').read_text()
    assert any('study.ipynb is damaged' in p for p in problems) and any('analysis.ipynb is missing' in p for p in problems), problems
    for page in ('smoke_unaligned/study.html', 'analysis/analysis.html'):
        assert 'This page is not a finished result' in (tmp_path/'site'/'runs'/page).read_text()

# ------------------------------------------------------------------------------------------------ a kill at every write boundary
TINY = """configs:
  - {name: tiny, n_images: 60, scales: [32, 64], seeds: [1, 2], epochs: 1, device: cpu}
  - {name: noisy, notebook: degradation, n_images: 60, scales: [64], seeds: [1, 2], epochs: 1, device: cpu, noise: [0.3, 0.5], inputs: [tiny]}
"""
TINY_ALONE = TINY.split('  - {name: noisy')[0]      # configuration tiny alone: for the tests that read nothing of noisy (its degradation notebook is not run again)

def run_cli(*args, cwd=ROOT, env=None, timeout=600):
    "`fusion-study` in its own process group (like a terminal job); whatever is left of the group is killed afterwards."
    p = subprocess.Popen(['fusion-study', *map(str, args)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})}, start_new_session=True)
    try: out, err = p.communicate(timeout=timeout)
    finally:
        try: os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError: pass
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)

def metrics(runs, name) -> pd.DataFrame:
    df = pd.read_csv(runs/name/'results.csv')
    return df[['method', 'scale', 'seed', 'noise', *METRICS]].sort_values(['method', 'scale', 'seed', 'noise']).reset_index(drop=True)

@pytest.fixture(scope='module')
def clean(tmp_path_factory):
    "The tiny params run once without interruption: the reference every interrupted run must end equal to."
    d = tmp_path_factory.mktemp('clean')
    params = _params(d, TINY, 'tiny.yaml')
    r = run_cli('run', params, '--runs-dir', d/'runs')
    assert r.returncode == 0, r.stdout + r.stderr
    return params, d/'runs', r

def test_a_degradation_without_sigma_0_reports_and_the_terminal_shows_only_our_lines(clean):
    params, runs, r = clean
    assert 'report: rebuilt' in r.stdout
    report = json.loads((runs/'report'/'report.ipynb').read_text())
    assert not [o for c in report['cells'] for o in c.get('outputs', []) if o.get('output_type') == 'error']
    for noise in ('without encryption', 'KeyboardInterrupt', 'IPKernelApp', 'Traceback'): assert noise not in r.stdout + r.stderr, noise
    assert all((runs/n/'complete.json').exists() for n in ('tiny', 'noisy'))

def site_here(*args) -> subprocess.CompletedProcess:
    "`fusion-study site` through the command's own `main`, in this process (its modules are imported once for all the kills below)."
    return cli_here('site', *args)

def _rows(runs) -> dict:
    "sha256 of each run record of configuration tiny."
    return {k: v for k, v in digest(runs/'tiny').items() if k.startswith('rows/')}

@pytest.fixture(scope='module')
def killed_in_turn(clean, tmp_path_factory):
    """One runs folder killed (like `kill -9`) at each write boundary in turn — `CRASH_POINTS`, in the order a run crosses them — each
    command resuming what the one before left; after every kill the site is built; then one command runs to the end, and one more is killed
    inside the report notebook before the last site is built. What each step left
    is kept per boundary for the tests below (one command per boundary instead of a fresh folder and two commands each)."""
    params, _, _ = clean
    d = tmp_path_factory.mktemp('killed'); runs, seen = d/'runs', {}
    for point in CRASH_POINTS:
        before = _rows(runs) if runs.exists() else {}
        killed = run_cli('run', params, '--runs-dir', runs, env={'FUSION_STUDY_CRASH_AT': point})
        site = site_here('--runs-dir', runs, '--out', d/f'site_{point}', '--no-quarto') if point != 'complete' else None
        page = d/f'site_{point}'/'runs'/'tiny'/'study.html'
        seen[point] = dict(killed=killed, site=site, page=page.read_text() if page.exists() else '', rows_before=before, rows=_rows(runs),
                           complete=(runs/'tiny'/'complete.json').exists(),
                           info=json.loads((runs/'tiny'/'run.json').read_text()) if (runs/'tiny'/'run.json').exists() else None)
    again = run_cli('run', params, '--runs-dir', runs)
    from fusion_study.site import notebook_unfinished, read_notebook
    killed = run_cli('run', params, '--runs-dir', runs, env={'FUSION_STUDY_CRASH_AT': 'report'})       # every configuration complete: killed in the report
    nb = read_notebook(runs/'report'/'report.ipynb')                                              # half run, or cut in the middle of papermill's save
    site = site_here('--runs-dir', runs, '--out', d/'site', '--no-quarto')                        # the last site: built on what that kill left
    page = d/'site'/'runs'/'report'/'report.html'
    seen['report'] = dict(killed=killed, left='its notebook is damaged' if nb is None else notebook_unfinished(nb), site=site,
                          home=page.read_text() if page.exists() else '')
    return runs, seen, again, site

def test_a_kill_inside_the_report_notebook_is_never_published_as_the_report(killed_in_turn):
    "A live kill once the report notebook has started (a cell run, the rest pending), after the runs are complete: `site` rebuilds the report instead of publishing the half."
    s = killed_in_turn[1]['report']
    assert s['killed'].returncode == -signal.SIGKILL and 'tiny: complete, skipped' in s['killed'].stdout, s['killed'].stdout + s['killed'].stderr
    assert s['left'] and ('did not run to the end' in s['left'] or 'damaged' in s['left']), s['left']       # what the kill left
    assert s['site'].returncode == 0, s['site'].stderr                                          # rebuilt, not published half run
    assert 'What we found' in s['home'] and 'fusion-failed' not in s['home']

@pytest.mark.parametrize('point', CRASH_POINTS)
def test_a_kill_at_any_write_boundary_resumes_to_the_clean_result(killed_in_turn, clean, point):
    runs, seen, again, site = killed_in_turn
    s = seen[point]
    assert s['killed'].returncode == -signal.SIGKILL, (point, s['killed'].stdout, s['killed'].stderr)
    if point != 'complete':
        assert not s['complete']
        assert s['site'].returncode == 1 and 'show no finished result' in s['site'].stderr and 'tiny' in s['site'].stderr, s['site'].stderr
        assert 'class="fusion-failed"' in s['page'] and 'not complete' in s['page']          # a half notebook is never shown as a result
    else: assert s['complete']                                                               # completion was written: the next command skips it
    kept = {k: v for k, v in s['rows'].items() if k in s['rows_before']}
    assert kept == s['rows_before']                                                          # every run finished before the kill is kept …
    if point == 'row': assert 0 < len(s['rows']) < len(config_grid(clean))                   # … the first kill left some of them …
    else: assert len(s['rows_before']) == len(config_grid(clean)) or point == 'results'      # … and no later command trained one again
    if point == 'run.json': assert s['info']['trained_runs'] == 0 and s['info']['resumed_runs'] == s['info']['runs']
    assert again.returncode == 0 and 'tiny: complete, skipped' in again.stdout, again.stdout + again.stderr
    for name in ('tiny', 'noisy'): pd.testing.assert_frame_equal(metrics(runs, name), metrics(clean[1], name))
    assert site.returncode == 0, site.stderr

def config_grid(clean) -> list:
    "The run keys of configuration tiny of the clean runs."
    return pd.read_csv(clean[1]/'tiny'/'results.csv')[['method', 'scale', 'seed']].values.tolist()

# ------------------------------------------------------------------------------------------------ damaged results are run again, not reused
@pytest.mark.parametrize('damage, why', [
    (lambda d: (d/'results.csv').write_text((d/'results.csv').read_text()[:300]), 'results.csv changed after the run finished'),
    (lambda d: (d/'results.csv').write_text(pd.read_csv(d/'results.csv').drop(columns='f1').to_csv(index=False)), 'results.csv changed'),
    (lambda d: (d/'study.ipynb').unlink(), 'study.ipynb is missing'),
    (lambda d: (d/'run.json').write_text('{'), 'run.json changed'),
])
def test_damaged_results_are_run_again(tmp_path, clean, damage, why):
    params, clean_runs, _ = clean
    runs = tmp_path/'runs'; shutil.copytree(clean_runs, runs)
    damage(runs/'tiny')
    r = run_cli('run', params, '--runs-dir', runs)
    assert r.returncode == 0 and f'tiny: {why}' in r.stdout and 'noisy: its input' in r.stdout, r.stdout + r.stderr
    pd.testing.assert_frame_equal(metrics(runs, 'tiny'), metrics(clean_runs, 'tiny'))
    assert json.loads((runs/'tiny'/'run.json').read_text())['trained_runs'] == 0 and (runs/'tiny'/'study.ipynb').exists()
    written = pd.read_csv(runs/'tiny'/'results.csv', dtype=str)
    assert not written[['scale', 'seed', 'n_train', 'n_val', 'n_params']].apply(lambda c: c.str.contains('.', regex=False)).any().any()   # 64, not 64.0

def test_a_damaged_run_record_is_dropped_with_a_warning_and_trained_again(tmp_path, clean):
    params, clean_runs, _ = clean
    runs = tmp_path/'runs'; shutil.copytree(clean_runs, runs)
    rec = sorted((runs/'tiny'/'rows').rglob('*.json'))[0]; rec.write_text(rec.read_text()[:25])
    for f in ('results.csv', 'complete.json'): (runs/'tiny'/f).unlink()
    r = run_cli('run', _params(tmp_path, TINY_ALONE, 'alone.yaml'), '--runs-dir', runs)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'damaged' in json.dumps(json.loads((runs/'tiny'/'study.ipynb').read_text()))         # the warning, in the notebook
    assert json.loads((runs/'tiny'/'run.json').read_text())['trained_runs'] == 1
    pd.testing.assert_frame_equal(metrics(runs, 'tiny'), metrics(clean_runs, 'tiny'))

def test_adding_a_seed_trains_only_the_new_runs(tmp_path, clean):
    params, clean_runs, _ = clean
    runs = tmp_path/'runs'; shutil.copytree(clean_runs, runs)
    more = _params(tmp_path, TINY_ALONE.replace('seeds: [1, 2], epochs: 1, device: cpu}\n', 'seeds: [1, 2, 3], epochs: 1, device: cpu}\n'), 'more.yaml')
    assert 'seeds: [1, 2, 3]' in more.read_text()
    r = run_cli('run', more, '--runs-dir', runs)
    assert r.returncode == 0, r.stdout + r.stderr
    info = json.loads((runs/'tiny'/'run.json').read_text())
    assert (info['trained_runs'], info['resumed_runs'], info['runs']) == (4, 8, 12)          # 2 methods × 2 scales × 1 new seed
    assert pd.read_csv(runs/'tiny'/'results.csv').seed.value_counts().to_dict() == {1: 4, 2: 4, 3: 4}

# ------------------------------------------------------------------------------------------------ one command per runs folder; Ctrl-C
def test_a_second_command_on_a_busy_runs_folder_refuses(tmp_path, clean):
    params, clean_runs, _ = clean
    runs = tmp_path/'runs'; shutil.copytree(clean_runs, runs)
    before = digest(runs)
    with folder_lock(runs, 'run'):
        one_sentence(cli('run', params, '--runs-dir', runs), 'is in use by `fusion-study run` (pid', 'wait for it')
        one_sentence(cli('site', '--runs-dir', runs, '--out', tmp_path/'site'), 'is in use')
    assert {k: v for k, v in digest(runs).items() if k != '.lock'} == {k: v for k, v in before.items() if k != '.lock'}

def test_ctrl_c_says_what_is_kept(tmp_path):
    params = _params(tmp_path, TINY_ALONE, 'alone.yaml')
    runs = tmp_path/'runs'
    p = subprocess.Popen(['fusion-study', 'run', str(params), '--runs-dir', str(runs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1'}, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # a shell's background job inherits SIGINT ignored; a terminal's does not
    try:
        deadline = time.time() + 300
        while not list(runs.glob('tiny/rows/*/*.json')) and time.time() < deadline and p.poll() is None: time.sleep(0.2)
        os.killpg(p.pid, signal.SIGINT)                                             # what Ctrl-C in a terminal does
        out, err = p.communicate(timeout=120)
    finally:
        try: os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError: pass
    assert p.returncode == 130, out + err
    assert 'interrupted; finished runs are kept; run the same command again to resume' in err and 'Traceback' not in err, err
    again = run_cli('run', params, '--runs-dir', runs)
    assert again.returncode == 0, again.stdout + again.stderr
    info = json.loads((runs/'tiny'/'run.json').read_text())
    assert info['resumed_runs'] >= 1 and info['trained_runs'] + info['resumed_runs'] == info['runs'], info    # what it kept was resumed


# ------------------------------------------------------------------------------------------------ params files that attack or confuse the reader (issue 25)
def _alias_bomb(levels:int) -> str:
    "A params file of a few hundred bytes whose aliases, nested `levels` deep, expand to 9**levels values."
    names = [chr(97 + i) for i in range(levels + 1)]
    lines = [f"{names[0]}: &{names[0]} [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{n}: &{n} [{', '.join(['*' + p] * 9)}]" for p, n in zip(names, names[1:])]
    return '\n'.join(lines) + f"\ndefaults: {{methods: *{names[-1]}}}\nconfigs: [{{name: a}}]\n"

@pytest.mark.parametrize('text, words', [
    (_alias_bomb(9), ['aliases', 'expand to more than 100,000 values']),                  # 678 bytes → 387 million values
    ("defaults: &a {x: *a}\nconfigs: [{name: a}]\n", ['aliases']),                          # an alias inside its own anchor
    ("configs: " + '[' * 20_000 + ']' * 20_000 + "\n", ['nests lists or mappings too deeply']),
    ("defaults: {lr: 0.1, epochs: 2, lr: 0.2}\nconfigs: [{name: a}]\n", ["key 'lr' is given twice", 'line 1']),
    ("configs: [{name: " + 'a' * 300 + "}]\n", ["'name'", 'at most 100']),
    ("defaults: {methods: " + repr(list(range(5000))) + "}\nconfigs: [{name: a}]\n", ["'methods'", 'a list of str']),
], ids=['alias-bomb', 'self-alias', 'deep', 'duplicate-key', 'long-name', 'huge-value'])
def test_a_params_file_that_would_explode_is_refused_in_one_short_sentence(tmp_path, text, words):
    import tracemalloc
    p = _params(tmp_path, text)
    start = time.perf_counter()
    with pytest.raises(Exception) as e: load_params(p)
    seconds, msg = time.perf_counter() - start, str(e.value)
    assert type(e.value).__name__ == 'FusionStudyError' and all(w in msg for w in words), msg
    assert len(msg) < 400 and '\n' not in msg and seconds < 3, (len(msg), seconds)
    if 'aliases' in words:                                                  # refused before anything expands
        tracemalloc.start()
        with pytest.raises(Exception): load_params(p)
        _, peak = tracemalloc.get_traced_memory(); tracemalloc.stop()
        assert peak < 50e6, peak

def test_an_alias_bomb_stops_the_command_before_any_work(tmp_path):
    r = cli('run', _params(tmp_path, _alias_bomb(9)), '--runs-dir', tmp_path/'runs')
    one_sentence(r, 'expand to more than')
    assert not (tmp_path/'runs').exists()


@pytest.mark.parametrize('engine, recipe', [('loop', dict(lr=1e9)), ('batched', dict(lr=1e300)), ('batched', dict(weight_decay=1e9))])
def test_a_diverged_run_is_marked_and_left_out_of_every_table(tmp_path, engine, recipe):
    "Issue 25: a learning rate or weight decay that sends the parameters to NaN is not a 50% result: marked in results.csv, counted, and in no mean."
    from fusion_study.core import RunConfig
    from fusion_study.study import run_study
    ok = RunConfig(name='ok', n_images=60, scales=[64], seeds=[1, 2], epochs=1, device='cpu', methods=['concat', 'cross'], engine=engine)
    bad = RunConfig.from_dict({**ok.to_dict(), 'name': 'bad', **recipe})
    good, s = run_study(ok, tmp_path/'ok'), run_study(bad, tmp_path/'bad')
    res = pd.read_csv(tmp_path/'bad'/'results.csv')
    assert len(res) == 4 and res.diverged.all() and not pd.read_csv(tmp_path/'ok'/'results.csv').diverged.any()
    assert len(s['diverged']) == 4 and len(s['results']) == 0 and len(good['results']) == 4
    assert len(pd.read_csv(tmp_path/'bad'/'table1.csv')) == 0 and len(s['tests']) == 0                # no mean of a diverged run
    assert json.loads((tmp_path/'bad'/'run.json').read_text())['diverged_runs'] == 4
