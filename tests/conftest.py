import hashlib, os, shutil, subprocess
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_TEXT = ROOT.parent / 'shared' / 'data' / 'flickr8k_text'

def cli(*args, cwd=ROOT, env=None):
    "Run the installed `fusion-study` command (`env`: variables added to this one's); return the CompletedProcess."
    return subprocess.run(['fusion-study', *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})

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

@pytest.fixture(scope='session')
def flickr(tmp_path_factory):
    "A Flickr8k-shaped fixture in both layouts (12 JPEGs, one truncated), a tiny open_clip config and a tiny local BERT."
    import types
    from fusion_study.flickr8k import fake_flickr8k, _WORDS
    from fusion_study.encoders import tiny_clip_config
    from transformers import BertConfig, BertModel, BertTokenizer
    root = tmp_path_factory.mktemp('flickr8k')
    official = fake_flickr8k(root/'official', n_images=12, size=(120, 90))
    kaggle = fake_flickr8k(root/'kaggle', n_images=12, size=(120, 90), layout='kaggle')
    tiny = tiny_clip_config(root/'tiny-clip.json')
    (root/'vocab.txt').write_text('\n'.join(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '.', *dict.fromkeys(_WORDS)]))
    BertTokenizer(str(root/'vocab.txt')).save_pretrained(root/'tiny-bert')
    cfg = BertConfig(vocab_size=len(_WORDS) + 6, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertModel(cfg).save_pretrained(root/'tiny-bert')
    return types.SimpleNamespace(root=root, official=official, kaggle=kaggle, clip=f'clip:{tiny}/none', hf=f"hf:{root/'tiny-bert'}")

CHROMIUM = next((shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(n)), None)

@pytest.fixture(scope='session')
def site(smoke_runs, tmp_path_factory):
    "The site of the smoke runs, built once by `fusion-study site --no-quarto` (the static fallback), shared by the site tests."
    runs, _ = smoke_runs
    out = tmp_path_factory.mktemp('site')/'_site'
    r = cli('site', '--runs-dir', runs, '--out', out, '--no-quarto')
    assert r.returncode == 0, r.stdout + r.stderr
    return out
