import hashlib, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_TEXT = ROOT.parent / 'shared' / 'data' / 'flickr8k_text'

def cli(*args, cwd=ROOT):
    "Run the installed `fusion-study` command; return the CompletedProcess."
    return subprocess.run(['fusion-study', *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=900)

def digest(folder) -> dict:
    "sha256 of every file under `folder`, to prove nothing changed."
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob('*')) if p.is_file()}

@pytest.fixture(scope='session')
def smoke_runs(tmp_path_factory):
    "params/smoke.yaml run once through the real CLI (papermill), shared by the tests that read it."
    runs = tmp_path_factory.mktemp('smoke') / 'runs'
    first = cli('run', ROOT/'params'/'smoke.yaml', '--runs-dir', runs)
    assert first.returncode == 0, first.stdout + first.stderr
    return runs, first
