#!/usr/bin/env bash
# Run a tools/ script under torchrun, NPROC processes on this machine: on GPUs (NCCL) or, without GPUs, on
# CPU processes (gloo). dist_train.sh and dist_test.sh call it.
#   bash tools/dist_run.sh SCRIPT NPROC [script arguments...]
# Several machines: set NNODES, NODE_RANK, MASTER_ADDR and PORT on each.
set -euo pipefail
SCRIPT=$1
NPROC=$2

exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$NPROC" --master_port="${PORT:-29500}" \
    "$(dirname "$0")/$SCRIPT" "${@:3}"
