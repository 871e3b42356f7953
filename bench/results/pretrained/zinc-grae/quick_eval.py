"""The shipped zinc-grae, measured: argmax reconstruction of the 5,000 test molecules and 1,000 GMM
samples under RDKit. Writes quick_eval.json beside this file.    python bench/results/pretrained/zinc-grae/quick_eval.py"""
import json, os, time
from pathlib import Path

import numpy as np, torch
from grammar_rae.data.parsed import prepare_dataset
from grammar_rae.data.shipped import resolve_source
from grammar_rae.evaluate import training_canonical
from grammar_rae.metrics import canonical, generation_metrics
from grammar_rae.run import decode_strings, load_density, load_run, load_split, padded_rules
from grammar_rae.pretrained import resolve_run
torch.set_num_threads(int(os.environ.get("THREADS", 2)))
t0=time.time()
net, meta = load_run("zinc-grae")
ds = prepare_dataset(net.grammar, resolve_source(meta["data"]["source"], meta["data"]["sha256"]), quiet=True)
tr, va, te = load_split(resolve_run("zinc-grae"), meta)
rows = te[:5000]
rules = padded_rules(ds, 277, rows)
with torch.no_grad():
    back = decode_strings(net, net.encode(rules.long()).numpy())
want = [ds.strings[i] for i in rows]
hits = sum(a is not None and a == b for a, b in zip(canonical(back, True), canonical(want, True)))
q = load_density("zinc-grae", "gmm", 56)
s = decode_strings(net, q.sample(1000, seed=0))
m = generation_metrics(s, True, training_canonical=training_canonical([ds.strings[i] for i in tr], True, None, resolve_run("zinc-grae")))
out = {"epochs": meta["pretrained"]["epochs"], "test_rows": 5000, "argmax_reconstruction_test": hits/5000, "gmm_1000": m, "seconds": time.time()-t0}
print(json.dumps(out, indent=1))
json.dump(out, open(Path(__file__).with_name("quick_eval.json"), "w"), indent=1)
