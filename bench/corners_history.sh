#!/usr/bin/env bash
# Cornered first decodes and the default decoder's work for each zinc-grae the repository shipped (BENCHMARKS.md,
# "The SMILES semantic layer", sixteenth session). Each version's run directory is taken from its commit into
# /tmp/hist/COMMIT (the result files name that path), then measured by this tree's code: bench/corners.py
# (1,000 GMM codes of its own density) and bench/semantics.py (the same codes; work counts, validity; one
# repeat: the times are not used). Two versions at a time on two cores.
#
#     bash bench/corners_history.sh          # -> bench/results/semantics/history/{corners,semantics}-COMMIT.json
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=${PYTHON:-$root/.venv/bin/python}
out=$root/bench/results/semantics/history
mkdir -p "$out"
# the shipped versions: epoch 3 (14.3% test reconstruction), then 45.7%, 50.4%, 52.1%, 52.8% (= today's weights)
commits=(81a4360 9d19399 1fcaa77 21253fd f03cc7d)
one() {
  local c=$1 d=/tmp/hist/$1
  mkdir -p "$d" && git archive "$c" grammar_rae/pretrained/zinc-grae | tar -x -C "$d"
  local run=$d/grammar_rae/pretrained/zinc-grae
  (cd bench && OMP_NUM_THREADS=1 "$python" corners.py --run "$run" --n 1000 --out "$out/corners-$c.json" >/dev/null
   OMP_NUM_THREADS=1 "$python" semantics.py --run "$run" --n 1000 --batch 1000 --repeat 1 --out "$out/semantics-$c.json" >/dev/null)
  echo "$c done"
}
for ((i = 0; i < ${#commits[@]}; i += 2)); do
  one "${commits[i]}" &
  if ((i + 1 < ${#commits[@]})); then one "${commits[i + 1]}" & fi
  wait
done
"$python" - "$out" "${commits[@]}" <<'PY'
import json, sys
out, commits = sys.argv[1], sys.argv[2:]
print("commit   cornered  valid (grammar / masks / default)  default row-steps / grammar's  copies")
for c in commits:
    k, s = json.load(open(f"{out}/corners-{c}.json")), json.load(open(f"{out}/semantics-{c}.json"))
    r = s["rows"]
    print(f"{c}  {k['cornered']:4d}      {r[0]['valid']:.3f} / {r[1]['valid']:.3f} / {r[2]['valid']:.3f}"
          f"            {r[2]['work']['row_steps'] / r[0]['work']['row_steps']:.2f}            {r[2]['work']['copies']}")
PY
