"""Two ways of decoding cornered rows again, compared on the shipped zinc-grae: whatever source tree
``--tree`` points at (a checkout of the commit to measure) is imported, so each scheme runs its own code.

    git worktree add /tmp/copies 4fbd0d3        # copies in the loop (the default since the twelfth session)
    git worktree add /tmp/inplace 669d3bb       # fifteenth session: a cornered first decode starts again in place
    cp grammar_rae/grammar/_native*.so /tmp/copies/grammar_rae/grammar/   # (and into /tmp/inplace)
    # time: one process per decode pair, the two trees alternated, three rounds, nothing else running
    for r in 1 2 3; do for t in copies inplace; do python bench/retry_schemes.py --tree /tmp/$t --mode time; done; done
    # validity over the retries' seeds (REDECODE_SEED), the same 1,000 GMM codes
    python bench/retry_schemes.py --tree /tmp/copies --mode validity

``time`` prints one JSON line (grammar-only and default decode of ``--n`` GMM codes, one batch, one
thread); ``validity`` one line per seed (RDKit-valid fraction and failures of the default decoder).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", required=True, help="source tree whose grammar_rae is imported")
    ap.add_argument("--mode", choices=["time", "validity"], required=True)
    ap.add_argument("--n", type=int, default=None, help="GMM codes (default: 4096 for time, 1000 for validity)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    a = ap.parse_args()
    sys.path.insert(0, str(Path(a.tree).resolve()))
    sys.path.insert(1, str(Path(__file__).resolve().parent))
    import torch

    torch.set_num_threads(1)
    import grammar_rae
    import grammar_rae.models.grammar_ae as ga
    from grammar_rae.run import decode_strings

    m = grammar_rae.load("zinc-grae", device="cpu")
    net = m.net
    if a.mode == "time":
        n = a.n or 4096
        z = m.density("gmm").sample(n, seed=0)
        res = {}
        for name, sem, red in (("plain", False, 0), ("default", True, 16)):
            net.semantics, net.redecodes = sem, red
            t0 = time.perf_counter()
            decode_strings(net, z, batch=n)
            res[name] = time.perf_counter() - t0
        print(json.dumps({"tree": a.tree, "n": n, **res, "ratio": res["plain"] / res["default"]}), flush=True)
        return
    from semantics import failure

    n = a.n or 1000
    z = m.density("gmm").sample(n, seed=0)
    for seed in a.seeds:
        ga.REDECODE_SEED = seed
        out = decode_strings(net, z, batch=n)
        why = Counter(failure(s) for s in out)
        print(json.dumps({"tree": a.tree, "n": n, "redecode_seed": seed, "valid": why["valid"] / n,
                          "failures": dict(why)}), flush=True)


if __name__ == "__main__":
    main()
