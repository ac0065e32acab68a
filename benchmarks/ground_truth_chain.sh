#!/usr/bin/env bash
# Build the shipped LDS ground truth (ground_truth/NAME.npz) for every registered model, in order, resumably:
# batches of retrains (about ten minutes each on one thread), each batch under the shared bench lock (so other short benchmarks interleave), one torch
# thread, the retrain cache in CACHE (git-ignored). After each batch the file holds the finished prefix of subsets
# (marked partial until K is reached); rerunning the script continues where it stopped. Log with load averages: LOG.
#
#   nohup setsid benchmarks/ground_truth_chain.sh >/dev/null 2>&1 &
#
# Environment: PYTHON (default /work/main/.venv/bin/python or python), CACHE (runs/lds-cache), BATCH (retrains per
# batch; default per model: every retrain of the digits models, 16 for mnist5k MLP, 20 for mnist5k CNN),
# LOCK (/tmp/influence-bench.lock), LOG (runs/ground_truth_chain.log), NAMES (the order below), WORKERS (retrain on a
# local Dask cluster of this many one-thread workers; default: in this process).
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x /work/main/.venv/bin/python ] && echo /work/main/.venv/bin/python || echo python )}
CACHE=${CACHE:-runs/lds-cache}
LOCK=${LOCK:-/tmp/influence-bench.lock}
LOG=${LOG:-runs/ground_truth_chain.log}
NAMES=${NAMES:-"digits_logreg digits_mlp mnist5k_mlp mnist5k_cnn"}
export INFLUENCE_EXPLORER_TORCH_THREADS=1 OMP_NUM_THREADS=1
mkdir -p "$(dirname "$LOG")" "$CACHE"

complete() {  # exit 0 when ground_truth/$1.npz exists and is not partial
  "$PYTHON" -c "import sys
from influence_core.evaluation.ground_truth import load_ground_truth
try:
    sys.exit(1 if load_ground_truth('$1').partial else 0)
except ValueError:
    sys.exit(1)"
}

for name in $NAMES; do
  case "$name" in digits_*) batch=${BATCH:-200} ;; mnist5k_mlp) batch=${BATCH:-16} ;; *) batch=${BATCH:-20} ;; esac
  while ! complete "$name"; do
    echo "$(date -u +%FT%TZ) $name: batch of $batch; load before: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$LOG"
    flock "$LOCK" nice -n 5 "$PYTHON" -m influence_core lds ground-truth "$name" --cache "$CACHE" \
      --max-retrains "$batch" --threads 1 ${WORKERS:+--workers "$WORKERS"} --quiet >>"$LOG" 2>&1
    rc=$?
    echo "$(date -u +%FT%TZ) $name: rc=$rc; load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$LOG"
    if [ "$rc" -eq 0 ]; then failures=0; else failures=$(( ${failures:-0} + 1 )); fi
    if [ "${failures:-0}" -ge 3 ]; then echo "stopping: $name failed 3 times in a row (rc=$rc)" >>"$LOG"; exit 1; fi
  done
  echo "$(date -u +%FT%TZ) $name: complete" >>"$LOG"
done
