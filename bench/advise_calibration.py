"""Calibration of `fusion-study advise --budget fast` on real caption features (issue 40): its
predictions at 32,768 pairs against every method trained at 32,768 pairs. A bench, not a test.

    python bench/advise_calibration.py [--out /tmp/advise_calibration]
        [--data-dir ../shared/data/flickr8k_text] [--rerun-advise] [--progress]

For each of the three files of bench/advise_captions.py (aligned, rotated, tfidf; made under
OUT/features when missing; the first time encodes the captions, minutes):
  1. advise's fast budget runs in-process, `advise.advise(file, 'fast', OUT/<name>_advice)`, once;
     later runs read its results.csv (--rerun-advise runs it again, e.g. after the budget changes);
  2. the module's own `advise.predict(runs, 32768, n_boot)` and `advise.decide_at(runs, table,
     draws, costs, 32768)` are called as `advise._advise` calls them at its own target (the
     budget's n_boot, predict's default seed, `inference_cost` costs); that this is the call
     advise makes is checked by reproducing advice.json's predictions at its own target;
  3. every method of the budget is trained at 32,768 pairs with advise's run spec
     (`RunSpec(split_by_image=True)`: 80/20 by item, the budget's seeds, so each seed's validation
     items are those of its fast runs) by `train.train_runs`, advise's trainer, and cached in
     OUT/truth_32768.csv by file, features digest, method and seed: a rerun trains nothing;
  4. it prints, per file and method, the predicted 95% interval, the measured mean at 32,768 with
     its 95% interval over seeds and validation pairs (advise's `measured` columns, from `predict`
     on the runs up to 32,768), and whether it is inside; the coverage; the recommendation against
     the measured best (level: the measured paired difference best − recommended, advise's
     `measured_diff`, includes 0); whether 'clear' was said and whether the recommended method's
     measured difference to each other method excludes 0 (is > 0).
Then a Markdown table for the README, the wall time, the machine and torch's threads;
OUT/calibration.json holds it all. The issue's bar: ≥ 14 of 15 covered, every recommendation level
with the measured best, 'clear' only where the measured differences exclude 0.
"""
import argparse, json, math, os, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'bench'))
import advise_captions                      # sets HF_HUB_OFFLINE before the encoder loads

import numpy as np
import pandas as pd
import torch

from fusion_study import advise as adv
from fusion_study.core import code_version, write_atomic
from fusion_study.fusion import methods_for
from fusion_study.loop import RunSpec
from fusion_study.results import usable
from fusion_study.train import train_runs

N_TARGET = 32_768
NAMES = ('aligned', 'rotated', 'tfidf')
BUDGET = 'fast'
TRUTH_CSV, TRUTH_SECONDS = 'truth_32768.csv', 'truth_32768_seconds.json'
ADVISE_SECONDS, REPORT_JSON = 'advise_seconds.json', 'calibration.json'
RECIPE = ['epochs', 'batch_size', 'lr', 'weight_decay', 'val_frac', 'split_by_image']


def read_runs(path) -> pd.DataFrame:
    "A results CSV with `val_correct` kept as the packed hex string it was written as."
    return pd.read_csv(path, dtype={'val_correct': str, 'sha256': str})


def read_json(path) -> dict:
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def make_files(out:Path, data_dir:str) -> dict:
    "The three features files of advise_captions.py under `out`, made when any is missing."
    files = {n: out/f'{n}.npz' for n in NAMES}
    if not all(p.exists() for p in files.values()):
        advise_captions.main(['--data-dir', data_dir, '--out', str(out)])
    return files


def fast_advice(path:Path, folder:Path, rerun:bool, progress:bool):
    """advise's fast budget on `path` into `folder`, run now or read back: (its advice record or
    None without advice.json, its runs, its seconds if run now, the error it stopped on after
    writing results.csv or None)."""
    if rerun and folder.exists(): shutil.rmtree(folder)
    if (folder/adv.ADVICE_RESULTS).exists():
        a = read_json(folder/adv.ADVICE_JSON) or None
        return a, read_runs(folder/adv.ADVICE_RESULTS), None, None
    t, error = time.perf_counter(), None
    try:
        a = adv.advise(str(path), budget=BUDGET, out=folder, progress=progress, log=lambda *x: None)
        a = json.loads(json.dumps(a, default=str))
    except Exception as e:                    # a predict being changed: the runs are what is needed
        if not (folder/adv.ADVICE_RESULTS).exists(): raise
        a, error = None, f"{type(e).__name__}: {e}"
    return a, read_runs(folder/adv.ADVICE_RESULTS), time.perf_counter() - t, error


def budget_record(path:Path) -> dict:
    "What `_advise` takes from the budget and the features: methods, seeds, n_boot, the costs."
    feats, _ = adv.advice_features(str(path))
    b, registry = adv.BUDGETS[BUDGET], methods_for(feats.meta.get('tokens'))
    methods = adv.advice_methods(feats, BUDGET)
    return dict(methods=methods, seeds=list(b['seeds']), n_boot=b['n_boot'],
                costs={m: adv.inference_cost(m, feats.dims, registry) for m in methods})


def reproduces(a:dict | None, ok:pd.DataFrame, n_boot:int) -> bool | None:
    """Whether `predict` as `_advise` calls it reproduces advice.json's predictions at its own
    target (accuracy, lo, hi); None without advice.json."""
    if a is None: return None
    table, _ = adv.predict(ok, a['n_target'], n_boot)
    want = pd.DataFrame(a['predictions']).set_index('method')
    got = table.set_index('method').reindex(want.index)
    cols = ['accuracy', 'lo', 'hi']
    return bool(np.allclose(got[cols].to_numpy(float), want[cols].to_numpy(float), atol=1e-12,
                            rtol=0, equal_nan=True))


def truth_runs(name:str, path:Path, budget:dict, out:Path, progress:bool):
    """Every method of the budget at `N_TARGET` pairs with advise's run spec and trainer, cached in
    OUT/truth_32768.csv: (this file's runs, the seconds spent training now or None)."""
    feats, about = adv.advice_features(str(path))
    if N_TARGET > feats.max_pairs:
        raise SystemExit(f"{name}: {N_TARGET:,} pairs is more than its {feats.max_pairs:,}.")
    cache = out/TRUTH_CSV
    mine = lambda r: r[(r.file == name) & (r.sha256 == about['sha256'])]
    empty = pd.DataFrame(columns=['file', 'sha256', 'method', 'seed'])
    runs = read_runs(cache) if cache.exists() else empty
    have = set(zip(mine(runs).method, mine(runs).seed.astype(int)))
    tags = dict(config='advise', source=about['name'], backbone='yours', alignment=float('nan'))
    specs = [RunSpec(method=m, scale=N_TARGET, seed=s, split_by_image=True, tags=tags)   # _advise's
             for m in budget['methods'] for s in budget['seeds'] if (m, s) not in have]
    if not specs: return mine(runs), None
    t = time.perf_counter()
    new = train_runs(feats, specs, engine='batched', device='auto', progress=progress,
                     methods=methods_for(feats.meta.get('tokens')))
    seconds = time.perf_counter() - t
    new.insert(0, 'sha256', about['sha256']); new.insert(0, 'file', name)
    runs = pd.concat([runs, new], ignore_index=True) if len(runs) else new
    write_atomic(cache, runs.to_csv(index=False))
    secs = read_json(out/TRUTH_SECONDS)
    secs[name] = dict(seconds=seconds, runs=len(specs), engine=str(new.engine.iloc[0]),
                      device=str(new.device.iloc[0]), torch_threads=torch.get_num_threads(),
                      machine=machine())
    write_atomic(out/TRUTH_SECONDS, json.dumps(secs, indent=1))
    return mine(read_runs(cache)), seconds


def measured_at(fast_ok:pd.DataFrame, truth_ok:pd.DataFrame, n_boot:int) -> pd.DataFrame:
    """advise's `measured` columns at 32,768 pairs, per method: `predict` on the fast runs and the
    32,768-pair runs, whose largest size is 32,768."""
    both = pd.concat([fast_ok, truth_ok.drop(columns=['file', 'sha256'])], ignore_index=True)
    table, _ = adv.predict(both, N_TARGET, n_boot)
    return table.set_index('method')[['measured', 'measured_lo', 'measured_hi', 'largest']]


def calibrate(name:str, budget:dict, fast:pd.DataFrame, truth:pd.DataFrame) -> dict:
    "The predictions and decision at 32,768 from the fast runs, against the runs at 32,768."
    ok, truth_ok = usable(fast), usable(truth)
    recipes = [r[RECIPE].drop_duplicates().astype(str).to_dict('records') for r in (ok, truth_ok)]
    assert recipes[0] == recipes[1], f"{name}: the runs at 32,768 trained otherwise: {recipes}"
    t = time.perf_counter()
    table, draws = adv.predict(ok, N_TARGET, budget['n_boot'])
    decision, _ = adv.decide_at(ok, table, draws, budget['costs'], N_TARGET)
    predict_seconds = time.perf_counter() - t
    meas = measured_at(ok, truth_ok, budget['n_boot'])
    assert int(meas.largest.iloc[0]) == N_TARGET
    md = adv.measured_diff(truth_ok)
    rows = []
    for r in table.itertuples():
        if r.method not in meas.index: continue                 # every run at 32,768 diverged
        m = meas.loc[r.method]
        rows.append(dict(method=r.method, predicted=r.accuracy, lo=r.lo, hi=r.hi, family=r.family,
                         backtest_ok=bool(r.backtest_ok), measured=float(m.measured),
                         measured_lo=float(m.measured_lo), measured_hi=float(m.measured_hi),
                         inside=bool(r.lo <= m.measured <= r.hi),
                         runs=int((truth_ok.method == r.method).sum())))
    rec, best = decision['recommended'], meas.measured.idxmax()
    gap = md(best, rec) if rec != best else dict(mean=0.0, lo=0.0, hi=0.0)
    vs = {m: md(rec, m) for m in meas.index if m != rec}
    measured = (table.set_index('method').loc[meas.index].reset_index()
                .assign(accuracy=meas.measured.values, lo=meas.measured_lo.values,
                        hi=meas.measured_hi.values))
    at_target = adv.decide(measured, md, budget['costs'], adv.MEASURED)
    return dict(file=name, rows=rows, covered=sum(r['inside'] for r in rows), n=len(rows),
                decision=decision, measured_best=best, best_minus_recommended=gap,
                recommended_level_with_best=bool(rec == best or gap['lo'] <= 0),
                recommended_minus_each=vs, excludes_0={m: side(d) for m, d in vs.items()},
                clear=bool(decision['clear']),
                clear_ok=bool(not decision['clear'] or all(d['lo'] > 0 for d in vs.values())),
                decision_measured_at_32768=dict(recommended=at_target['recommended'],
                                                clear=bool(at_target['clear']),
                                                level_with=at_target['level_with']),
                predict_seconds=predict_seconds, diverged_fast=len(fast) - len(ok),
                diverged_truth=len(truth) - len(truth_ok))


def machine() -> str:
    "The CPU's model name (lscpu), its cores, and the GPU if any."
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
        model = next(l.split(':', 1)[1].strip() for l in out.splitlines()
                     if l.startswith('Model name'))
    except (OSError, StopIteration): model = 'unknown CPU'
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ''
    return f"{model}, {os.cpu_count()} cores{gpu}"


def pct(x): return f"{100 * x:.1f}%"
def pts(d): return f"{100 * d['mean']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"
def yn(b): return 'yes' if b else 'no'
def side(d): return 'yes, above' if d['lo'] > 0 else 'yes, below' if d['hi'] < 0 else 'no'


def markdown(results:list) -> str:
    "The README's tables: intervals against measured values; recommendations against the best."
    lines = [f"| features | method | predicted at {N_TARGET:,} [95%] | curve | "
             f"measured at {N_TARGET:,} [95%] | inside |", '|---|---|---|---|---|---|']
    for c in results:
        for r in c['rows']:
            lines.append(f"| {c['file']} | {r['method']} | {pct(r['predicted'])} [{pct(r['lo'])}, "
                         f"{pct(r['hi'])}] | {r['family']}"
                         f"{'' if r['backtest_ok'] else ' (backtest missed)'} | "
                         f"{pct(r['measured'])} "
                         f"[{pct(r['measured_lo'])}, {pct(r['measured_hi'])}]"
                         f" | {yn(r['inside'])} |")
    k, n = sum(c['covered'] for c in results), sum(c['n'] for c in results)
    lines += ['', f"Coverage: {k} of {n} measured values inside their predicted 95% interval.", '',
              '| features | decided on | recommended | clear | measured best '
              '| best − recommended, measured (points) | level with the best '
              '| recommended − each other, measured (points) '
              '| clear only where it excludes 0 |', '|---|---|---|---|---|---|---|---|---|']
    for c in results:
        d = c['decision']
        each = '; '.join(f"{m} {pts(g)}" for m, g in c['recommended_minus_each'].items())
        lines.append(f"| {c['file']} | {d['basis']} | {d['recommended']} | {yn(c['clear'])} | "
                     f"{c['measured_best']} | {pts(c['best_minus_recommended'])} | "
                     f"{yn(c['recommended_level_with_best'])} | {each} | "
                     f"{yn(c['clear_ok']) if c['clear'] else 'yes (not said)'} |")
    return '\n'.join(lines)


def show(c:dict, a:dict | None):
    "One file's lines: each method's interval against the measured value, then the recommendation."
    d, s = c['decision'], c['scales']
    print(f"\n== {c['file']}: fast budget {s[0]:,}–{s[-1]:,} pairs × seeds {c['seeds']} ("
          + (f"run now, {c['advise_seconds_now']:.0f} s" if c['advise_seconds_now']
             else 'read back')
          + f"); its {N_TARGET:,}-pair runs "
          + (f"trained now, {c['truth_seconds_now']:.0f} s" if c['truth_seconds_now']
             else 'from the cache'))
    if c['advise_error']: print(f"  advise stopped on {c['advise_error']}")
    if a is not None:
        print(f"  predict at advice.json's own {a['n_target']:,} pairs reproduces it: "
              f"{yn(c['reproduces_advice_json'])}"
              + ('' if c['reproduces_advice_json'] else ' (predict changed since it was written?)'))
    for r in c['rows']:
        print(f"  {r['method']:<10} predicted [{pct(r['lo'])}, {pct(r['hi'])}] "
              f"({pct(r['predicted'])}, "
              f"{r['family']}{'' if r['backtest_ok'] else ', backtest missed'})  measured "
              f"{pct(r['measured'])} [{pct(r['measured_lo'])}, {pct(r['measured_hi'])}] over "
              f"{r['runs']} runs  inside: {yn(r['inside'])}")
    print(f"  coverage {c['covered']} of {c['n']}")
    print(f"  recommended {d['recommended']} (decided on: {d['basis']}, clear: {yn(c['clear'])}, "
          f"level with {d['level_with']}); measured best {c['measured_best']}, "
          f"best − recommended "
          f"{pts(c['best_minus_recommended'])} points: level with the best: "
          f"{yn(c['recommended_level_with_best'])}")
    for m, g in c['recommended_minus_each'].items():
        print(f"    {d['recommended']} − {m}: {pts(g)} points, "
              f"excludes 0: {c['excludes_0'][m]}")
    print(f"  'clear' said only where the measured difference excludes 0: {yn(c['clear_ok'])}; "
          f"measured at {N_TARGET:,} advise would decide {c['decision_measured_at_32768']}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default='/tmp/advise_calibration',
                   help='features, advice, the cached 32,768-pair runs and the report')
    p.add_argument('--data-dir', default=str(ROOT.parent/'shared'/'data'/'flickr8k_text'),
                   help='folder holding Flickr8k.token.txt and the split lists')
    p.add_argument('--rerun-advise', action='store_true',
                   help='run the fast budget again, not read it back')
    p.add_argument('--progress', action='store_true', help='progress bars')
    args = p.parse_args(argv)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    files = make_files(out/'features', str(Path(args.data_dir).expanduser().resolve()))
    features_s = time.perf_counter() - start
    results, advise_secs = [], read_json(out/ADVISE_SECONDS)
    for name, path in files.items():
        a, fast, advise_s, error = fast_advice(path, out/f'{name}_advice', args.rerun_advise,
                                               args.progress)
        if advise_s is not None:
            advise_secs[name] = dict(seconds=advise_s, machine=machine(),
                                     torch_threads=torch.get_num_threads())
            write_atomic(out/ADVISE_SECONDS, json.dumps(advise_secs, indent=1))
        budget = budget_record(path)
        ran = (sorted(fast.method.unique()), sorted(int(s) for s in fast.seed.unique()))
        assert ran == (sorted(budget['methods']), sorted(budget['seeds'])), \
            f"{name}: the fast runs are not this budget's; run with --rerun-advise"
        same = reproduces(a, usable(fast), budget['n_boot'])
        truth, truth_s = truth_runs(name, path, budget, out, args.progress)
        c = calibrate(name, budget, fast, truth)
        c.update(scales=sorted(int(x) for x in fast.scale.unique()), seeds=budget['seeds'],
                 n_boot=budget['n_boot'], advise_seconds_now=advise_s, advise_error=error,
                 truth_seconds_now=truth_s, reproduces_advice_json=same,
                 advice_code_version=a and a['code_version'],
                 n_target_of_advice=a and a['n_target'],
                 advice_paragraph=a and a['paragraph'])
        results.append(c)
        show(c, a)
    wall = time.perf_counter() - start
    k, n = sum(c['covered'] for c in results), sum(c['n'] for c in results)
    truth_secs = read_json(out/TRUTH_SECONDS)
    env = dict(machine=machine(), torch_threads=torch.get_num_threads(), torch=torch.__version__,
               code_version=code_version())
    summary = dict(coverage=[k, n], coverage_ok=k >= n - 1 if n == 15 else None,
                   recommendations_ok=all(c['recommended_level_with_best'] for c in results),
                   clear_ok=all(c['clear_ok'] for c in results))
    table = markdown(results)
    print('\n' + table)
    fast_s = sum(v['seconds'] for v in advise_secs.values())
    truth_total = sum(v['seconds'] for v in truth_secs.values())
    print(f"\nThis run: {wall:.0f} s wall-clock on {env['machine']}, torch {env['torch_threads']} "
          f"threads. The features files {features_s:.0f} s this time; when first run, "
          f"the fast budget "
          f"{fast_s:.0f} s ({len(advise_secs)} files, in-process); the {N_TARGET:,}-pair runs "
          f"{truth_total:.0f} s ({sum(v['runs'] for v in truth_secs.values())} runs).")
    print(f"Checks: coverage {k} of {n}; recommendation level with the measured best in every "
          f"file: "
          f"{yn(summary['recommendations_ok'])}; 'clear' only where the measured difference "
          f"excludes 0: {yn(summary['clear_ok'])}")
    report = dict(n_target=N_TARGET, budget=BUDGET, files=results, summary=summary, markdown=table,
                  wall_seconds=wall, features_seconds=features_s, fast_budget=advise_secs,
                  truth_training=truth_secs, environment=env)
    finite = lambda x: None if isinstance(x, float) and not math.isfinite(x) else str(x)
    write_atomic(out/REPORT_JSON, json.dumps(report, indent=1, default=finite))
    print(f"written {out/REPORT_JSON}")
    return 0


if __name__ == '__main__': sys.exit(main())
