"""Beyond one machine: a params file's configurations as jobs submitted with submitit — through submitit's local executor
(`--executor subprocess`: real subprocesses, the same submission path) and through a real single-node Slurm started here when the
sandbox allows it — their states (`fusion-study status`), a failing configuration and the one that reads it, a killed job resumed."""
import json, os, shutil, signal, socket, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest
import yaml
from conftest import ROOT, digest
from fusion_study.cluster import filesystem_of, LOCAL_FILESYSTEMS
from fusion_study.jobs import _signal_tree

SMOKE = yaml.safe_load((ROOT/'params'/'smoke.yaml').read_text())
BROKEN = {'name': 'broken', 'scales': [64], 'seeds': [1, 2]}             # fails in its notebook, after its first run (`BREAK`), as a bug would
TWELVE = {'name': 'twelve', 'dim': 12, 'methods': ['concat', 'cross', 'cross_tokens'], 'scales': [64], 'seeds': [1]}   # 12-d features in 8 tokens: refused by the preflight
AFTER = {'name': 'after_broken', 'scales': [64], 'seeds': [1, 2], 'inputs': ['broken']}
def BREAK(runs) -> dict:
    "The environment that makes configuration `broken` of `runs` fail inside its notebook (a RuntimeError after its first run): `core.crash_point`."
    return {'FUSION_STUDY_CRASH_AT': 'row', 'FUSION_STUDY_CRASH_MODE': 'raise', 'FUSION_STUDY_CRASH_DIR': str(Path(runs).resolve()/'broken')}
VICTIM = {'name': 'victim', 'n_images': 400, 'scales': [512], 'seeds': [1, 2, 3], 'methods': ['concat'], 'engine': 'loop'}   # killed after its first run (loop: one at a time)
JOBS = [c for c in SMOKE['configs'] if c['name'] in ('smoke_aligned', 'degradation')]    # a study and the degradation that reads it, as smoke.yaml has them
assert [c['name'] for c in JOBS] == ['smoke_aligned', 'degradation'] and JOBS[1]['inputs'] == ['smoke_aligned']

def fs(*args, env=None, timeout=900):
    "The installed `fusion-study` command in its own process group; whatever is left of the group is killed afterwards."
    p = subprocess.Popen(['fusion-study', *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})}, start_new_session=True)
    try: out, err = p.communicate(timeout=timeout)
    finally:
        try: os.killpg(p.pid, 9)
        except ProcessLookupError: pass
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)

def write(path, configs, defaults=SMOKE['defaults'], **top):
    path.write_text(yaml.safe_dump({**top, 'defaults': defaults, 'configs': configs})); return path

def states(r) -> dict:
    "`fusion-study status` output → {name: (state, job, detail)}."
    lines = r.stdout.strip().splitlines()
    head = max(i for i, l in enumerate(lines) if l.startswith('configuration  '))                 # after --wait's lines of changes
    rows = [l.split(None, 3) for l in lines[head + 1:-1]]
    return {row[0]: (row[1], row[2], row[3] if len(row) > 3 else '') for row in rows}

def fixed_configs(path): return yaml.safe_load(path.read_text())['configs']

def one_sentence(r, *words):
    msg = r.stderr.strip()
    assert r.returncode == 2 and msg.startswith('fusion-study: error:') and len(msg.splitlines()) == 1 and 'Traceback' not in msg, r.stdout + r.stderr
    for w in words: assert w in msg, (w, msg)

# ------------------------------------------------------------------------------------------------ mistakes: one sentence, at once, no torch
EXECUTOR_MISTAKES = [
    (['--executor', 'slurm', '--slurm-partion', 'gpu'], None, ['unrecognized arguments: --slurm-partion']),
    (['--gpus-per-job', '1'], None, ['--gpus-per-job applies only to --executor subprocess or slurm']),
    (['--executor', 'subprocess', '--slurm-partition', 'gpu'], None, ['--slurm-partition applies only to --executor slurm']),
    (['--executor', 'subprocess', '--max-parallel', '0'], None, ['--max-parallel must be at least 1']),
    ([], {'kind': 'slurm', 'gpus_per_jbo': 1}, ["'gpus_per_jbo'", "did you mean 'gpus_per_job'", "'executor' section"]),
    ([], {'kind': 'sge'}, ["'kind'", 'one of local, subprocess, slurm']),
    ([], {'slurm_partition': 'gpu'}, ["'slurm_partition'", 'only to kind: slurm']),
    ([], {'kind': 'slurm', 'timeout_min': 0}, ["'timeout_min'", 'at least 3 minutes']),
    (['--executor', 'slurm', '--timeout-min', '2'], None, ['--timeout-min must be at least 3 minutes', 'warned 90 s before']),
    (['--executor', 'subprocess', '--mem', '16G'], None, ['--mem applies only to --executor slurm']),
    ([], {'kind': 'slurm', 'mem': 'lots'}, ["'mem'", 'a size such as 16G']),
]

MISTAKES_SCRIPT = """
import contextlib, io, json, sys, time
t = time.time(); from fusion_study.cli import main; imported = time.time() - t      # the command's import, counted in every case's seconds
out = []
for argv in json.loads(open(sys.argv[1]).read()):
    err, t = io.StringIO(), time.time()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try: rc = main(argv)
        except SystemExit as e: rc = e.code
    out.append(dict(rc=rc, stderr=err.getvalue(), seconds=imported + time.time() - t, torch='torch' in sys.modules))
open(sys.argv[2], 'w').write(json.dumps(out))
"""

@pytest.fixture(scope='module')
def executor_mistakes(tmp_path_factory) -> dict:
    """Every case of `EXECUTOR_MISTAKES` through the command's `main`, one after another in one fresh interpreter (torch not imported before):
    {case index: (the result as a CompletedProcess, its runs folder, its seconds with the command's import, whether torch was imported by then)}."""
    d = tmp_path_factory.mktemp('mistakes')
    argvs = []
    for i, (args, section, _) in enumerate(EXECUTOR_MISTAKES):
        params = write(d/f'p{i}.yaml', SMOKE['configs'], **({'executor': section} if section else {}))
        argvs.append(['run', str(params), '--runs-dir', str(d/f'runs{i}'), *args])
    (d/'argv.json').write_text(json.dumps(argvs))
    r = subprocess.run([sys.executable, '-c', MISTAKES_SCRIPT, str(d/'argv.json'), str(d/'out.json')], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    return {i: (subprocess.CompletedProcess(argv, o['rc'], '', o['stderr']), d/f'runs{i}', o['seconds'], o['torch'])
            for i, (argv, o) in enumerate(zip(argvs, json.loads((d/'out.json').read_text())))}

@pytest.mark.parametrize('i', range(len(EXECUTOR_MISTAKES)), ids=[' '.join(a) or json.dumps(s) for a, s, _ in EXECUTOR_MISTAKES])
def test_executor_mistakes_are_one_sentence_before_anything_starts(executor_mistakes, i):
    r, runs, seconds, torch_imported = executor_mistakes[i]
    words = EXECUTOR_MISTAKES[i][2]
    assert not torch_imported, 'torch was imported'
    if 'unrecognized' in words[0]: assert r.returncode == 2 and words[0] in r.stderr, r.stderr; return       # argparse's own line
    one_sentence(r, *words)
    assert seconds < 5 and not runs.exists()

def test_slurm_without_slurm_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', str(Path(sys.executable).parent))          # python and fusion-study, no sbatch
    one_sentence(fs('run', ROOT/'params'/'smoke.yaml', '--runs-dir', tmp_path/'runs', '--executor', 'slurm'), 'needs Slurm', 'sbatch', '--executor subprocess')
    assert not (tmp_path/'runs').exists()

# ------------------------------------------------------------------------------------------------ the smoke params through submitit's local executor
def _kill_job(pid:int):
    "SIGKILL a local job — its controller, the task and the task's kernel — as a pre-emption or `scancel` of a job would."
    _signal_tree(pid, signal.SIGKILL)

@pytest.fixture(scope='module')
def local_jobs(tmp_path_factory):
    """A study of params/smoke.yaml and the degradation that reads it (`JOBS`: the shared-kernel run `smoke_runs` has them too), plus a
    configuration that fails in its notebook, one that reads it, and one whose job this fixture kills (SIGKILL: a pre-emption, an out-of-memory
    kill, `scancel`) after its first finished run — each configuration a submitit local job, two at once (the first stage, of three, in two goes)."""
    d = tmp_path_factory.mktemp('local_jobs')
    params, runs = write(d/'bad.yaml', [JOBS[0], VICTIM, BROKEN, JOBS[1], AFTER], executor={'kind': 'subprocess', 'max_parallel': 2}), d/'runs'
    start, killed = time.time(), None
    with open(d/'out.txt', 'w') as out, open(d/'err.txt', 'w') as err:
        p = subprocess.Popen(['fusion-study', 'run', str(params), '--runs-dir', str(runs), '--poll', '1'], cwd=ROOT, stdout=out, stderr=err,
                             env={**os.environ, 'PYTHONUNBUFFERED': '1', **BREAK(runs)}, start_new_session=True)
        try:
            while p.poll() is None and time.time() - start < 900:
                if killed is None and list((runs/'victim'/'rows').rglob('*.json')):
                    killed = json.loads((runs/'.jobs'/'victim.json').read_text())['job_id']; _kill_job(int(killed))
                time.sleep(0.05)
        finally:
            try: os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError: pass
    r = subprocess.CompletedProcess(p.args, p.wait(), (d/'out.txt').read_text(), (d/'err.txt').read_text())
    assert killed, r.stdout + r.stderr
    return d, params, runs, r, time.time() - start

def test_smoke_configurations_run_end_to_end_as_local_jobs(local_jobs):
    d, params, runs, r, seconds = local_jobs
    one_sentence(r, f"3 of {len(JOBS) + 3} configurations failed", 'broken (RuntimeError: injected failure at row',
                 "after_broken (not run: its input 'broken' failed)", 'victim (its job ended without a result')
    print(f'{len(JOBS)} of smoke + 3 as local jobs: {seconds:.0f}s')
    records = {p.stem: json.loads(p.read_text()) for p in (runs/'.jobs').glob('*.json')}
    for c in JOBS:
        name, rec = c['name'], records[c['name']]
        assert (runs/name/'complete.json').exists() and f"{name}: started as local job {rec['job_id']}" in r.stdout
        job_dir = Path(rec['folder'].replace('%j', rec['job_id']))
        assert (job_dir/f"{rec['job_id']}_0_result.pkl").exists()                                # it ran in its own submitit job …
        assert f'{name}: done in' in (job_dir/f"{rec['job_id']}_0_log.out").read_text()        # … through the runner's unit
        info = json.loads((runs/name/'run.json').read_text())
        assert info['config']['name'] == name and all(len(pd.read_csv(runs/name/f)) for f in info['files'])
    stage = {n: r.stdout.index(f'{n}: started') for n in ('smoke_aligned', 'victim', 'broken', 'degradation')}
    assert stage['degradation'] > r.stdout.index('smoke_aligned: done')                           # inputs first
    assert stage['broken'] > max(r.stdout.index('smoke_aligned: done'), r.stdout.index('victim: FAILED'))   # max_parallel 2: the third once the first two ended
    assert pd.read_csv(runs/'degradation'/'results.csv').query('noise == 0').config.eq('smoke_aligned').all()   # σ = 0 reused from its input
    assert records['after_broken']['job_id'] is None and not (runs/'after_broken').exists()
    assert list((runs/'victim'/'rows').rglob('*.json')) and not (runs/'victim'/'complete.json').exists()   # its finished runs are kept
    report = json.loads((runs/'report'/'report.ipynb').read_text())                               # rebuilt once, at the end, from everything
    assert 'report: rebuilt' in r.stdout and r.stdout.index('report: rebuilt') > max(r.stdout.index(f'{n}: done') for n in ('smoke_aligned', 'degradation'))
    assert not [o for c in report['cells'] for o in c.get('outputs', []) if o.get('output_type') == 'error']
    assert all(n in json.dumps(report) for n in ('smoke_aligned', 'degradation', 'broken', 'victim'))

def test_status_reads_each_configuration_from_the_runs_folder(local_jobs):
    d, params, runs, _, _ = local_jobs
    r = fs('status', '--runs-dir', runs)
    assert r.returncode == 1, r.stdout + r.stderr                          # a configuration failed
    s = states(r)
    assert {n: s[n][0] for n in s} == {**{c['name']: 'complete' for c in JOBS}, 'broken': 'failed', 'after_broken': 'failed', 'victim': 'failed'}
    assert s['broken'][2].startswith('RuntimeError: injected failure at row')      # its first error line
    assert s['after_broken'][2] == "not run: its input 'broken' failed" and s['broken'][1].isdigit()
    assert s['victim'][2].startswith('its job ended without a result')
    assert r.stdout.strip().splitlines()[-1] == f"{len(JOBS)} complete, 3 failed"

def test_a_rerun_runs_only_what_is_not_complete_and_the_killed_job_resumes(local_jobs):
    d, params, runs, _, _ = local_jobs
    before = {k: v for k, v in digest(runs).items() if k.startswith(tuple(c['name'] + '/' for c in JOBS)) and not k.endswith('.lock')}
    fixed = write(d/'fixed.yaml', [*JOBS, BROKEN, VICTIM], executor={'kind': 'subprocess', 'max_parallel': 2})
    again = fs('run', fixed, '--runs-dir', runs, '--poll', 1)
    assert again.returncode == 0, again.stdout + again.stderr
    for c in JOBS: assert f"{c['name']}: complete, skipped" in again.stdout and f"{c['name']}: started" not in again.stdout
    assert 'broken: started' in again.stdout and 'victim: started' in again.stdout
    info = json.loads((runs/'victim'/'run.json').read_text())
    assert info['resumed_runs'] >= 1 and info['trained_runs'] + info['resumed_runs'] == info['runs']     # resumed from its finished runs
    assert (runs/'broken'/'complete.json').exists() and (runs/'victim'/'complete.json').exists()
    assert {k: v for k, v in digest(runs).items() if k in before} == before                       # nothing finished was touched
    s = fs('status', '--runs-dir', runs)
    assert s.returncode == 1 and {n: x[0] for n, x in states(s).items()} == {**{c['name']: 'complete' for c in fixed_configs(fixed)}, 'after_broken': 'failed'}, s.stdout

# ------------------------------------------------------------------------------------------------ a real single-node Slurm, when the sandbox can start one
def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _why_not(log:Path, what:str) -> str:
    lines = [l.strip() for l in (log.read_text(errors='replace').splitlines() if log.exists() else []) if l.strip()]
    errors = [l for l in lines if 'error' in l.lower() or 'fatal' in l.lower()]
    return f"{what}: {(errors or lines or ['no log'])[-1]}"

@pytest.fixture(scope='module')
def slurm(tmp_path_factory):
    "munged, slurmctld and slurmd started here (one node: this machine); skipped with the daemon's own reason when they cannot start."
    missing = [b for b in ('munged', 'slurmctld', 'slurmd', 'sbatch', 'srun', 'squeue', 'sinfo') if not shutil.which(b)]
    if missing: pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing; Debian: apt-get install slurm-wlm munge)")
    if os.geteuid() != 0: pytest.skip('slurmd must run as root to start jobs, and this test is not root')
    d, host = tmp_path_factory.mktemp('slurm'), socket.gethostname()
    for sub in ('state', 'spool'): (d/sub).mkdir()
    (d/'munge.key').write_bytes(os.urandom(1024)); (d/'munge.key').chmod(0o600)
    conf = d/'slurm.conf'
    conf.write_text('\n'.join([
        'ClusterName=fusiontest', f'SlurmctldHost={host}(127.0.0.1)', 'SlurmUser=root', 'SlurmdUser=root',
        f'SlurmctldPort={_free_port()}', f'SlurmdPort={_free_port()}', 'AuthType=auth/munge', f'AuthInfo=socket={d}/munge.sock', 'CredType=cred/munge',
        f'StateSaveLocation={d}/state', f'SlurmdSpoolDir={d}/spool', f'SlurmctldPidFile={d}/slurmctld.pid', f'SlurmdPidFile={d}/slurmd.pid',
        f'SlurmctldLogFile={d}/slurmctld.log', f'SlurmdLogFile={d}/slurmd.log', 'ProctrackType=proctrack/linuxproc', 'TaskPlugin=task/none',
        'JobAcctGatherType=jobacct_gather/none', 'AccountingStorageType=accounting_storage/none', 'JobCompType=jobcomp/none',
        'SchedulerType=sched/builtin', 'SelectType=select/cons_tres', 'SelectTypeParameters=CR_Core', 'ReturnToService=2', 'MpiDefault=none',
        'SwitchType=switch/none', 'MinJobAge=600', 'KillWait=5', f'NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN',
        f'PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP', '']))
    env = {**os.environ, 'SLURM_CONF': str(conf)}
    daemons = []
    def start(cmd, log):
        daemons.append(subprocess.Popen(cmd, env=env, stdout=open(log, 'ab'), stderr=subprocess.STDOUT, start_new_session=True))
    try:
        start(['munged', '-F', f'--socket={d}/munge.sock', f'--key-file={d}/munge.key', f'--pid-file={d}/munged.pid', f'--log-file={d}/munged.log',
               f'--seed-file={d}/munge.seed', '--force'], d/'munged.out')
        deadline = time.time() + 15
        while not (d/'munge.sock').exists() and time.time() < deadline and daemons[0].poll() is None: time.sleep(0.2)
        if not (d/'munge.sock').exists(): pytest.skip(_why_not(d/'munged.log', 'munged did not start'))
        start(['slurmctld', '-D', '-f', str(conf)], d/'slurmctld.out')
        time.sleep(1)
        start(['slurmd', '-D', '-f', str(conf), '-N', host], d/'slurmd.out')
        deadline, state = time.time() + 30, ''
        while time.time() < deadline:
            for p, log, what in ((daemons[1], d/'slurmctld.log', 'slurmctld exited'), (daemons[2], d/'slurmd.log', 'slurmd exited')):
                if p.poll() is not None: pytest.skip(_why_not(log, what))
            state = subprocess.run(['sinfo', '-h', '-o', '%T'], env=env, capture_output=True, text=True).stdout.strip()
            if state == 'idle': break
            time.sleep(0.5)
        else: pytest.skip(_why_not(d/'slurmd.log', f'the Slurm node did not become idle in 30 s (state {state or "unknown"})'))
        yield env, d
    finally:
        if daemons and (d/'slurmctld.pid').exists(): subprocess.run(['scancel', '-u', 'root'], env=env, capture_output=True)
        for p in reversed(daemons):
            p.terminate()
            try: p.wait(timeout=15)
            except subprocess.TimeoutExpired: p.kill()

def test_slurm_runs_the_configurations_with_dependencies_and_a_final_report_job(slurm, tmp_path):
    env, d = slurm
    tiny = {'n_images': 60, 'scales': [32, 64], 'seeds': [1, 2], 'epochs': 1, 'device': 'cpu'}
    params = write(tmp_path/'p.yaml', [{'name': 'tiny', 'job': {'timeout_min': 7}}, {'name': 'noisy', 'notebook': 'degradation', 'scales': [64], 'noise': [0.0, 0.5], 'inputs': ['tiny']},
                                       {**BROKEN, 'scales': [32]}, {**AFTER, 'scales': [32]}], defaults=tiny)
    runs = tmp_path/'runs'
    r = fs('run', params, '--runs-dir', runs, '--executor', 'slurm', '--timeout-min', 30, env={**env, **BREAK(runs)})
    assert r.returncode == 0, r.stdout + r.stderr
    if filesystem_of(runs) in LOCAL_FILESYSTEMS: assert f'is on a local {filesystem_of(runs)} filesystem' in r.stdout      # said: not shared
    ids = {l.split(':')[0]: l.split('Slurm job ')[1].split()[0] for l in r.stdout.splitlines() if 'submitted as Slurm job' in l}
    assert set(ids) == {'tiny', 'noisy', 'broken', 'after_broken', 'report'} and 'fusion-study status --runs-dir' in r.stdout
    sub = Path(json.loads((runs/'.jobs'/'noisy.json').read_text())['folder']).parent
    sbatch = {p.read_text() for p in sub.rglob('*_submission.sh')}
    assert any(f"--dependency=afterok:{ids['tiny']}" in s and '--kill-on-invalid-dep=yes' in s for s in sbatch)      # inputs: afterok
    assert any('--dependency=afterany:' in s and all(ids[n] in s for n in ('tiny', 'noisy', 'broken', 'after_broken')) for s in sbatch)
    assert any('--job-name=fusion-study:tiny:' in s and '--time=7\n' in s for s in sbatch) and all('--signal=USR2@90' in s for s in sbatch)   # its own time
    names = {q['name'].split(':')[1] for q in squeue(env).values() if q['name'].startswith('fusion-study:') and q['name'].endswith(':' + token_of(runs))}
    assert names == {'tiny', 'noisy', 'broken', 'after_broken', 'report'}                          # squeue tells them apart
    w = fs('status', '--runs-dir', runs, '--wait', '--poll', 1, env=env, timeout=600)
    print(r.stdout, w.stdout, sep='\n')
    assert w.returncode == 1, w.stdout + w.stderr
    s = states(w)
    assert {n: s[n][0] for n in s} == {'tiny': 'complete', 'noisy': 'complete', 'broken': 'failed', 'after_broken': 'failed', 'report': 'complete'}, w.stdout
    assert s['broken'][2].startswith('RuntimeError: injected failure at row') and s['after_broken'][2] == 'not run: one of its inputs failed'
    assert s['tiny'][1] == ids['tiny'] and (runs/'report'/'report.ipynb').exists()
    assert set(pd.read_csv(runs/'noisy'/'results.csv').query('noise == 0').config) == {'tiny'}        # it read its input

def test_one_shared_kernel_gives_the_results_of_a_kernel_per_configuration(local_jobs, smoke_runs):
    "`fusion-study run` runs every notebook on one kernel (emptied between them); a job runs one notebook on a kernel of its own: same numbers."
    _, _, jobs, _, _ = local_jobs
    shared, _ = smoke_runs
    key = ['method', 'scale', 'seed', 'noise', 'rotation']
    for c in JOBS:
        a, b = (pd.read_csv(r/c['name']/'results.csv').sort_values(key).reset_index(drop=True) for r in (shared, jobs))
        pd.testing.assert_frame_equal(a[key + ['accuracy', 'f1', 'precision', 'recall']], b[key + ['accuracy', 'f1', 'precision', 'recall']])
    assert (shared/'kernel.log').exists() and not (shared/'smoke_aligned'/'kernel.log').exists() and (jobs/'smoke_aligned'/'kernel.log').exists()

# ------------------------------------------------------------------------------------------------ job records after interruptions, against Slurm's own word
TINY = {'n_images': 60, 'scales': [32], 'seeds': [1], 'epochs': 1, 'device': 'cpu'}
SLOW = {'n_images': 400, 'scales': [512], 'seeds': [1, 2, 3], 'epochs': 2, 'engine': 'loop'}    # runs one at a time, a few seconds each
SLOW_ONE = {**SLOW, 'methods': ['concat']}      # three of those runs: one finished before the signal, two left for the job that resumes
SLURM_WORDS = {'queued': {'PENDING', 'REQUEUED', 'CONFIGURING'}, 'running': {'RUNNING', 'COMPLETING'}, 'complete': {'COMPLETED'}, 'cancelled': {'CANCELLED'},
               'failed': {'FAILED', 'TIMEOUT', 'OUT_OF_MEMORY', 'NODE_FAIL', 'CANCELLED'}}        # failed: CANCELLED when an input failed

def squeue(env) -> dict:
    "Every job Slurm shows (ended ones too, for MinJobAge): id → dict(state, name, reason)."
    out = subprocess.run(['squeue', '-h', '-r', '-t', 'all', '-o', '%i|%T|%j|%r'], env=env, capture_output=True, text=True).stdout
    return {l.split('|')[0]: dict(zip(('state', 'name', 'reason'), l.split('|')[1:])) for l in out.splitlines() if l.strip()}

def token_of(runs) -> str:
    "The submission token of the newest job record of `runs`."
    recs = [json.loads(p.read_text()) for p in (Path(runs)/'.jobs').glob('*.json')]
    return max(recs, key=lambda r: r.get('submitted', 0))['job_name'].split(':')[-1]

def agrees(runs, env) -> dict:
    """`fusion-study status` against squeue: every job status names is the newest job of that configuration's name in Slurm, in a state Slurm's
    word allows (read before and after status, so a job changing state between the two still agrees); returns status's rows."""
    before = squeue(env); r = fs('status', '--runs-dir', runs, env=env); after = squeue(env)
    rows, tokens = states(r), {json.loads(p.read_text()).get('job_name', '::').split(':')[-1] for p in (Path(runs)/'.jobs').glob('*.json')}
    newest = {}
    for jid, q in after.items():
        parts = q['name'].split(':')
        if len(parts) == 3 and parts[0] == 'fusion-study' and parts[2] in tokens: newest[parts[1]] = max(newest.get(parts[1], jid), jid, key=int)
    for name, (state, job, detail) in rows.items():
        if name not in newest: assert job == '-' or job not in after, (name, job, r.stdout); continue
        assert job == newest[name], (name, job, newest, r.stdout)
        words = {q[job]['state'] for q in (before, after) if job in q}
        assert words & SLURM_WORDS[state], (name, state, words, r.stdout)
    return rows

def wait_until(cond, what, limit=300):
    t = time.time()
    while not cond():
        assert time.time() - t < limit, f'{what}: not within {limit} s'
        time.sleep(0.3)

def test_slurm_records_after_a_killed_submission_a_resubmission_and_a_failed_report_job(slurm, tmp_path):
    env, _ = slurm
    runs = tmp_path/'runs'
    two = write(tmp_path/'two.yaml', [{'name': 'a'}, {'name': 'b'}], defaults=TINY)
    # killed between sbatch and writing the job id: the next commands find the job by its name, and submit no duplicate
    killed = fs('run', two, '--runs-dir', runs, '--executor', 'slurm', env={**env, 'FUSION_STUDY_CRASH_AT': 'submitted'})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert json.loads((runs/'.jobs'/'a.json').read_text())['job_id'] is None
    rows = agrees(runs, env)
    assert rows['a'][1] != '-' and rows['b'][0] == 'failed' and 'never submitted' in rows['b'][2], rows
    again = fs('run', two, '--runs-dir', runs, '--executor', 'slurm', env=env)
    assert again.returncode == 0 and 'found by its job name' in again.stdout and 'b: submitted as Slurm job' in again.stdout, again.stdout + again.stderr
    first_report = json.loads((runs/'.jobs'/'report.json').read_text())['job_id']
    # a resubmission cancels the earlier report job; this one's report job is killed half way through the report notebook
    three = write(tmp_path/'three.yaml', [{'name': 'a'}, {'name': 'b'}, {'name': 'c'}], defaults=TINY)
    more = fs('run', three, '--runs-dir', runs, '--executor', 'slurm', env={**env, 'FUSION_STUDY_CRASH_AT': 'report'})
    assert more.returncode == 0 and f'the earlier report job {first_report} cancelled' in more.stdout and 'c: submitted' in more.stdout, more.stdout + more.stderr
    assert 'a: submitted' not in more.stdout and 'b: submitted' not in more.stdout
    fs('status', '--runs-dir', runs, '--wait', '--poll', 1, env=env, timeout=600)
    rows = agrees(runs, env)
    assert {n: rows[n][0] for n in rows} == {'a': 'complete', 'b': 'complete', 'c': 'complete', 'report': 'failed'}, rows
    assert squeue(env)[first_report]['state'] == 'CANCELLED'
    per_name = [q['name'].split(':')[1] for q in squeue(env).values() if q['name'].startswith('fusion-study:') and q['name'].split(':')[1] in ('a', 'b', 'c')]
    assert sorted(per_name) == ['a', 'b', 'c']                                                     # one job each: no duplicate
    assert 'did not run to the end' in json.dumps(json.loads((runs/'.jobs'/'report.json').read_text())) or rows['report'][2]

def test_slurm_a_timed_out_job_resubmits_itself_and_resumes_and_a_killed_wait_leaves_its_report(slurm, tmp_path):
    env, _ = slurm
    runs = tmp_path/'runs'
    params = write(tmp_path/'slow.yaml', [{'name': 'slow', **SLOW_ONE}], defaults=TINY)
    driver = subprocess.Popen(['fusion-study', 'run', str(params), '--runs-dir', str(runs), '--executor', 'slurm', '--timeout-min', '5', '--wait', '--poll', '1'],
                              cwd=ROOT, env={**env, 'PYTHONUNBUFFERED': '1'}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: (runs/'.jobs'/'report.json').exists() and json.loads((runs/'.jobs'/'report.json').read_text()).get('job_id'), 'the report job')
    finally: os.killpg(driver.pid, signal.SIGKILL); driver.wait()                               # the --wait driver dies; the jobs go on
    job = json.loads((runs/'.jobs'/'slow.json').read_text())['job_id']
    wait_until(lambda: list((runs/'slow'/'rows').rglob('*.json')), 'the first finished run')
    subprocess.run(['scancel', '--signal=USR2', job], env=env, check=True)                       # what Slurm sends 90 s before the limit
    wait_until(lambda: squeue(env).get(job, {}).get('state') in ('PENDING', 'REQUEUED', 'CONFIGURING'), 'the requeue', limit=120)
    subprocess.run(['scontrol', 'update', f'JobId={job}', 'StartTime=now'], env=env, capture_output=True)   # Slurm holds a requeued job ~2 min; the test need not
    w = fs('status', '--runs-dir', runs, '--wait', '--poll', 1, env=env, timeout=600)
    rows = agrees(runs, env)
    assert {n: rows[n][0] for n in rows} == {'slow': 'complete', 'report': 'complete'}, w.stdout
    info = json.loads((runs/'slow'/'run.json').read_text())
    assert info['resumed_runs'] >= 1 and info['trained_runs'] + info['resumed_runs'] == info['runs'], info    # the resubmitted job resumed
    log = ''.join(p.read_text(errors='replace') for p in runs.rglob(f'{job}_0_log.err'))
    assert 'this job is timed-out' in log and 'DUE TO JOB REQUEUE' in log, log[-2000:]                # submitit's checkpoint, then Slurm's requeue
    assert (runs/'report'/'report.ipynb').exists()

def test_slurm_cancelled_jobs_are_said_cancelled_and_a_bad_configuration_submits_nothing(slurm, tmp_path):
    env, _ = slurm
    runs = tmp_path/'runs'
    jobs_before = set(squeue(env))
    bad = fs('run', write(tmp_path/'bad.yaml', [{'name': 'fine'}, TWELVE], defaults=TINY), '--runs-dir', runs, '--executor', 'slurm', env=env)
    one_sentence(bad, "'cross_tokens' of configuration 'twelve'", 'divisible by tokens=8')       # before the first sbatch
    assert set(squeue(env)) == jobs_before and not (runs/'.jobs').exists()
    params = write(tmp_path/'two.yaml', [{'name': 'one', **SLOW}, {'name': 'two', **SLOW}], defaults=TINY)
    r = fs('run', params, '--runs-dir', runs, '--executor', 'slurm', env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    ids = [json.loads((runs/'.jobs'/f'{n}.json').read_text())['job_id'] for n in ('one', 'two')]
    wait_until(lambda: all(squeue(env).get(j, {}).get('state') == 'RUNNING' for j in ids) and all((runs/n/'.lock').exists() for n in ('one', 'two')), 'both running')
    one = ids[0]
    subprocess.run(['scancel', one], env=env, check=True)                                         # by hand
    c = fs('cancel', '--runs-dir', runs, env=env)                                                   # the rest: two and the report job
    assert c.returncode == 0 and 'two: job' in c.stdout and 'report: job' in c.stdout, c.stdout + c.stderr
    wait_until(lambda: all(squeue(env)[j]['state'] == 'CANCELLED' for j in (one, json.loads((runs/'.jobs'/'two.json').read_text())['job_id'])), 'cancelled')
    rows = agrees(runs, env)
    assert {n: rows[n][0] for n in rows} == {'one': 'cancelled', 'two': 'cancelled', 'report': 'cancelled'}, rows
    assert all('cancelled' in rows[n][2] and 'memory' not in rows[n][2] for n in rows), rows
    assert fs('cancel', '--runs-dir', runs, env=env).stdout.startswith('nothing to cancel')

def test_a_dry_run_prints_each_sbatch_script_and_writes_nothing(tmp_path):
    params = write(tmp_path/'p.yaml', [{'name': 'small'}, {'name': 'big', 'job': {'mem': '64G', 'timeout_min': 600}, 'inputs': ['small']}, {'name': 'other'}], defaults=TINY)
    r = fs('run', params, '--runs-dir', tmp_path/'runs', '--executor', 'slurm', '--mem', '8G', '--max-parallel', '1', '--dry-run')
    assert r.returncode == 0, r.stdout + r.stderr
    small, big, other = [r.stdout.split(f'----- sbatch script of {n}\n')[1].split('-----')[0] for n in ('small', 'big', 'other')]
    assert "--job-name='fusion-study:small:<token>'" in small and '--mem=8G' in small and '--time=240' in small and '--dependency' not in small
    assert "fusion-study:big:" in big and '--mem=64G' in big and '--time=600' in big and "--dependency='afterok:<job of small>'" in big   # its input
    assert "--dependency='afterany:<job of big>'" in other                                          # --max-parallel 1: one after another
    assert 'nothing was submitted or written' in r.stdout and not (tmp_path/'runs').exists()

def test_run_reads_its_params_file_once(tmp_path, monkeypatch):
    "`fusion-study run` parses its params file once and passes what it read down: a dry run of jobs, a local run its plan refuses, a flag that does not apply."
    from fusion_study.cli import main
    read = []
    real = yaml.load
    monkeypatch.setattr(yaml, 'load', lambda text, *a, **kw: read.append(text) or real(text, *a, **kw))
    good = write(tmp_path/'p.yaml', [{'name': 'small'}, {'name': 'big', 'inputs': ['small']}], defaults=TINY, executor={'kind': 'slurm', 'mem': '8G'})
    bad = write(tmp_path/'bad.yaml', [{'name': 'reads', 'inputs': ['elsewhere']}], defaults=TINY)
    for params, args, code in [(good, ['--dry-run'], 0), (good, ['--executor', 'local', '--dry-run'], 0), (bad, [], 2), (good, ['--executor', 'subprocess', '--mem', '8G'], 2)]:
        read.clear()
        assert main(['run', str(params), '--runs-dir', str(tmp_path/'runs'), *args]) == code, (params.name, args)
        assert read.count(params.read_text()) == 1, (params.name, args, len(read))
    assert not (tmp_path/'runs').exists()
