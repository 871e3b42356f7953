#!/bin/bash
# The CLI's outputs before and after a change, on the same inputs and the same model files:
#   bash bench/cli_compare.sh OLD_TREE NEW_TREE OUT_DIR
# Each tree is a checkout of grammar-rae; both run with this virtualenv's python and the OLD tree's
# shipped model directories (so a re-shipped model does not count as a change). Writes OUT_DIR/{old,new}/
# (every command's stdout, stderr and files) and OUT_DIR/diff.txt; exits non-zero when they differ.
set -u
old=$(cd "$1" && pwd); new=$(cd "$2" && pwd); out=$3
py=${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
rm -rf "$out"; mkdir -p "$out"
inputs="$out/inputs"; mkdir -p "$inputs"
printf 'sin( x ) + 1\nx * x\nsin(\n%s\nexp( x ) / 3\n\n1 + x\n' "$(printf 'x + %.0s' {1..8})x" > "$inputs/exprs.txt"
printf 'CCO\nOc1ccccc1\nC1CC\nCC(=O)Nc1ccc(O)cc1\nnot a molecule\nc1ccncc1\n' > "$inputs/mols.smi"
ZINC=$old/grammar_rae/pretrained/zinc-grae; EXPR=$old/grammar_rae/pretrained/expr-grae
for side in old new; do
  tree=${!side}; d="$out/$side"; mkdir -p "$d"
  run() {  # name, then the grammar-rae arguments
    local name=$1; shift
    (cd "$tree" && "$py" -c "from grammar_rae.cli import main; main()" "$@") > "$d/$name.out" 2> "$d/$name.err"
    echo "exit $?" >> "$d/$name.out"
  }
  run sample-expr sample --run "$EXPR" --n 40 --seed 1 --out "$d/sample-expr.txt"
  run sample-expr-stoch sample --run "$EXPR" --n 40 --seed 2 --stochastic --temperature 0.7 --out "$d/sample-expr-stoch.txt"
  run sample-zinc sample --run "$ZINC" --n 30 --density gmm --out "$d/sample-zinc.smi"
  run sample-zinc-plain sample --run "$ZINC" --n 30 --no-semantics --out "$d/sample-zinc-plain.smi"
  run encode-expr encode --run "$EXPR" --input "$inputs/exprs.txt" --out "$d/z-expr.csv"
  run decode-expr decode --run "$EXPR" --input "$d/z-expr.csv" --out "$d/back-expr.txt"
  run encode-zinc encode --run "$ZINC" --input "$inputs/mols.smi" --out "$d/z-zinc.csv"
  run decode-zinc decode --run "$ZINC" --input "$d/z-zinc.csv" --out "$d/back-zinc.smi"
  run reconstruct-expr reconstruct --run "$EXPR" --input "$inputs/exprs.txt" --out "$d/rec-expr.tsv"
  run reconstruct-zinc reconstruct --run "$ZINC" --input "$inputs/mols.smi" --out "$d/rec-zinc.tsv"
  run reconstruct-zinc-plain reconstruct --run "$ZINC" --input "$inputs/mols.smi" --no-semantics
  run pretrained-list pretrained list
  run sample-missing sample --run "$out/no-such-run" --out "$d/x.txt"
  # paths inside the outputs name the side: make them the same
  sed -i "s#$d#SIDE#g; s#$tree#TREE#g" "$d"/*.out "$d"/*.err
done
diff -r "$out/old" "$out/new" > "$out/diff.txt"; rc=$?
echo "$(ls "$out/old" | wc -l) files per side compared; diff lines: $(wc -l < "$out/diff.txt")"
exit $rc
