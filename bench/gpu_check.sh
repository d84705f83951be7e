#!/usr/bin/env bash
# The device check: the trainer's engines on a GPU, side by side with equal metrics, then the paper's 84 runs.
# Run where a GPU is present (PyTorch, pandas, scikit-learn, tqdm, PyYAML installed); logs go to ${OUT:-.}.
set -o pipefail; export PYTHONUNBUFFERED=1; OUT=${OUT:-.}
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
timeout 90 python3 bench/train.py --device cuda --grid tiny --engines loop,batched 2>&1 | tee $OUT/gpu_tiny.log
timeout 150 python3 bench/train.py --device cuda --grid default --epochs 2 --engines loop,batched,batched-nographs 2>&1 | tee $OUT/gpu_default2.log
timeout 240 python3 bench/train.py --device cuda --grid paper84 --engines batched 2>&1 | tee $OUT/gpu_paper84.log
