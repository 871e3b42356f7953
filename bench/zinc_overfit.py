"""Where the ZINC model's errors come from: the same measures on training rows and on test rows of the
shipped (or any) run -- argmax reconstruction (RDKit canonical match, the default decoder) and the
masked NLL in nats/molecule. A wide gap says the network has learned its training molecules better
than molecules in general (generalisation, not capacity or optimisation, is what limits it).

    python bench/zinc_overfit.py --run zinc-grae --n 2000 --out bench/results/zinc-grae/overfit.json
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bench_io import save_json


def measure(net, ds, rows, batch=500) -> dict:
    from grammar_rae.metrics import canonical
    from grammar_rae.run import decode_strings, padded_rules

    rules = padded_rules(ds, net.config.max_length, rows)
    with torch.no_grad():
        z = torch.cat([net.encode(rules[i:i + batch].long()) for i in range(0, len(rules), batch)])
        nll = sum(float(net.loss(rules[i:i + batch].long())[1]["rec"]) * len(rules[i:i + batch])
                  for i in range(0, len(rules), batch)) / len(rules)
    back = decode_strings(net, z.numpy())
    want = [ds.strings[i] for i in rows]
    hits = sum(a is not None and a == b for a, b in zip(canonical(back, True), canonical(want, True)))
    return {"rows": len(rows), "argmax_reconstruction": hits / len(rows), "masked_nll": nll}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="zinc-grae")
    ap.add_argument("--n", type=int, default=2000, help="rows of each split (the first of the test split; a "
                                                        "seeded sample of the training rows)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from grammar_rae.data.parsed import prepare_dataset
    from grammar_rae.data.shipped import resolve_source
    from grammar_rae.rundir import RunDir
    from grammar_rae.run import load_run, load_split

    t0 = time.time()
    net, meta = load_run(a.run)
    net.eval()
    ds = prepare_dataset(net.grammar, resolve_source(meta["data"]["source"], meta["data"]["sha256"]), quiet=True)
    tr, _, te = load_split(RunDir.open(a.run).path, meta)
    train_rows = np.sort(np.random.default_rng(0).choice(tr, size=min(a.n, len(tr)), replace=False))
    report = {"run": a.run, "checkpoint": meta["checkpoint"], "train": measure(net, ds, train_rows),
              "test": measure(net, ds, te[:a.n])}
    report["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(report, indent=1))
    save_json(report, a.out)


if __name__ == "__main__":
    main()
