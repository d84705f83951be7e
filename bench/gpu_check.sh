#!/usr/bin/env bash
# The device check, under 5 minutes of device time (each step has its own limit; the sum is 300 s):
#   1. the paper's 84 runs (Tables 1 and 2) with the batched engine and CUDA graphs;
#   2. the default grid (2 epochs) with the three engines side by side: loop, batched (CUDA graphs), batched without graphs;
#   3. `fusion-study run params/default.yaml` end to end with every configuration on cuda, then `fusion-study site`;
#   4. the token-level study: params/token_controls.yaml's three controls at the paper's recipe (attend, xattn and the pooled methods, 8,192 pairs, 3 seeds) on cuda.
# Each bench line prints wall time, speed-up over the first engine, GFLOP/s and share of the device's matmul peak, and the largest metric difference.
# Run where a GPU is present (the package installed: pip install -e .); logs go to ${OUT:-.}.
set -o pipefail; export PYTHONUNBUFFERED=1; OUT=${OUT:-.}
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
timeout 70 python3 bench/train.py --device cuda --grid paper84 --engines batched 2>&1 | tee $OUT/gpu_paper84.log
timeout 60 python3 bench/train.py --device cuda --grid default --epochs 2 --engines loop,batched,batched-nographs 2>&1 | tee $OUT/gpu_default2.log
python3 - <<'PY'                      # params/default.yaml with device: cuda for every configuration
import yaml; p = yaml.safe_load(open('params/default.yaml')); p['defaults']['device'] = 'cuda'
yaml.safe_dump(p, open('/tmp/default_cuda.yaml', 'w'), sort_keys=False)
PY
start=$(date +%s)
timeout 110 fusion-study run /tmp/default_cuda.yaml --runs-dir $OUT/runs 2>&1 | tee $OUT/gpu_default_run.log && fusion-study site --runs-dir $OUT/runs --out $OUT/_site --no-quarto 2>&1 | tail -1
echo "default run + site on cuda, end to end: $(( $(date +%s) - start )) s (the CPU figure is in nbs/performance.md, *Time budget and deviations*)"
grep -h "done in" $OUT/gpu_default_run.log
python3 - <<'PY'                      # the token-set controls at the paper's recipe, on cuda
import yaml; p = yaml.safe_load(open('params/token_controls.yaml')); p['defaults']['device'] = 'cuda'
p['configs'] = [c for c in p['configs'] if 'lr' not in c]
yaml.safe_dump(p, open('/tmp/token_controls_cuda.yaml', 'w'), sort_keys=False)
PY
start=$(date +%s)
timeout 60 fusion-study run /tmp/token_controls_cuda.yaml --runs-dir $OUT/runs_tokens 2>&1 | tee $OUT/gpu_token_controls.log
echo "token-set controls on cuda: $(( $(date +%s) - start )) s (the CPU figure is in nbs/attention.md)"
python3 -c "import pandas as pd, glob; print(pd.concat(pd.read_csv(f) for f in glob.glob('$OUT/runs_tokens/*/attention_tests.csv'))[['task', 'method', 'baseline', 'mean_diff', 'ci_lo', 'ci_hi', 'as_expected']].to_string())"
