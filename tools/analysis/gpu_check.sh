#!/usr/bin/env bash
# Proof of the CUDA path on one GPU, from a copy of the repository with only torch and triton installed
# (no OpenMMLab package, mmslak not installed): the op tests on CUDA, the op benchmark against PyTorch,
# and the SASS summary of every Triton kernel for this GPU's architecture. About 5 minutes.
#
# Usage: bash tools/analysis/gpu_check.sh [DTYPES]      (DTYPES defaults to fp32,bf16,fp16)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Compiled kernels, not the interpreter (tests/conftest.py turns it on unless told otherwise).
export TRITON_INTERPRET=0
PYTHON="${PYTHON:-python}"
DTYPES="${1:-fp32,bf16,fp16}"

"$PYTHON" -c 'import torch, triton; assert torch.cuda.is_available(), "no CUDA device"; print(torch.cuda.get_device_name(0), "torch", torch.__version__, "triton", triton.__version__)'
ARCH=$("$PYTHON" -c 'import torch; major, minor = torch.cuda.get_device_capability(); print(major * 10 + minor)')

echo "== op tests on CUDA (the CPU variants skip: they need the interpreter)"
"$PYTHON" -m pytest -q -p no:cacheprovider -k "cuda or dispatch" \
    tests/ops/test_triton_band.py tests/ops/test_triton_dwconv.py tests/ops/test_peripheral_op_triton.py \
    tests/ops/test_depthwise_dispatch.py

echo "== benchmark_ops --device cuda --dtype $DTYPES"
"$PYTHON" tools/analysis/benchmark_ops.py --device cuda --dtype "$DTYPES" --repeats 10

echo "== SASS of every kernel for sm_$ARCH"
"$PYTHON" tools/analysis/inspect_triton_kernels.py --arch "$ARCH" --dtype "$DTYPES" --check
