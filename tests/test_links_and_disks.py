"""Issue 39: links, special files and full disks. Nothing is published or written through a link out of the runs folder; a rebuild keeps
the user's empty folders and clears what a killed build left; a FIFO or a device is refused at once; a full disk is one sentence."""
import builtins, errno, json, os, resource, shutil, signal, subprocess, sys
from pathlib import Path
import pytest
from conftest import digest

TINY = """defaults: {n_images: 100, scales: [64], seeds: [42], epochs: 1, methods: [concat], device: cpu}
configs:
  - name: tiny
"""

def command(*args, cwd=None, fsize:int=None, timeout=60) -> subprocess.CompletedProcess:
    "The installed `fusion-study` (with a file-size limit of `fsize` bytes, writes past it failing with EFBIG as on a full disk); never hangs."
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN); resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return subprocess.run(['fusion-study', *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit if fsize else None)

def one_sentence(r, *words):
    msg = r.stderr.strip()
    assert r.returncode != 0 and msg.startswith('fusion-study: error:') and len(msg.splitlines()) == 1 and 'Traceback' not in msg, r.stdout + r.stderr
    for w in words: assert w in msg, (w, msg)

def texts(folder) -> str:
    return '\n'.join(p.read_text(errors='replace') for p in Path(folder).rglob('*') if p.is_file())

def dead_pid() -> int:
    p = subprocess.Popen(['true']); p.wait(); return p.pid

# ------------------------------------------------------------------------------------------------ 1. nothing published through a link
def test_the_site_publishes_no_file_through_a_link(tmp_path, smoke_runs):
    from fusion_study.site import build_site
    runs = tmp_path/'runs'; shutil.copytree(smoke_runs[0], runs)
    (tmp_path/'secret.txt').write_text('SECRET-CSV-39\n')
    (runs/'smoke_aligned'/'notes.csv').symlink_to(tmp_path/'secret.txt')
    mine = json.loads((runs/'smoke_unaligned'/'study.ipynb').read_text())
    mine['cells'].append(dict(cell_type='markdown', id='secret39', metadata={}, source='SECRET-NOTEBOOK-39'))
    (tmp_path/'my_notebook.ipynb').write_text(json.dumps(mine)); (runs/'smoke_unaligned'/'study.ipynb').unlink()
    (runs/'smoke_unaligned'/'study.ipynb').symlink_to(tmp_path/'my_notebook.ipynb')
    build_site(runs, tmp_path/'site', use_quarto=False, log=lambda *a: None)
    text = texts(tmp_path/'site')
    assert 'SECRET-CSV-39' not in text and 'SECRET-NOTEBOOK-39' not in text
    assert not list((tmp_path/'site').rglob('notes.csv')) and 'notes.csv' not in text
    assert not (tmp_path/'site'/'runs'/'smoke_unaligned'/'study.ipynb').exists()
    assert 'a link, which the site does not follow' in (tmp_path/'site'/'runs'/'smoke_unaligned'/'study.html').read_text()

# ------------------------------------------------------------------------------------------------ 2. no write through a link
def test_run_force_replaces_links_and_never_writes_through_them(tmp_path):
    from fusion_study.core import RunConfig
    from fusion_study.params import load_params
    (tmp_path/'tiny.yaml').write_text(TINY); runs = tmp_path/'runs'
    first = command('run', 'tiny.yaml', '--runs-dir', runs, cwd=tmp_path, timeout=300); assert first.returncode == 0, first.stderr
    out, mine = runs/'tiny', tmp_path/'mine'; mine.mkdir()
    rows = out/'rows'/load_params(tmp_path/'tiny.yaml')[0].identity()
    for name in ('study.ipynb', 'results.csv', 'run.json', 'complete.json'):
        (mine/name).write_text(f'the user own {name}'); (out/name).unlink(); (out/name).symlink_to(mine/name)
    (mine/'rows').mkdir(); (mine/'rows'/'keep.json').write_text('theirs'); shutil.rmtree(rows); rows.symlink_to(mine/'rows')
    before = digest(mine)
    again = command('run', 'tiny.yaml', '--runs-dir', runs, '--force', cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert digest(mine) == before and sorted(p.name for p in (mine/'rows').iterdir()) == ['keep.json']     # nothing of theirs touched
    for name in ('study.ipynb', 'results.csv', 'run.json', 'complete.json'): assert not (out/name).is_symlink() and (out/name).is_file(), name
    assert not rows.is_symlink() and list(rows.glob('*.json'))
    (tmp_path/'elsewhere').mkdir(); shutil.rmtree(out); out.symlink_to(tmp_path/'elsewhere')             # the configuration folder a link
    one_sentence(command('run', 'tiny.yaml', '--runs-dir', runs, cwd=tmp_path, timeout=300), 'is a link', 'never writes through a link')
    assert list((tmp_path/'elsewhere').iterdir()) == []

def test_remove_path_never_deletes_what_a_link_points_to(tmp_path):
    from fusion_study.core import write_atomic
    from fusion_study.plan import remove_path
    (tmp_path/'theirs').mkdir(); (tmp_path/'theirs'/'f').write_text('x'); (tmp_path/'link').symlink_to(tmp_path/'theirs')
    remove_path(tmp_path/'link'); assert (tmp_path/'theirs'/'f').exists() and not (tmp_path/'link').is_symlink()
    (tmp_path/'target.txt').write_text('theirs'); (tmp_path/'out.txt').symlink_to(tmp_path/'target.txt')
    write_atomic(tmp_path/'out.txt', 'ours')
    assert (tmp_path/'target.txt').read_text() == 'theirs' and (tmp_path/'out.txt').read_text() == 'ours'

# ------------------------------------------------------------------------------------------------ 3, 4. rebuilds
def test_a_rebuild_keeps_an_empty_folder_of_the_user(tmp_path, site, smoke_runs):
    from fusion_study.core import FusionStudyError
    from fusion_study.site import build_site
    out = tmp_path/'site'; shutil.copytree(site, out)
    (out/'my drafts'/'empty').mkdir(parents=True)
    try: build_site(smoke_runs[0], out, use_quarto=False, log=lambda *a: None)
    except FusionStudyError as e: assert 'my drafts/' in str(e) and 'not written by `fusion-study site`' in str(e), e
    assert (out/'my drafts'/'empty').is_dir()

def test_a_rebuild_removes_what_a_killed_build_left_but_not_a_live_ones(tmp_path, site, smoke_runs):
    from fusion_study.site import build_site
    out = tmp_path/'site'; shutil.copytree(site, out)
    dead = [tmp_path/f'.site.{what}-{dead_pid()}' for what in ('new', 'stage', 'old')]
    for d in dead: d.mkdir(); (d/'index.html').write_text('half')
    live_process = subprocess.Popen(['sleep', '60'])
    try:
        live = tmp_path/f'.site.new-{live_process.pid}'; live.mkdir(); (live/'index.html').write_text('being built')
        build_site(smoke_runs[0], out, use_quarto=False, log=lambda *a: None)
        assert not [d for d in dead if d.exists()] and (live/'index.html').read_text() == 'being built'
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(['site', live.name])
    finally: live_process.kill(); live_process.wait()

# ------------------------------------------------------------------------------------------------ 5. FIFOs, devices: at once, in words
def test_what_is_not_a_regular_file_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path/'fifo.npz'); (tmp_path/'zero.npz').symlink_to('/dev/zero'); os.mkfifo(tmp_path/'params.yaml')
    folder = tmp_path/'feats'; folder.mkdir(); (folder/'pairs.csv').write_text('text_owner\n0\n1\n')
    (folder/'image.npy').symlink_to('/dev/zero'); (folder/'text.npy').write_bytes(b'')
    for path, kind in (('fifo.npz', 'is a FIFO (named pipe)'), ('zero.npz', 'is a character device'), ('feats', 'image.npy is a character device')):
        one_sentence(command('advise', path, '--out', tmp_path/'advice', cwd=tmp_path, timeout=30), kind, 'not a regular file')
    one_sentence(command('run', 'params.yaml', '--runs-dir', 'runs', cwd=tmp_path, timeout=30), "'params.yaml' is a FIFO (named pipe)")
    (tmp_path/'file.yaml').write_text('configs: [{name: mine, source: file, features_file: fifo.npz}]\n')
    one_sentence(command('run', 'file.yaml', '--runs-dir', 'runs', cwd=tmp_path, timeout=30), 'fifo.npz is a FIFO (named pipe)')
    assert not (tmp_path/'runs').exists() and not (tmp_path/'advice').exists()

def test_features_through_a_link_are_read_and_reads_stop_at_the_file_size(tmp_path):
    import numpy as np, zipfile
    from fusion_study.core import FusionStudyError
    from fusion_study.features_file import read_arrays, save_features
    save_features(tmp_path/'real.npz', np.eye(3), np.eye(3), [0, 1, 2]); (tmp_path/'link.npz').symlink_to(tmp_path/'real.npz')
    assert read_arrays(tmp_path/'link.npz')['image'].shape == (3, 3)                  # the user's data may live anywhere
    import io
    f = io.BytesIO()                                                                  # the header writes its own magic
    np.lib.format.write_array_header_1_0(f, {'descr': '<f4', 'fortran_order': False, 'shape': (999999999999, 3)})
    with zipfile.ZipFile(tmp_path/'cut.npz', 'w') as z: z.writestr('image.npy', f.getvalue() + bytes(48))
    with pytest.raises(FusionStudyError, match='cut short or damaged'): read_arrays(tmp_path/'cut.npz')   # 12 TB declared: not allocated

# ------------------------------------------------------------------------------------------------ 6. full disks, read-only folders
def test_write_atomic_on_a_full_disk_is_one_sentence_and_leaves_no_temporary_file(tmp_path):
    code = ("import sys; from fusion_study.core import write_atomic, FusionStudyError\n"
            f"try: write_atomic({str(tmp_path/'runs'/'a'/'results.csv')!r}, 'x' * 100000)\n"
            "except FusionStudyError as e: print(e); sys.exit(3)\n")
    def limit(): signal.signal(signal.SIGXFSZ, signal.SIG_IGN); resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60, preexec_fn=limit)
    assert r.returncode == 3, r.stdout + r.stderr
    assert 'No space left on device (or a file-size limit) writing' in r.stdout and 'results.csv' in r.stdout and '--runs-dir' in r.stdout
    assert list((tmp_path/'runs'/'a').iterdir()) == []

def test_run_on_a_full_disk_is_one_sentence_and_leaves_nothing_half_written(tmp_path):
    (tmp_path/'tiny.yaml').write_text(TINY)
    r = command('run', 'tiny.yaml', '--runs-dir', 'runs', cwd=tmp_path, fsize=65536, timeout=300)
    one_sentence(r, 'No space left on device (or a file-size limit)', 'tiny/study.ipynb', '--runs-dir')
    assert not [p for p in (tmp_path/'runs').rglob('*') if p.name.endswith('.tmp') or p.name == 'study.ipynb'], list((tmp_path/'runs').rglob('*'))

def test_site_on_a_full_disk_is_one_sentence_and_keeps_the_old_site(tmp_path, site, smoke_runs):
    runs, out = tmp_path/'runs', tmp_path/'site'
    shutil.copytree(smoke_runs[0], runs); shutil.copytree(site, out)
    before = digest(out)
    one_sentence(command('site', '--runs-dir', runs, '--out', out, '--no-quarto', fsize=50000, timeout=300),
                 'No space left on device (or a file-size limit)', '--out')
    assert digest(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ['runs', 'site']

def test_site_on_a_read_only_runs_folder_is_one_sentence(tmp_path, smoke_runs, monkeypatch, capsys):
    from fusion_study.cli import main
    runs = tmp_path/'runs'; shutil.copytree(smoke_runs[0], runs); (runs/'.lock').unlink(missing_ok=True)
    real_open = builtins.open
    def read_only(file, mode='r', *a, **kw):
        if str(file).endswith('.lock') and any(c in mode for c in 'wax+'): raise OSError(errno.EROFS, 'Read-only file system', str(file))
        return real_open(file, mode, *a, **kw)
    monkeypatch.setattr(builtins, 'open', read_only)
    assert main(['site', '--runs-dir', str(runs), '--out', str(tmp_path/'site'), '--no-quarto']) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith('fusion-study: error:') and len(err.splitlines()) == 1 and 'read-only' in err and str(runs) in err, err
    assert not (tmp_path/'site').exists()
