#!/usr/bin/env bash
# Distributed training with torchrun, on GPUs (NCCL) or, without GPUs, on CPU processes (gloo).
#   bash tools/dist_train.sh CONFIG NPROC [tools/train.py arguments...]
# Several machines: set NNODES, NODE_RANK, MASTER_ADDR and PORT on each (see dist_run.sh).
set -euo pipefail
CONFIG=$1
NPROC=$2

exec bash "$(dirname "$0")/dist_run.sh" train.py "$NPROC" "$CONFIG" --launcher pytorch "${@:3}"
