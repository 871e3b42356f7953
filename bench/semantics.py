"""The SMILES semantic layer on a trained model: RDKit validity of decoded samples with and without
it, why the invalid ones fail, and the time it costs (same codes, same run). Three decoders: the
grammar alone, the semantic masks alone (no copies of flagged rows), and the default (masks, and sampled
copies of the rows they flag, in the same decoding loop; GrammarAE.decode). Times: best of ``--repeat``
interleaved decodes; work (loop steps, row-steps, copies: the same on any machine) counted on one more
decode of each, with that decode's time split into the network's steps, the semantic layer's masks and
updates, and the rest. ``valid_per_s``: RDKit-valid molecules per second, what sampling yields.

    python bench/semantics.py --run zinc-grae --n 1000 --batch 1000 --out bench/results/semantics/zinc-grae-1000.json
    python bench/semantics.py --run zinc-grae --n 4096 --batch 4096 --out bench/results/semantics/zinc-grae-4096.json

``--batch``: codes decoded at once (default: the library's, run.DECODE_BATCH; the semantic layer's cost is
mostly per step, so larger batches share it out).
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import numpy as np
import torch

from bench_io import save_json


def failure(smiles: str | None) -> str:
    """Why RDKit refuses a SMILES string: 'valid', 'incomplete' (no string), 'unclosed ring',
    'kekulize', 'valence', 'other' (RDKit's own messages, captured)."""
    if smiles is None:
        return "incomplete"
    from rdkit import Chem, rdBase
    from io import StringIO
    import sys

    buf = StringIO()
    rdBase.LogToPythonStderr()
    old, sys.stderr = sys.stderr, buf
    try:
        mol = Chem.MolFromSmiles(smiles)
    finally:
        sys.stderr = old
    if mol is not None:
        return "valid"
    msg = buf.getvalue()
    if "unclosed ring" in msg:
        return "unclosed ring"
    if "kekulize" in msg.lower():
        return "kekulize"
    if "valence" in msg.lower():
        return "valence"
    if "duplicat" in msg.lower():
        return "duplicate ring bond"
    return "other"


def timed(net, z: np.ndarray, semantics: bool, redecodes: int, batch: int):
    from grammar_rae.run import decode_strings

    net.semantics, net.redecodes = semantics, redecodes
    t0 = time.perf_counter()
    out = decode_strings(net, z, batch=batch)
    return out, time.perf_counter() - t0


class Work:
    """Counts what a decode does, whatever the machine's speed: loop steps, row-steps (rows stepped, summed
    over the steps: the GRU's and the masks' work), copies added to the working set; and, given the model,
    where that decode's time went: the network's steps (``net.decoder.step``) and the semantic layer's
    masks and updates (the rest is the loop's own bookkeeping: stacks, copies, finished rows)."""

    def __init__(self, net=None):
        self.steps = self.row_steps = self.copies = 0
        self.network_s = self.semantic_s = 0.0
        self.net = net

    def _timed(self, cls, name, field):
        real, work = getattr(cls, name), self

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                setattr(work, field, getattr(work, field) + time.perf_counter() - t0)

        self.real.append((cls, name, real))
        setattr(cls, name, timed)

    def __enter__(self):
        from grammar_rae.models.decoding import StackMachine
        from grammar_rae.models.semantics import SemanticState

        self.real = [(StackMachine, k, getattr(StackMachine, k)) for k in ("choose", "extend")]
        work, real = self, dict((k, f) for _, k, f in self.real)

        def choose(m, scores):
            work.steps, work.row_steps = work.steps + 1, work.row_steps + len(scores)
            return real["choose"](m, scores)

        def extend(m, k):
            work.copies += k
            return real["extend"](m, k)

        StackMachine.choose, StackMachine.extend = choose, extend
        for name in ("mask", "update"):
            self._timed(SemanticState, name, "semantic_s")
        if self.net is not None:
            self._timed(type(self.net.decoder), "step", "network_s")
        return self

    def __exit__(self, *exc):
        for cls, name, f in reversed(self.real):
            setattr(cls, name, f)

    def as_dict(self) -> dict:
        out = {"loop_steps": self.steps, "row_steps": self.row_steps, "copies": self.copies}
        if self.net is not None:
            out.update(network_s=round(self.network_s, 2), semantic_layer_s=round(self.semantic_s, 2))
        return out


def measure(net, z: np.ndarray, semantics: bool, redecodes: int, batch: int, seconds: float | None = None) -> dict:
    """RDKit validity and failures of one decoder's strings, and its work (Work); ``seconds``: its time if
    measured already (best of interleaved repeats, main), else this decode's."""
    with Work(net) as work:
        out, took = timed(net, z, semantics, redecodes, batch)
    parts = work.as_dict()
    if "network_s" in parts:   # this decode's own time, split (the row's `seconds` may be another decode's)
        parts["decode_s"] = round(took, 2)
    seconds = took if seconds is None else seconds
    reasons = [failure(s) for s in out]
    why = Counter(reasons)
    valid = [s for s, r in zip(out, reasons) if r == "valid"]
    from grammar_rae.metrics import canonical_smiles

    canon = [canonical_smiles(s) for s in valid]
    return {"semantics": semantics, "redecodes": redecodes if semantics else 0, "n": len(out), "valid": why["valid"] / len(out),
            "unique_of_valid": len(set(canon)) / max(len(canon), 1),
            "failures": {k: v / len(out) for k, v in sorted(why.items()) if k != "valid"},
            "seconds": round(seconds, 2), "molecules_per_s": round(len(out) / seconds, 1),
            "valid_per_s": round(len(valid) / seconds, 1), "work": parts}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="zinc-grae")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--density", default="gmm", choices=["prior", "gaussian", "gmm"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timed decodes of each decoder, interleaved (best is kept)")
    ap.add_argument("--batch", type=int, default=None, help="codes decoded at once (default: run.DECODE_BATCH)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from grammar_rae.run import DECODE_BATCH, load_density, load_run

    batch = a.batch or DECODE_BATCH

    net, _ = load_run(a.run)
    z = load_density(a.run, a.density, net.config.latent_dim).sample(a.n, seed=a.seed)
    from grammar_rae.models.grammar_ae import REDECODE_ROUND, REDECODES

    settings = [(False, 0), (True, 0), (True, REDECODES)]
    best = [float("inf")] * len(settings)
    for _ in range(a.repeat):   # interleaved, best of the repeats: the machine is noisy
        for k, (sem, red) in enumerate(settings):
            best[k] = min(best[k], timed(net, z, sem, red, batch)[1])
    rows = [measure(net, z, sem, red, batch, seconds=t) for (sem, red), t in zip(settings, best)]
    speed = lambda r, key="molecules_per_s": round(r[key] / max(rows[0][key], 1e-9), 3)  # noqa: E731
    report = {"run": a.run, "density": a.density, "n": a.n, "batch": batch, "seed": a.seed, "threads": a.threads,
              "repeat": a.repeat,
              "redecode_round": REDECODE_ROUND,
              "rows": rows, "speed_ratio_masks_vs_plain": speed(rows[1]),
              "speed_ratio_default_vs_plain": speed(rows[2]),
              # valid molecules per second against the grammar alone's (what a user sampling molecules gets)
              "valid_rate_ratio_masks_vs_plain": speed(rows[1], "valid_per_s"),
              "valid_rate_ratio_default_vs_plain": speed(rows[2], "valid_per_s")}
    print(json.dumps(report, indent=1))
    save_json(report, a.out)


if __name__ == "__main__":
    main()
