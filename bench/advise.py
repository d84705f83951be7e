"""`fusion-study advise --budget fast` on 10,000 pairs of 512-d features, end to end, as a user runs it (the figure on nbs/your_features.md, *Speed*).

    python bench/advise.py [--n 10000] [--dim 512] [--budget fast]

Writes the embedded synthetic aligned features (n items, one text each) to a temporary .npz, runs the command in a subprocess
and prints its wall-clock time and the seconds of each stage that advice.json records. The goal: under 2 minutes on 2 CPU cores."""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

from fusion_study.data import synthetic_features
from fusion_study.features_file import save_features

p = argparse.ArgumentParser()
p.add_argument('--n', type=int, default=10_000)
p.add_argument('--dim', type=int, default=512)
p.add_argument('--budget', default='fast')
args = p.parse_args()
with tempfile.TemporaryDirectory() as d:
    f = synthetic_features(n_images=args.n, captions_per_image=1, dim=args.dim)
    save_features(Path(d)/'features.npz', f.image, f.text, f.caption_image)
    start = time.perf_counter()
    run = subprocess.run(['fusion-study', 'advise', str(Path(d)/'features.npz'), '--budget', args.budget, '--out', str(Path(d)/'advice')],
                         capture_output=True, text=True)
    wall = time.perf_counter() - start
    if run.returncode: sys.exit(run.stderr)
    a = json.loads((Path(d)/'advice'/'advice.json').read_text())
print(f"advise --budget {args.budget} on {args.n:,} pairs of {args.dim}-d features: {wall:.1f} s wall-clock on {os.cpu_count()} cores "
      f"({len(a['methods'])} methods x {len(a['scales'])} sizes up to {a['scales'][-1]:,} x {len(a['seeds'])} seeds)")
print('stages (s): ' + ', '.join(f"{k} {v:.1f}" for k, v in a['seconds'].items()) + f"; the rest (start-up, imports, reading) {wall - sum(a['seconds'].values()):.1f}")
print('advice:', a['paragraph'].replace('**', ''))
