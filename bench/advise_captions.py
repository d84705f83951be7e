"""Three real features files for `fusion-study advise`, from Flickr8k captions and all-MiniLM-L6-v2 (issue 23).

    python bench/advise_captions.py --data-dir ../shared/data/flickr8k_text --out /tmp/captions_features [--advise] [--budget fast]

The arrays are those the study trains on: the `Features` that `load_features` returns for the configurations of
params/captions_minilm.yaml (source: captions; `image` = caption #0 of each image, `text` = its other captions,
`text_owner` = the row of `image` each text belongs to; images sorted by name, rows L2-normalised):
  aligned.npz  captions_aligned: MiniLM on both sides
  rotated.npz  aligned.npz with text @ Q, Q = scipy.stats.ortho_group.rvs(384, random_state=0) (same information, no shared coordinates)
  tfidf.npz    captions_unaligned: MiniLM caption #0 vs TF-IDF + TruncatedSVD(384) of the other captions, fitted on the captions
               of the training images only (never a dev/test caption: extract.FIT_RULE), then applied to every caption
The first run encodes the captions once (~2 min on 2 CPU cores) into the feature cache (fusion_study.core.cache_dir(),
$FUSION_STUDY_CACHE); later runs read it. The files do not carry the study's fixed dev+test validation split: advise splits its own.
--advise then runs `fusion-study advise FILE --out OUT/<name>_advice` for each file and prints its wall time and paragraph.
"""
import argparse, dataclasses, json, os, subprocess, sys, time
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1')          # the packaged encoder; nothing is downloaded

from scipy.stats import ortho_group
from fusion_study.params import load_params
from fusion_study.extract import extract_captions, load_features
from fusion_study.features_file import save_features

PARAMS = Path(__file__).resolve().parent.parent/'params'/'captions_minilm.yaml'

def features(name, data_dir):
    "The `Features` of configuration `name` of captions_minilm.yaml with `data_dir` set, encoding the captions first if not cached."
    cfg = dataclasses.replace(next(c for c in load_params(PARAMS) if c.name == name), data_dir=data_dir)
    extract_captions(cfg.data_dir, cfg.image_encoder, cfg.text_encoder, progress=False, log=lambda *a: None)   # cached after the first run
    return load_features(cfg)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data-dir', required=True, help='folder holding Flickr8k.token.txt (or captions.txt) and the split lists')
    p.add_argument('--out', default='/tmp/captions_features')
    p.add_argument('--advise', action='store_true', help='then run fusion-study advise on each file')
    p.add_argument('--budget', choices=['fast', 'full'], default='fast', help='advise --budget (with --advise)')
    a = p.parse_args(argv)
    out, data_dir = Path(a.out), str(Path(a.data_dir).expanduser().resolve())
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    aligned, unaligned = features('captions_aligned', data_dir), features('captions_unaligned', data_dir)
    Q = ortho_group.rvs(aligned.text.shape[1], random_state=0)
    sets = {'aligned': (aligned, aligned.text.numpy()), 'rotated': (aligned, aligned.text.numpy() @ Q), 'tfidf': (unaligned, unaligned.text.numpy())}
    files = {}
    for name, (f, text) in sets.items():
        files[name] = save_features(out/f'{name}.npz', f.image.numpy(), text, f.caption_image.numpy(), image_ids=f.ids)
        print(f"{name}: {len(f.image):,} items, {len(text):,} texts, widths {f.image.shape[1]} / {text.shape[1]} → {files[name]}")
    print(f"written in {time.time() - t0:.0f}s")
    if not a.advise: return 0
    for name, path in files.items():
        adv, t = out/f'{name}_advice', time.time()
        r = subprocess.run(['fusion-study', 'advise', str(path), '--budget', a.budget, '--out', str(adv)])
        print(f"\n{name}: advise exited {r.returncode} after {time.time() - t:.0f}s")
        if (j := adv/'advice.json').exists(): print(json.loads(j.read_text())['paragraph'])
    return 0

if __name__ == '__main__': sys.exit(main())
