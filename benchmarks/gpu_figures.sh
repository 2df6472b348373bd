#!/bin/bash
# The GPU figures of issue 12 in one command, on a machine with one CUDA GPU (H200 planned):
# the GPU test module, then lmforge vs nanoGPT side by side (benchmarks/train_gpu.py).
#
#   bash benchmarks/gpu_figures.sh PATH/TO/nanoGPT [OUT_DIR]
#
# nanoGPT: a checkout of karpathy/nanoGPT (train.py, model.py, configurator.py); never committed
# here. Writes OUT_DIR/{tests,bench}.log and OUT_DIR/results.json (OUT_DIR defaults to $OUT, the
# device tool's folder that comes back, else /tmp/lmforge-gpu-figures). ~2 min of tests, ~6 min
# of benchmark on an H200: under the device tool's 10-minute limit per call (the two steps below
# can also be run as two calls).
set -u
NANOGPT=${1:?give the path of a nanoGPT checkout}
OUT_DIR=${2:-${OUT:-/tmp/lmforge-gpu-figures}}
mkdir -p "$OUT_DIR"
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT_DIR/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT_DIR/gpu.txt"
timeout 150 $PY -m pytest -q tests/test_gpu.py -p no:cacheprovider 2>&1 | tail -30 | tee "$OUT_DIR/tests.log"
timeout 420 $PY benchmarks/train_gpu.py --nanogpt "$NANOGPT" --steps 30 --steps-1b 10 --rounds 2 \
  --work /tmp/lmforge-gpu-bench 2>&1 | tee "$OUT_DIR/bench.log"
cp /tmp/lmforge-gpu-bench/results.json "$OUT_DIR/" 2>/dev/null
