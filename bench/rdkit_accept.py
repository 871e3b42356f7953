"""RDKit acceptance in the decoding loop (issue 36; DecodeOptions(rdkit=True), CLI --rdkit): the same GMM
codes of a run decoded four ways in one run, each timed (best of ``--repeat``, interleaved) against the
grammar-only decoder:

  grammar            the context-free grammar alone (the GrammarVAE's decoder)
  masks              the semantic layer's masks, no copies
  default            the semantic layer, cornered rows decoded again (16 copies)
  grammar+rdkit      the grammar alone, a molecule RDKit refuses decoded again (16 copies)
  semantics+rdkit    both: the semantic layer, and a molecule that is cornered or refused decoded again

For each: first-decode validity (that of the same decoder without copies), returned validity, the rows
whose first decode was flagged (``retried``; the others must be returned as first decoded), uniqueness and novelty of the valid ones, seconds, and valid molecules per second.

    python bench/rdkit_accept.py --run zinc-grae --n 10000 --threads 2 --out bench/results/rdkit-accept/zinc-grae-10000.json
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bench_io import save_json

DECODERS = {"grammar": dict(semantics=False, rdkit=False), "masks": dict(semantics=True, rdkit=False, retries=0),
            "default": dict(semantics=True, rdkit=False),
            "grammar+rdkit": dict(semantics=False, rdkit=True), "semantics+rdkit": dict(semantics=True, rdkit=True)}
# the first decode of each row is the decoder's own without copies (argmax: a row's first decode does not
# depend on the copies decoded beside it)
FIRST = {"grammar": "grammar", "masks": "masks", "default": "masks", "grammar+rdkit": "grammar",
         "semantics+rdkit": "masks"}


def decode(net, z, options, batch):
    strings, retried = [], []
    gen = torch.Generator().manual_seed(0)
    for i in range(0, len(z), batch):
        out = net.decode(z[i:i + batch], generator=gen, options=options)
        strings += out.strings
        retried.append(out.retried.numpy() if out.retried is not None else np.zeros(len(out.strings), bool))
    return strings, np.concatenate(retried)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="zinc-grae")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--density", default="gmm")
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from grammar_rae.api import load
    from grammar_rae.chem import rdkit_accepts
    from grammar_rae.metrics import canonical
    from grammar_rae.models.grammar_ae import DecodeOptions

    m = load(a.run, device="cpu")
    net = m.net
    z = torch.as_tensor(m.density(a.density).sample(a.n, seed=0), dtype=torch.float32)
    seconds = {k: [] for k in DECODERS}
    results = {}
    for _ in range(a.repeat):
        for name, kw in DECODERS.items():
            t0 = time.perf_counter()
            results[name] = decode(net, z, DecodeOptions(**kw), a.batch)
            seconds[name].append(time.perf_counter() - t0)
            print(name, round(seconds[name][-1], 1), "s", flush=True)
    from grammar_rae.evaluate import training_canonical
    from grammar_rae.data.parsed import prepare_dataset
    from grammar_rae.data.shipped import resolve_source
    from grammar_rae.run import load_split

    ds = prepare_dataset(net.grammar, resolve_source(m.meta["data"]["source"], m.meta["data"]["sha256"]), quiet=True)
    tr, _, _ = load_split(m.run_dir, m.meta)
    train = training_canonical([ds.strings[i] for i in tr], True, run_dir=m.run_dir)
    report = {"run": a.run, "density": a.density, "n": a.n, "batch": a.batch, "threads": a.threads, "decoders": {}}
    base = min(seconds["grammar"])
    valid_of = {name: rdkit_accepts([s or "" for s in strings]) & np.array([bool(s) for s in strings])
                for name, (strings, _) in results.items()}
    for name, (strings, retried) in results.items():
        valid = valid_of[name]
        canon = [c for c in canonical([s for s, v in zip(strings, valid) if v], True) if c]
        t = min(seconds[name])
        firsts = results[FIRST[name]][0]
        unchanged = all(a == b for a, b, r in zip(strings, firsts, retried) if not r)
        report["decoders"][name] = {
            **DECODERS[name], "first_decode_validity": float(valid_of[FIRST[name]].mean()),
            "unretried_rows_as_first_decoded": unchanged, "validity": float(valid.mean()),
            "retried": int(retried.sum()), "uniqueness": len(set(canon)) / max(len(canon), 1),
            "novelty": sum(c not in train for c in set(canon)) / max(len(set(canon)), 1),
            "seconds": round(t, 2), "time_ratio_vs_grammar": round(t / base, 3),
            "valid_per_s": round(valid.sum() / t, 1),
            "valid_per_s_ratio_vs_grammar": None}
    g = report["decoders"]["grammar"]["valid_per_s"]
    for r in report["decoders"].values():
        r["valid_per_s_ratio_vs_grammar"] = round(r["valid_per_s"] / g, 3)
    print(json.dumps(report, indent=1))
    save_json(report, a.out)


if __name__ == "__main__":
    main()
