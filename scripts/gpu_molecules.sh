#!/bin/bash
# One GPU lease, one command: the training-throughput benchmark (old loop vs new, one epoch each), then a
# full-ZINC250k GrammarRAE run with the GPU recipe (teacher-forced; not yet measured on a GPU) that
# stops cleanly inside the lease (--max-minutes) and packs its run directory into <= 15 MB pieces.
#
#   bash scripts/gpu_molecules.sh ZINC_SMI OUT_DIR [SECONDS]
#
# SECONDS (default 540) is the wall-clock budget of the whole script: the training gets what the
# benchmark leaves, minus ~100 s for fitting the densities and packing. Needs only what a CUDA
# PyTorch image has (torch, numpy, scipy, scikit-learn, click, tqdm, safetensors, matplotlib), plus
# nltk (carry its wheel and defusedxml's); no install of this package, no RDKit (training does not
# import it). Evaluate the unpacked run where RDKit is installed:
#   cat OUT_DIR/run.tar.* | tar -x -C runs/ && grammar-rae evaluate --run runs/zinc-grae --gvae-protocol
# What comes back from a lease is <= 64 MB, and best + last weights + optimiser state are ~77 MB for the
# GVAE-size model: when the best epoch is the last one, best.* is left out (restore it with
# `python scripts/restore_best.py RUN`), otherwise the optimiser state is (the run then cannot --resume).
set -u
ZINC=$1
OUT=$2
BUDGET=${3:-540}
RUN=${RUN:-/tmp/zinc-grae}
BENCH_ARGS=${BENCH_ARGS:---molecules 4000}
TRAIN_ARGS=${TRAIN_ARGS:-}   # extra `train` options, e.g. "--limit 2000 --decoder-hidden 32" for a dry run on a CPU
source "$(dirname "$0")/lease_setup.sh"

echo "== does the GRU run under bf16 autocast? ($(elapsed) s)"
AMP=--amp
python3 - <<'EOF' || AMP=--no-amp
import torch
gru = torch.nn.GRU(64, 64, 3, batch_first=True).cuda()
with torch.autocast("cuda", dtype=torch.bfloat16):
    y, _ = gru(torch.randn(8, 20, 64, device="cuda"))
y.float().sum().backward()
print("bf16 GRU ok:", y.dtype)
EOF
echo "training with $AMP"

echo "== bench/train.py ($(elapsed) s)"
timeout 150 python3 bench/train.py --data "$ZINC" $BENCH_ARGS

LEFT=$(( BUDGET - $(elapsed) - 100 ))
MINUTES=$(python3 -c "print(round(max($LEFT, 60) / 60, 2))")
echo "== training, --max-minutes $MINUTES ($(elapsed) s)"
python3 -c 'from grammar_rae.cli import main; main()' train --grammar smiles --data "$ZINC" --out "$RUN" \
  --model rae-l2 --device cuda --epochs 100 --max-minutes "$MINUTES" $AMP $TRAIN_ARGS   # the GPU recipe
# (to continue the shipped CPU model instead: TRAIN_ARGS="--init-from zinc-grae")
echo "train exit $? ($(elapsed) s)"

echo "== packing $RUN ($(elapsed) s)"
python3 - "$RUN" <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1]) / "checkpoints"
best, last = (json.loads((run / f"{w}.json").read_text())["epoch"] for w in ("best", "last"))
print(f"best epoch {best}, last epoch {last}")
# versioned names (best-TAG.safetensors, last-TAG.state.*) and those of older runs (best.*, last.state.*)
skip = [p.name for p in run.iterdir()
        if (p.name.startswith(("best.", "best-")) if best == last else ".state." in p.name)]
(Path(sys.argv[1]) / "pack-skipped.txt").write_text("\n".join(skip) + "\n")
print("left out:", skip)
EOF
tar -C "$(dirname "$RUN")" -cf - -X "$RUN/pack-skipped.txt" --exclude='*.tmp' "$(basename "$RUN")" \
  | split -b 15M - "$OUT/run.tar."
ls -la "$OUT"
echo "done ($(elapsed) s)"
