"The batched engine trains the same runs as the loop engine."
import pytest
import torch

from fusion_study import train as T, batched as B
from fusion_study.core import FusionStudyError, RunConfig
from fusion_study.data import synthetic_features
from fusion_study.study import preflight

KEYS = ['method', 'scale', 'seed', 'noise', 'n_train', 'n_val', 'n_params']

@pytest.fixture(scope='module')
def feats(): return synthetic_features(300, alignment=0.5)

@pytest.fixture(scope='module')
def grid():
    "Mixed scales (different steps per epoch and totals), both paper methods, noise on some runs."
    return [T.RunSpec(method=m, scale=n, seed=s, noise=sig, epochs=2)
            for m in ('concat', 'cross') for n in (128, 256, 512) for s in (1, 2) for sig in (0.0, 0.3)]

@pytest.fixture(scope='module')
def loop(feats, grid):
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try: return T.train_runs(feats, grid, engine='loop', device='cpu', progress=False)
    finally: torch.set_num_threads(threads)

@pytest.mark.parametrize('kw', [dict(lanes=1), dict(lanes=2, max_group=3), dict(lanes=1, draw_threads=3, chunk=5)])
def test_batched_equals_loop(feats, grid, loop, monkeypatch, kw):
    "One group; CPU lanes of small groups; the GPU's way of drawing the random streams in threads, in odd chunks."
    monkeypatch.setitem(T.ENGINES, 'batched', lambda f, s, d: T.train_batched(f, s, d, **kw))
    seen = []
    batched = T.train_runs(feats, grid, engine='batched', device='cpu', progress=False, on_row=seen.append)
    assert sorted((r['method'], r['scale'], r['seed'], r['noise'], r['rotation']) for r in seen) == sorted(s.key() for s in grid)
    assert len(seen) == len(grid)
    assert batched[KEYS].equals(loop[KEYS])                      # same order as the specs, same splits
    assert (batched[T.METRICS] - loop[T.METRICS]).abs().max().max() <= 1e-6
    assert (batched.engine == 'batched').all() and (batched.train_seconds > 0).all()

class Replayer:
    "Stands in for a CUDA graph on CPU: replaying calls the recorded step, which reads the static buffers."
    def __init__(self, fn): self.fn, self.replays = fn, 0
    def replay(self): self.fn(); self.replays += 1

def test_graph_path_on_cpu(feats, monkeypatch):
    "The CUDA-graph bookkeeping (warm-up, capture per segment, static inputs, learning rates as tensors), run on CPU."
    grid = [T.RunSpec(method=m, scale=n, seed=1, noise=sig, epochs=6) for m in ('concat', 'cross') for n in (128, 256, 512) for sig in (0.0, 0.3)]
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try: loop = T.train_runs(feats, grid, engine='loop', device='cpu', progress=False)
    finally: torch.set_num_threads(threads)
    recorded, kept_alive, capture = [], [], B.LockStep.capture
    def checked_capture(self, V, T_, batch, stream=None):
        # A CUDA graph's backward must not meet autograd nodes made before the capture on another stream (measured on an H100:
        # stored views with a grad_fn made every capture fail): nothing the group keeps between steps may hold an autograd graph.
        kept_alive.append(any(x.grad_fn is not None for x in self.P.values()))
        return capture(self, V, T_, batch, stream)
    monkeypatch.setattr(B.LockStep, 'capture', checked_capture)
    monkeypatch.setattr(B.LockStep, '_record', staticmethod(lambda fn, device, stream=None: recorded.append(Replayer(fn)) or recorded[-1]))
    monkeypatch.setitem(T.ENGINES, 'batched', lambda f, s, d: T.train_batched(f, s, d, lanes=1, graphs=True, chunk=7))
    batched = T.train_runs(feats, grid, engine='batched', device='cpu', progress=False)
    assert len(recorded) == 6 and sum(r.replays for r in recorded) >= 100   # a capture per segment, most steps replayed
    assert kept_alive == [False] * 6
    assert (batched[T.METRICS] - loop[T.METRICS]).abs().max().max() <= 1e-6

def test_graph_capture_failure_falls_back(feats, grid, loop):
    "On CPU a real capture fails: the engine warns and trains on eagerly, with the same results."
    rows = [i for i, s in enumerate(grid) if s.scale == 512 and s.method == 'cross']      # 26 steps: long enough to capture
    with pytest.warns(UserWarning, match='CUDA graph capture failed'):
        out = list(T.train_batched(feats, [grid[i] for i in rows], 'cpu', lanes=1, graphs=True))
    assert len(out) == len(rows) and max(abs(r['accuracy'] - loop.accuracy[rows[i]]) for i, r in out) <= 1e-6

@pytest.mark.parametrize('method', ['cosine', 'cosine_proj', 'match_mlp', 'bilinear', 'concat_matched', 'eq3', 'gated'])
def test_baselines_train_alike_in_both_engines(feats, method):
    "Each baseline of issue 12 trains unchanged with both engines to equal metrics, with noise and a rotated text side."
    specs = [T.RunSpec(method=method, scale=n, seed=s, noise=sig, rotation=rot, epochs=2)
             for n in (128, 256) for s in (1, 2) for sig, rot in ((0.0, 0.0), (0.3, 0.0), (0.0, 1.0))]
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try: loop = T.train_runs(feats, specs, engine='loop', device='cpu', progress=False)
    finally: torch.set_num_threads(threads)
    batched = T.train_runs(feats, specs, engine='batched', device='cpu', progress=False)
    assert batched[KEYS + ['rotation']].equals(loop[KEYS + ['rotation']])
    assert (batched[T.METRICS] - loop[T.METRICS]).abs().max().max() <= 1e-6

def test_cross_tokens_batched(feats):
    specs = [T.RunSpec(method='cross_tokens', scale=n, seed=s, epochs=1) for n in (128, 256) for s in (1, 2)]
    a = T.train_runs(feats, specs, engine='loop', device='cpu', progress=False)
    b = T.train_runs(feats, specs, engine='batched', device='cpu', progress=False)
    assert (a[T.METRICS] - b[T.METRICS]).abs().max().max() <= 1e-6

def test_groups_follow_free_memory(feats, grid, monkeypatch):
    per = B.run_bytes(grid[0], feats)
    monkeypatch.setattr(B, '_free_bytes', lambda device: 5 * per)      # half of it: 2 runs of the noise-free kind
    groups = B.plan_groups(grid, feats, torch.device('cpu'))
    assert sorted(i for g in groups for i in g) == list(range(len(grid)))
    assert all(len({grid[i].method for i in g}) == 1 and len(g) <= 2 for g in groups)

def test_failing_group_raises(feats):
    specs = [T.RunSpec(method='concat', scale=128, seed=1, epochs=1), T.RunSpec(method='cross', scale=10**6, seed=1, epochs=1)]
    with pytest.raises(FusionStudyError, match='at most'):
        T.train_runs(feats, specs, engine='batched', device='cpu', progress=False)

def test_no_specs(feats):
    for engine in T.ENGINES: assert len(T.train_runs(feats, [], engine=engine, device='cpu', progress=False)) == 0

def test_engine_names():
    assert T.pick_engine('auto', torch.device('cpu')) == 'batched'
    preflight(RunConfig(engine='batched', device='cpu'))
    with pytest.raises(FusionStudyError, match='batched'): preflight(RunConfig(engine='fast', device='cpu'))

def test_batched_equals_loop_when_a_run_is_one_batch_per_epoch(feats):
    "Scales whose train split fits in one batch (no full batch, only the short last one) train and match the loop."
    specs = [T.RunSpec(method=m, scale=n, seed=42, epochs=2) for n in (24, 40, 80) for m in ('concat', 'cross')]
    loop = T.train_runs(feats, specs, engine='loop', device='cpu', progress=False)
    batched = T.train_runs(feats, specs, engine='batched', device='cpu', progress=False)
    assert (loop.n_train <= 32).sum() == 4 and batched[KEYS].equals(loop[KEYS])
    assert (batched[T.METRICS] - loop[T.METRICS]).abs().max().max() <= 1e-6


def test_a_new_fusion_class_needs_no_engine_code(feats):
    "A fusion method defined here, registered nowhere in the package, trains with both engines to the same metrics."
    import torch.nn as nn
    from fusion_study.fusion import Head, METHODS
    class Bilinear(nn.Module):                   # low-rank bilinear v^T U V^T t, then the shared head
        def __init__(self, d_v, d_t, rank=16):
            super().__init__()
            self.u, self.w, self.out, self.head = nn.Linear(d_v, rank), nn.Linear(d_t, rank), nn.Linear(rank, 256), Head(256)
            self.scale = (d_v * d_t) ** 0.5           # unit-norm features: unit-variance coordinates before the product
        def forward(self, v, t, drop=None): return self.head(self.out(self.u(v) * self.w(t) * self.scale), drop)
    methods = {'my_bilinear': Bilinear}
    specs = [T.RunSpec(method='my_bilinear', scale=n, seed=s, noise=sig, epochs=2) for n in (128, 256) for s in (1, 2) for sig in (0.0, 0.3)]
    loop = T.train_runs(feats, specs, engine='loop', device='cpu', progress=False, methods=methods)
    batched = T.train_runs(feats, specs, engine='batched', device='cpu', progress=False, methods=methods)
    assert 'my_bilinear' not in METHODS and (batched.n_params == sum(p.numel() for p in Bilinear(512, 512).parameters())).all()
    assert batched[KEYS].equals(loop[KEYS]) and (batched[T.METRICS] - loop[T.METRICS]).abs().max().max() <= 1e-6
    assert batched.accuracy.std() > 0                 # the runs differ: this is training, not a constant
    with pytest.raises(FusionStudyError, match="Unknown fusion method 'my_bilinear'"):
        T.train_runs(feats, specs[:1], engine='batched', device='cpu', progress=False)

def _own_heads():
    "Two heads that keep the head contract (03_fusion) unlike `Head`: other widths and p; one real dropout site (the spare mask 1 wide, ignored)."
    import torch.nn as nn, torch.nn.functional as F
    class Narrow(nn.Module):                         # dropout 0.3 on the 64-d fused vector and on 16 tanh units
        widths, p = (64, 16), 0.3
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(64, 16), nn.Linear(16, 2)
        def _drop(self, h, drop, i): return F.dropout(h, self.p, self.training) if drop is None else h * drop[i]
        def forward(self, h, drop=None): return self.fc2(self._drop(torch.tanh(self.fc1(self._drop(h, drop, 0))), drop, 1))
    class OneSite(nn.Module):                        # dropout 0.2 on its input only, then one linear layer
        widths, p = (64, 1), 0.2
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 2)
        def forward(self, h, drop=None): return self.fc(F.dropout(h, self.p, self.training) if drop is None else h * drop[0])
    return Narrow, OneSite

@pytest.mark.parametrize('head', range(2))
def test_a_head_of_its_own_trains_alike_in_both_engines(feats, head):
    "A fusion class whose head keeps the contract in 03_fusion (two `widths`, one `p`, masks applied in order) trains alike in both engines."
    import torch.nn as nn
    Head = _own_heads()[head]
    class Fused(nn.Module):
        def __init__(self, d_v, d_t):
            super().__init__()
            self.fuse, self.head = nn.Linear(d_v + d_t, 64), Head()
        def forward(self, v, t, drop=None): return self.head(self.fuse(torch.cat([v, t], -1)), drop)
    methods = {'own_head': Fused}
    specs = [T.RunSpec(method='own_head', scale=n, seed=s, noise=sig, epochs=2) for n, s, sig in ((128, 1, 0.0), (128, 2, 0.3), (256, 1, 0.0))]
    loop = T.train_runs(feats, specs, engine='loop', device='cpu', progress=False, methods=methods)
    batched = T.train_runs(feats, specs, engine='batched', device='cpu', progress=False, methods=methods)
    assert batched[KEYS].equals(loop[KEYS]) and (batched[T.METRICS] - loop[T.METRICS]).abs().max().max() <= 1e-6
    assert batched.accuracy.std() > 0                 # the runs differ: dropout and data are drawn per run

def test_measured_not_tabled():
    "Parameters without gradient, memory and cost come from the module: a wider model costs more, a dead branch is found."
    import torch.nn as nn
    from fusion_study.fusion import Head
    class Wide(nn.Module):
        def __init__(self, d_v, d_t, hidden=512):
            super().__init__()
            self.fuse, self.unused, self.head = nn.Linear(d_v + d_t, hidden), nn.Linear(4, 4), Head(hidden)
        def forward(self, v, t, drop=None): return self.head(self.fuse(torch.cat([v, t], -1)), drop)
    class Narrow(Wide):
        def __init__(self, d_v, d_t): super().__init__(d_v, d_t, hidden=64)
    w, n = B.profile(Wide, 512, 512), B.profile(Narrow, 512, 512)
    assert 'unused.weight' not in w['trainable'] and 'fuse.weight' in w['trainable']
    assert w['flops'] > 6 * n['flops'] and w['params'] > 6 * n['params'] and w['saved_bytes'] > n['saved_bytes']
