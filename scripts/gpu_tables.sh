#!/bin/bash
# One GPU lease, one command: BENCHMARKS.md's two grammar-model tables.
#  - the expression table: six models (RAE-L2/GP/SN, plain RAE, GVAE, CVAE), 50 epochs each, all in
#    parallel on the one GPU (they are small), each evaluated with the GrammarVAE protocol; teacher-forced
#    architecture and its recipe by default (EXPR_ARGS="--arch gvae" gives the GrammarVAE networks' table);
#  - a full-ZINC250k GrammarRAE run in the foreground that stops itself inside the budget
#    (--max-minutes), then is evaluated there (RDKit validity, MOSES-style metrics, FCD).
#
#   bash scripts/gpu_tables.sh EXPR_TXT ZINC_SMI OUT_DIR [SECONDS]
#
# SECONDS (default 540) is the wall-clock budget of the whole script; the molecule training gets what
# is left after setting up, minus RESERVE seconds (default 200) for fitting its densities, evaluating
# and packing; the expression models stop training EXPR_RESERVE seconds (default 150) before the
# budget ends, to leave time for their evaluation. A CUDA PyTorch image lacks nltk, RDKit and
# fcd_torch: carry their wheels (.whl/, see the device notes). Everything comes back in the run.tar.*
# pieces (<= 15 MB each; a lease returns only a few files, so OUT_DIR holds little else): the run
# directories with their eval/ reports (the molecule run with its best weights only), and logs/:
#   cat OUT_DIR/run.tar.* | tar -x -C runs/
# Measured on one H100 (BENCHMARKS.md): five expression models ran 50 epochs and were evaluated in ~4
# minutes together, RAE-GP (16 s/epoch: no cuDNN under double backward) reached epoch 23 in its budget;
# the molecule run shares the GPU with them, so it trains far slower than alone.
set -u
EXPR=$1
ZINC=$2
OUT=$3
BUDGET=${4:-540}
RESERVE=${RESERVE:-200}
RUNS=${RUNS:-/tmp/runs}
EXPR_MODELS=${EXPR_MODELS:-rae-l2 rae-gp rae-sn rae vae cvae}
EXPR_ARGS=${EXPR_ARGS:-}   # extra `train` options for every expression model ("--limit 2000 --epochs 2": a dry run)
MOL_ARGS=${MOL_ARGS:---model rae-l2 --epochs 100}   # the GPU recipe (`grammar-rae recipes`) for the rest
mkdir -p "$OUT/logs" "$RUNS/expr" "$RUNS/mol"
source "$(dirname "$0")/lease_setup.sh"

echo "== parsing both data sets once, into the cache every job reads ($(elapsed) s)"
python3 - "$EXPR" "$ZINC" <<'EOF'
import sys, time
from grammar_rae.data import prepare_dataset
for grammar, path in zip(("expr", "smiles"), sys.argv[1:]):
    t = time.time()
    ds = prepare_dataset(grammar, path, quiet=True)
    print(f"{grammar}: {len(ds.strings)} rows, {len(ds.skipped)} skipped, {time.time() - t:.1f} s")
EOF

echo "== expression models in the background: ${EXPR_MODELS} ($(elapsed) s)"
PIDS=""
EXPR_MIN=$(python3 -c "print(round(max($BUDGET - $(elapsed) - ${EXPR_RESERVE:-150}, 60) / 60, 2))")
for m in $EXPR_MODELS; do
  extra=""
  case $m in vae|cvae) extra="--vae-epsilon-std 0.01" ;; esac
  ( s=$(date +%s)
    OMP_NUM_THREADS=2 python3 -m grammar_rae.cli train --grammar expr --data "$EXPR" --model "$m" $extra --epochs 50 \
      --max-minutes "$EXPR_MIN" --out "$RUNS/expr/$m" $EXPR_ARGS \
    && OMP_NUM_THREADS=2 python3 -m grammar_rae.cli evaluate --run "$RUNS/expr/$m" --gvae-protocol --n-recon 1000
    echo "exit $? after $(( $(date +%s) - s )) s" ) > "$OUT/logs/expr-$m.log" 2>&1 &
  PIDS="$PIDS $!"
done

LEFT=$(( BUDGET - $(elapsed) - RESERVE ))
MINUTES=$(python3 -c "print(round(max($LEFT, 60) / 60, 2))")
echo "== molecules: training, --max-minutes $MINUTES ($(elapsed) s)"
OMP_NUM_THREADS=4 python3 -m grammar_rae.cli train --grammar smiles --data "$ZINC" --out "$RUNS/mol/zinc" $MOL_ARGS \
  --max-minutes "$MINUTES" > "$OUT/logs/mol-train.log" 2>&1
echo "train exit $? ($(elapsed) s)"; tail -4 "$OUT/logs/mol-train.log"
echo "== molecules: evaluate ($(elapsed) s)"
EVAL_S=$(( BUDGET - $(elapsed) - 40 )); [ $EVAL_S -lt 30 ] && EVAL_S=30
OMP_NUM_THREADS=4 timeout $EVAL_S python3 -m grammar_rae.cli evaluate --run "$RUNS/mol/zinc" --n-recon 1000 \
  > "$OUT/logs/mol-eval.log" 2>&1
echo "evaluate exit $? ($(elapsed) s)"; cat "$OUT/logs/mol-eval.log" | grep -v "it/s\]" | tail -12

echo "== waiting for the expression models ($(elapsed) s)"
# not a bare `wait`: that would also wait for the `tee` above, which waits for us; and not past the budget
alive() { for p in $PIDS; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
while alive && [ "$(elapsed)" -lt $(( BUDGET - 30 )) ]; do sleep 3; done
for p in $PIDS; do kill -0 "$p" 2>/dev/null && { echo "budget spent: stopping job $p"; pkill -P "$p"; kill "$p"; }; done
for m in $EXPR_MODELS; do echo "-- $m"; grep -E "reconstruction|samples:|^exit|Error|error" "$OUT/logs/expr-$m.log" | tail -9; done

echo "== packing ($(elapsed) s)"
# the optimiser states are left out (the runs cannot --resume from what comes back), and so are the
# molecule run's last weights (best ones kept): what comes back from a lease is <= 64 MB
cp -r "$OUT/logs" "$RUNS/logs"
tar -C "$RUNS" -cf - --exclude='last.state.*' --exclude='last-*.state.*' --exclude='*.tmp' \
  --exclude='mol/zinc/checkpoints/last.safetensors' --exclude='mol/zinc/checkpoints/last-*.safetensors' \
  expr mol logs | split -b 15M - "$OUT/run.tar."
rm -rf "$OUT/logs"   # inside the tarball: a lease returns only a few files
ls -la "$OUT"
echo "done ($(elapsed) s)"
