"""Issue 39: locks, signals, words. One command per folder from its first moment (`advise --out`, a fresh runs folder); a report is finished
only when its last cell ran, whatever stopped it (Ctrl-C included); `cancel` stops a local run; a diverged configuration says so and what to
lower; refusals that need no torch are made without it, and a huge params file is refused before it is parsed."""
import json, os, shutil, signal, subprocess, sys, time
import pytest
from conftest import ROOT, cli
from test_bad_inputs import _params, cli_here, one_sentence, run_cli, TINY_ALONE
from fusion_study.core import FusionStudyError, folder_lock

def _started(args, **kw) -> subprocess.Popen:
    "`fusion-study` started like a terminal's command: its own process group, Ctrl-C's SIGINT not ignored."
    return subprocess.Popen(['fusion-study', *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, 'PYTHONUNBUFFERED': '1'}, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)

def _poll(found, p, seconds=300):
    "Wait until `found()` or process `p` ended (no fixed sleep)."
    deadline = time.time() + seconds
    while not found() and time.time() < deadline and p.poll() is None: time.sleep(0.1)
    return found()

def _end(p):
    try: os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError: pass

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "Configuration tiny run once to the end: its params file and runs folder."
    d = tmp_path_factory.mktemp('tiny')
    params = _params(d, TINY_ALONE, 'tiny.yaml')
    r = run_cli('run', params, '--runs-dir', d/'runs')
    assert r.returncode == 0, r.stdout + r.stderr
    return params, d/'runs'

# ------------------------------------------------------------------------------------------------ 1. advise holds its --out for the whole command
def test_a_second_advise_on_a_busy_out_is_refused_at_once(tmp_path):
    out = tmp_path/'advice'; out.mkdir()
    with folder_lock(out, 'advise'):                        # the first `advise`, still training
        r = subprocess.run(['fusion-study', 'advise', 'synthetic:aligned', '--out', str(out)], capture_output=True, text=True, timeout=120)
    one_sentence(r, f'--out {out} is in use by `fusion-study advise` (pid {os.getpid()}', 'give another --out')
    assert sorted(p.name for p in out.iterdir()) == ['.lock']                   # nothing of the second written

# ------------------------------------------------------------------------------------------------ 2. Ctrl-C in the report: never a finished report
def test_ctrl_c_in_the_report_leaves_no_finished_report(tmp_path, tiny):
    from fusion_study.execute import read_notebook
    params, done = tiny
    runs = tmp_path/'runs'; shutil.copytree(done, runs); shutil.rmtree(runs/'report')
    nb = runs/'report'/'report.ipynb'
    p = _started(['run', params, '--runs-dir', runs])
    try:
        assert _poll(nb.exists, p), 'the report notebook never started'
        os.killpg(p.pid, signal.SIGINT)                                            # Ctrl-C in a terminal, while the report runs
        out, err = p.communicate(timeout=120)
    finally: _end(p)
    assert p.returncode == 130 and 'tiny: complete, skipped' in out, out + err
    outputs = lambda: sum(len(c.get('outputs', [])) for c in read_notebook(nb).cells if c.cell_type == 'code')
    from fusion_study.site import report_stale
    assert report_stale(runs)                                                      # whatever the cells say, it did not finish
    site = cli_here('site', '--runs-dir', runs, '--out', tmp_path/'site', '--no-quarto')
    assert site.returncode == 0, site.stderr                                       # rebuilt, not published empty
    assert outputs() > 0 and not report_stale(runs)
    home = (tmp_path/'site'/'runs'/'report'/'report.html').read_text()
    assert 'What we found' in home and 'fusion-failed' not in home

# ------------------------------------------------------------------------------------------------ 3. a fresh runs folder is locked before the preflight
def test_a_fresh_runs_folder_is_locked_before_the_preflight(tmp_path, monkeypatch):
    import fusion_study.study as S
    from fusion_study.local import run_params
    params, runs, seen = _params(tmp_path, TINY_ALONE, 'tiny.yaml'), tmp_path/'runs', {}
    def preflight(cfg):                                     # the first command, in its preflight's seconds: a second one starts
        seen['second'] = cli('run', params, '--runs-dir', runs)
        raise FusionStudyError('stopped by the test')
    monkeypatch.setattr(S, 'preflight', preflight)
    with pytest.raises(FusionStudyError, match='stopped by the test'): run_params(params, runs, log=lambda *a: None)
    one_sentence(seen['second'], 'is in use by `fusion-study run` (pid', str(os.getpid()), 'wait for it')
    assert not runs.exists()                                # refused in its preflight: the folder it made is gone again

# ------------------------------------------------------------------------------------------------ 4. a diverged configuration, in words
def test_a_diverged_configuration_says_so_and_what_to_lower(tmp_path):
    p = _params(tmp_path, "configs: [{name: a, n_images: 60, scales: [32], seeds: [1], epochs: 1, device: cpu, methods: [concat], lr: 1e9}]\n")
    r = run_cli('run', p, '--runs-dir', tmp_path/'runs')
    msg = r.stderr.strip()
    assert r.returncode == 2 and len(msg.splitlines()) == 1 and 'Traceback' not in msg, r.stdout + r.stderr
    for w in ("Configuration 'a' diverged", 'NaN or ∞', 'lower lr (1e+09) or weight_decay'): assert w in msg, (w, msg)
    assert 'AssertionError' not in r.stdout + r.stderr

# ------------------------------------------------------------------------------------------------ 5. cancel stops a local run
def test_cancel_stops_a_local_run_and_keeps_its_finished_runs(tmp_path):
    params = _params(tmp_path, "configs: [{name: long, n_images: 400, scales: [256, 512, 1024], seeds: [1, 2, 3], epochs: 10, device: cpu, engine: loop}]\n")
    runs = tmp_path/'runs'
    p = _started(['run', params, '--runs-dir', runs])
    try:
        assert _poll(lambda: list(runs.glob('long/rows/*/*.json')), p), 'no run finished'
        status = cli('status', '--runs-dir', runs)
        assert f'pid {p.pid}' in status.stdout and 'running' in status.stdout, status.stdout
        r = cli('cancel', '--runs-dir', runs)
        out, err = p.communicate(timeout=120)
    finally: _end(p)
    assert r.returncode == 0 and f'pid {p.pid}) stopped' in r.stdout and '1 cancelled' in r.stdout, r.stdout + r.stderr
    assert p.returncode == 130 and 'finished runs are kept' in err, out + err
    kept = list(runs.glob('long/rows/*/*.json'))
    assert kept and not (runs/'long'/'complete.json').exists()
    assert 'running' not in cli('status', '--runs-dir', runs).stdout

# ------------------------------------------------------------------------------------------------ 6. refusals without torch
NO_TORCH = """import sys
from fusion_study.cli import main
rc = main(sys.argv[1:])
assert rc == 2, rc
assert 'torch' not in sys.modules, 'torch was imported before the refusal'
"""

@pytest.mark.parametrize('text, words', [
    ("configs: [{name: a, n_images: 50, scales: [1024]}]\n", ['Scale 1024', 'more than the data allows']),
    ("description: " + 'x' * 10_000_000 + "\nconfigs: [{name: a, sclaes: [256]}]\n", ['10,000 KB', "more than a params file's"]),
], ids=['scale-beyond-data', '10MB-file'])
def test_refused_without_importing_torch(tmp_path, text, words):
    p = _params(tmp_path, text)
    r = subprocess.run([sys.executable, '-c', NO_TORCH, 'run', str(p), '--runs-dir', str(tmp_path/'runs')], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr                    # the assertions of NO_TORCH held
    for w in words: assert w in r.stderr, (w, r.stderr)
    assert not (tmp_path/'runs').exists()
