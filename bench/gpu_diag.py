"Find what breaks CUDA graph capture in the batched engine: a synchronising op in an eager step, and the capture's first error."
import sys, time, traceback, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch
from fusion_study import batched, train as T
from fusion_study.data import synthetic_features

orig_step, orig_rec, n = batched.LockStep.step, batched.LockStep._record, [0]
def step(self, V, T_, batch):
    n[0] += 1
    if n[0] == 2:
        torch.cuda.set_sync_debug_mode('error')
        try: return orig_step(self, V, T_, batch)
        except Exception: print('--- synchronising op in an eager step:'); traceback.print_exc(limit=-12)
        finally: torch.cuda.set_sync_debug_mode(0)
    return orig_step(self, V, T_, batch)
def rec(fn, device, stream=None, mode="global"):
    g = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(g, stream=stream, capture_error_mode=mode): fn()
        print(f'--- capture ({mode}) succeeded'); return g
    except Exception: print(f'--- capture ({mode}) failed:'); traceback.print_exc(limit=-12); raise
batched.LockStep.step, batched.LockStep._record = step, staticmethod(rec)
f = synthetic_features(600, alignment=1.0)
specs = [T.RunSpec(method=m, scale=1024, seed=s, epochs=2) for m in ['concat', 'cross'] for s in (1, 2)]
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter('always')
    t = time.perf_counter(); df = T.train_runs(f, specs, engine='batched', device='cuda', progress=False)
    print(f'trained {len(df)} runs in {time.perf_counter() - t:.1f} s; warnings: {[str(x.message)[:120] for x in w]}')
