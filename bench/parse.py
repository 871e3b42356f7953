"""Parsing speed: this project's exact parser against the GrammarVAE method (nltk.ChartParser),
on the same ZINC250k molecules, in one run, on one core. Prints both rates and their ratio,
then the scaling of parse_many over cores.

    python bench/parse.py [--smiles PATH] [--reference-n 300] [--n 50000]
"""
import argparse
import os
import time
from pathlib import Path

from grammar_rae import load_grammar
from grammar_rae.grammar.reference import nltk_parse

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared/data/zinc/250k_rndm_zinc_drugs_clean.smi"


def rate(fn, items, min_seconds=1.0):
    """Items per second of fn over items, repeating the pass until min_seconds have elapsed."""
    n, t0 = 0, time.perf_counter()
    while True:
        for x in items:
            fn(x)
        n += len(items)
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
            return n / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smiles", default=str(DEFAULT), help="a SMILES file (default: ZINC250k beside the project)")
    ap.add_argument("--reference-n", type=int, default=300, help="molecules timed with NLTK (slow: ~40/s)")
    ap.add_argument("--n", type=int, default=50_000, help="molecules for the throughput and scaling runs")
    args = ap.parse_args()
    if not Path(args.smiles).is_file():
        raise SystemExit(f"no SMILES file at {args.smiles}; pass --smiles PATH")
    with open(args.smiles) as f:
        mols = [s for s in (line.strip() for line in f) if s]
    g = load_grammar("smiles")
    p = g.parser
    same = mols[: args.reference_n]
    print(f"grammar smiles: {p.n_states} LR states; C driver {'on' if p.accelerated else 'OFF'}")

    t0 = time.perf_counter()
    ref = [nltk_parse(g, s) for s in same]
    ref_rate = len(same) / (time.perf_counter() - t0)
    assert [g.parse(s) for s in same] == ref, "the parsers disagree"
    ours_same = rate(g.parse, same)
    py_same = rate(p.parse_python, same)
    print(f"same {len(same)} molecules, one core:")
    print(f"  nltk.ChartParser (GrammarVAE method) {ref_rate:10.1f} molecules/s")
    print(f"  grammar-rae, pure-Python driver      {py_same:10.1f} molecules/s  (ratio {py_same / ref_rate:.0f}x)")
    print(f"  grammar-rae                          {ours_same:10.1f} molecules/s")
    print(f"RATIO vs NLTK: {ours_same / ref_rate:.0f}x")

    many = mols[: args.n]
    one = rate(g.parse, many, min_seconds=0.5)
    print(f"\nthroughput on {len(many)} molecules, one core: {one:,.0f} molecules/s")
    for w in sorted({1, 2, os.cpu_count() or 1}):
        t0 = time.perf_counter()
        g.parse_many(many, workers=w, chunk_size=2000)
        print(f"  parse_many(workers={w}): {len(many) / (time.perf_counter() - t0):,.0f} molecules/s")


if __name__ == "__main__":
    main()
