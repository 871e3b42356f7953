"""Where the semantic masks corner decodes: for each first decode (argmax, no copies) of ``--n`` GMM codes
of a shipped model, the step at which some tier first left no rule -- which tier (2: valence/aromaticity,
3: Kekule parity; the ring-structure tier never empties), which left-hand side was being expanded, whether
any atom can still follow (``last``), how many rings were open -- counted by class, with examples (the
SMILES derived so far). Cornered first decodes are what the default decoder pays copies for
(BENCHMARKS.md, "The SMILES semantic layer"): a mask that refuses a class one step earlier than the dead
end does not help; one that sees the dead end where it is made removes the class.

    python bench/corners.py --run zinc-grae --n 1000 --out bench/results/semantics/corners-1000.json
"""
from __future__ import annotations

import argparse
import random
from collections import Counter

import torch

from bench_io import save_json


def partial_smiles(grammar, rules) -> str:
    """The leftmost derivation of ``rules`` so far: terminals, and <non-terminals> still to expand."""
    from nltk.grammar import Nonterminal

    syms = [Nonterminal(grammar.start_symbol)]
    for r in rules:
        i = next((k for k, s in enumerate(syms) if isinstance(s, Nonterminal)), None)
        if i is None:
            break
        syms[i:i + 1] = list(grammar.nltk_productions[r].rhs())
    return "".join(s if isinstance(s, str) else f"<{s.symbol()}>" for s in syms)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="zinc-grae")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--density", default="gmm", choices=["prior", "gaussian", "gmm"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--examples", type=int, default=30)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    import grammar_rae
    import grammar_rae.models.grammar_ae as ga
    from grammar_rae.models.decoding import StackMachine

    m = grammar_rae.load(a.run, device="cpu")
    net, g = m.net, m.net.grammar
    z = torch.as_tensor(m.density(a.density).sample(a.n, seed=a.seed), dtype=torch.float32)
    found, step, real = [], [0], StackMachine.choose

    def choose(machine, scores):   # the tiers as StackMachine.choose builds them, before it chooses
        st = machine.semantic_state
        tiers = [machine.current_mask()]
        for extra in st.mask(machine):
            tiers.append(tiers[-1] & extra)
        empty = [~t.any(1) & (machine.sp > 0) for t in tiers]
        new = ~machine.cornered & empty[-1]
        if bool(new.any()):
            top, ahead, n_open = machine.top(), st._ahead(machine.top()), (st.open_atom >= 0).sum(1)
            for i in new.nonzero().flatten().tolist():
                found.append({"step": step[0], "row": i, "tier": min(k for k in range(len(empty)) if empty[k][i]),
                              "lhs": g.lhs_list[int(top[i])], "last": int(ahead[i]) == 0, "open_rings": int(n_open[i])})
        step[0] += 1
        return real(machine, scores)

    net.redecodes, ga.COMPACT_AT = 0, 0          # rows keep their index: the examples can be derived
    StackMachine.choose = choose
    try:
        out = net.decode(z)
    finally:
        StackMachine.choose = real
    classes = Counter((f["tier"], f["lhs"], f["last"], f["open_rings"]) for f in found)
    random.seed(0)
    examples = [{**f, "so_far": partial_smiles(g, out.rules[f["row"]].tolist()[:f["step"]])}
                for f in random.sample(found, min(a.examples, len(found)))]
    report = {"run": a.run, "density": a.density, "n": a.n, "seed": a.seed, "cornered": len(found),
              "classes": [{"tier": t, "lhs": l, "last": last, "open_rings": k, "count": c}
                          for (t, l, last, k), c in classes.most_common()],
              "examples": examples}
    print(f"{len(found)} of {a.n} first decodes cornered")
    for c in report["classes"]:
        print(f"  {c['count']:4d}  tier {c['tier']}  at {c['lhs']:<8s} last atom: {c['last']!s:<5s}  open rings {c['open_rings']}")
    save_json(report, a.out)


if __name__ == "__main__":
    main()
