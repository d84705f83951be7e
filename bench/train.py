"""Time the trainer's engines on the same grid in one process and print them side by side.

    python bench/train.py --device cpu --grid default            # the default study's 48 runs
    python bench/train.py --device cuda --grid paper84           # the paper's 84 runs (Tables 1 and 2)
    python bench/train.py --grid tiny --engines loop,batched     # seconds
    python bench/train.py --grid default --epochs 2 --engines batched,batched-mixed,batched-1lane12,batched-2lane12   # CPU variants side by side

Features are the embedded synthetic generator (the cached features of a real run have the same shapes).
Both engines train exactly the same specs; the last column is the largest metric difference to the first engine.
GFLOP/s counts the grid's forward + backward FLOPs (torch's FlopCounterMode on each fusion class, per training example,
times the examples each run trains on) over each engine's wall time, beside an fp32 matmul peak measured in this process
with the same threads.
"""
import argparse, os, platform, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch
from fusion_study import train as T, batched
from fusion_study.core import get_device
from fusion_study.data import synthetic_features

SEEDS, SCALES, METHODS = [42, 123, 456], [2048, 4096, 8192, 16384], ['concat', 'cross']
NOISE = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5]       # Table 2 (the paper's σ levels): feature noise on the aligned backbone at the largest scale

def grid(name:str, epochs:int):
    "[(features, specs)] of a named grid: one entry per feature set."
    spec = lambda **kw: T.RunSpec(epochs=epochs, **kw)
    if name == 'tiny':
        f = synthetic_features(300, alignment=1.0)
        return [(f, [spec(method=m, scale=n, seed=s) for m in METHODS for n in (256, 512) for s in (1, 2)])]
    aligned, unaligned = synthetic_features(8091, alignment=1.0), synthetic_features(8091, alignment=0.0)
    table1 = [(f, [spec(method=m, scale=n, seed=s) for n in SCALES for m in METHODS for s in SEEDS]) for f in (aligned, unaligned)]
    if name == 'default': return table1
    if name == 'paper84':                      # Table 2 shares the aligned features with Table 1: one call, bigger groups
        table2 = [spec(method=m, scale=SCALES[-1], seed=s, noise=sig) for sig in NOISE for m in METHODS for s in SEEDS]
        return [(aligned, table1[0][1] + table2), table1[1]]
    raise SystemExit(f"unknown grid {name!r}")

def grid_flops(jobs) -> float:
    "Forward + backward FLOPs of training every run of `jobs` (evaluation not counted)."
    return sum(batched.run_cost(s, f) for f, specs in jobs for s in specs)

def matmul_peak(device, n:int=2048, reps:int=20) -> float:
    "GFLOP/s of an n×n fp32 matmul on `device` with this process's threads (best of three)."
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = 0.0
    for _ in range(3):
        if device.type == 'cuda': torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(reps): a @ b
        if device.type == 'cuda': torch.cuda.synchronize()
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9)
    return best

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--device', default='auto')
    ap.add_argument('--grid', default='default', choices=['tiny', 'default', 'paper84'])
    ap.add_argument('--engines', default='loop,batched')
    ap.add_argument('--epochs', type=int, default=None, help='override the recipe (10; tiny: 2) to time a shorter grid')
    ap.add_argument('--threads', type=int, default=None, help='torch intra-op threads of the process (default: torch\'s)')
    ap.add_argument('--lanes', type=int, default=None, help='batched on CPU: groups trained side by side (default: cores)')
    ap.add_argument('--max-group', type=int, default=None, help=f'batched: runs per group (default: CPU {batched.CPU_GROUP}, GPU memory)')
    ap.add_argument('--no-graphs', action='store_true', help='batched on GPU: no CUDA graphs')
    ap.add_argument('--csv', default=None, help='write each engine\'s result rows to CSV-PREFIX-<engine>.csv')
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    device = get_device(a.device)
    jobs = grid(a.grid, a.epochs or (2 if a.grid == 'tiny' else 10))
    n = sum(len(s) for _, s in jobs)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f"{os.cpu_count()}-core {platform.machine()} CPU"
    print(f"grid {a.grid}: {n} runs, {len(jobs)} feature sets, device {name}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}", flush=True)
    if a.lanes or a.max_group or a.no_graphs:
        T.ENGINES['batched'] = lambda f, s, d: T.train_batched(f, s, d, lanes=a.lanes, max_group=a.max_group,
                                                               **(dict(graphs=False) if a.no_graphs else {}))
    T.ENGINES['batched-nographs'] = lambda f, s, d, **kw: T.train_batched(f, s, d, graphs=False, **kw)   # GPU: the same engine, eager
    T.ENGINES['batched-mixed'] = lambda f, s, d, **kw: T.train_batched(f, s, d, grouping='mixed', **kw)   # the grouping before issue 22: every scale in every group
    T.ENGINES['batched-1lane12'] = lambda f, s, d, **kw: T.train_batched(f, s, d, lanes=1, max_group=12, **kw)   # one lane of 12 runs on torch's threads
    T.ENGINES['batched-2lane12'] = lambda f, s, d, **kw: T.train_batched(f, s, d, max_group=12, **kw)        # two lanes of up to 12 runs
    flops, peak = grid_flops(jobs), matmul_peak(device)
    print(f"grid: {flops / 1e12:.2f} TFLOP forward + backward; fp32 matmul peak here {peak:.0f} GFLOP/s", flush=True)
    results = {}
    for engine in a.engines.split(','):
        if device.type == 'cuda': torch.cuda.synchronize()
        start = time.perf_counter()
        dfs = [T.train_runs(f, s, engine=engine, device=device, progress=False) for f, s in jobs]
        if device.type == 'cuda': torch.cuda.synchronize()
        results[engine] = (time.perf_counter() - start, dfs)
        print(f"  {engine}: {results[engine][0]:.1f} s", flush=True)
        if a.csv: __import__('pandas').concat(dfs).to_csv(f'{a.csv}-{engine}.csv', index=False)
    first = next(iter(results))
    print(f"\n{'engine':10} {'runs':>5} {'wall s':>9} {'s/run':>8} {'speed-up':>9} {'GFLOP/s':>8} {'of peak':>8} {'max |Δ metric|':>15}")
    for engine, (wall, dfs) in results.items():
        diff = max((d[T.METRICS] - r[T.METRICS]).abs().max().max() for d, r in zip(dfs, results[first][1]))
        print(f"{engine:10} {n:5d} {wall:9.1f} {wall / n:8.3f} {results[first][0] / wall:8.2f}× {flops / wall / 1e9:8.1f} "
              f"{flops / wall / 1e9 / peak:7.0%} {diff:15.4f}")
    if a.grid != 'tiny' and len(results) > 1:
        acc = {e: __import__('pandas').concat(d).accuracy.mean() for e, (_, d) in results.items()}
        print('mean accuracy: ' + ', '.join(f'{e} {v:.4f}' for e, v in acc.items()))

if __name__ == '__main__': main()
