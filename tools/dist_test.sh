#!/usr/bin/env bash
# Distributed evaluation with torchrun, on GPUs (NCCL) or CPU processes (gloo).
#   bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [tools/test.py arguments...]
# Several machines: set NNODES, NODE_RANK, MASTER_ADDR and PORT on each (see dist_run.sh).
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
NPROC=$3

exec bash "$(dirname "$0")/dist_run.sh" test.py "$NPROC" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
