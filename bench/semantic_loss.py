"""Do the semantic masks help in training? (issue 24, item 4: SD-VAE trains its decoder under the same
attribute masks it decodes with; here that is measured, not assumed.)

Two arms fine-tune the same weights on the same batches in the same order, with the same seed; they differ
only in the reconstruction loss's normaliser at each step:

  plain     the grammar's mask (the rules of the true rule's left-hand side), as every model so far
  semantic  that and the semantic layer's three tiers (semantics.derivation_masks), so no probability is
            spent on rules the decoder would never be allowed to choose

and each is measured the same way afterwards: validation NLL under both normalisers (nats/molecule; the
semantic one is what the default decoder sees), argmax reconstruction of test molecules and the RDKit
validity of 1,000 GMM samples (the shipped GMM's codes), both with the default (semantic) decoder.
``--updates 0`` measures the starting weights. The masks of the semantic arm are computed before its
training, in chunks of similar lengths, and their time is reported apart from the training time.

    python bench/semantic_loss.py --arm plain --updates 400 --out bench/results/semantic-loss/plain.json
    python bench/semantic_loss.py --arm semantic --updates 400 --out bench/results/semantic-loss/semantic.json
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from bench_io import save_json


def batches_of(ds, rows, net, batch: int, seed: int, semantic: bool, chunk: int = 2048):
    """Batches of ``rows`` of similar lengths (cut to their longest derivation), in a seeded order, with
    their derivation masks when ``semantic`` (None otherwise); and the seconds the masks took."""
    from grammar_rae.models.semantics import derivation_masks
    from grammar_rae.run import padded_rules

    g, T = net.grammar, net.config.max_length
    rules = padded_rules(ds, T, rows).long()
    order = (rules != g.padding_index).sum(1).argsort()
    rules = rules[order]
    masks, took = [], 0.0
    if semantic:
        t0 = time.process_time()
        for i in range(0, len(rules), chunk):
            masks.append(derivation_masks(g, rules[i:i + chunk]))
        took = time.process_time() - t0
    out = []
    for i in range(0, len(rules) - batch + 1, batch):
        r = rules[i:i + batch]
        t = int((r != g.padding_index).sum(1).max())
        m = masks[i // chunk][i % chunk:i % chunk + batch, :t] if semantic else None
        out.append((r[:, :t], m))
    perm = np.random.default_rng(seed).permutation(len(out))
    return [out[k] for k in perm], took


def evaluate(net, ds, va, te, run: str, n_val: int, n_test: int, n_gmm: int) -> dict:
    from grammar_rae.metrics import canonical
    from grammar_rae.models.semantics import derivation_masks
    from grammar_rae.run import decode_strings, load_density, padded_rules

    net.eval()
    g, T = net.grammar, net.config.max_length
    rules = padded_rules(ds, T, va[:n_val]).long()
    nll_plain = nll_sem = 0.0
    with torch.no_grad():
        for i in range(0, len(rules), 500):
            r = rules[i:i + 500]
            t = int((r != g.padding_index).sum(1).max())
            r = r[:, :t]
            nll_plain += float(net.reconstruction_loss(r).sum())
            nll_sem += float(net.reconstruction_loss(r, derivation_masks(g, r)).sum())
        test = padded_rules(ds, T, te[:n_test]).long()
        z = net.encode(test)
    back = decode_strings(net, z.numpy())
    want = [ds.strings[i] for i in te[:n_test]]
    hits = sum(a is not None and a == b for a, b in zip(canonical(back, True), canonical(want, True)))
    zg = load_density(run, "gmm", net.config.latent_dim).sample(n_gmm, seed=0)
    samples = decode_strings(net, zg)
    valid = [c for c in canonical(samples, True) if c is not None]
    return {"val_rows": len(rules), "val_nll_grammar_mask": nll_plain / len(rules),
            "val_nll_semantic_mask": nll_sem / len(rules), "test_rows": n_test,
            "argmax_reconstruction": hits / n_test, "gmm_samples": n_gmm, "gmm_valid": len(valid) / n_gmm,
            "gmm_unique_of_valid": len(set(valid)) / max(len(valid), 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="zinc-grae")
    ap.add_argument("--arm", choices=["plain", "semantic"], default="plain")
    ap.add_argument("--updates", type=int, default=400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-4, help="peak of the cosine (after 20 warm-up updates)")
    ap.add_argument("--min-lr", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-val", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--n-gmm", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from grammar_rae.data.parsed import prepare_dataset
    from grammar_rae.data.shipped import resolve_source
    from grammar_rae.rundir import RunDir
    from grammar_rae.run import load_run, load_split

    net, meta = load_run(a.run)
    ds = prepare_dataset(net.grammar, resolve_source(meta["data"]["source"], meta["data"]["sha256"]), quiet=True)
    tr, va, te = load_split(RunDir.open(a.run).path, meta)
    rows = np.sort(np.random.default_rng(a.seed).choice(tr, size=min(a.updates * a.batch, len(tr)), replace=False))
    report = {"run": a.run, "checkpoint": meta["checkpoint"], "arm": a.arm, "updates": a.updates, "batch": a.batch,
              "lr": a.lr, "min_lr": a.min_lr, "seed": a.seed, "threads": a.threads, "config": net.config.to_dict()}
    batches, mask_seconds = batches_of(ds, rows, net, a.batch, a.seed, a.arm == "semantic") if a.updates else ([], 0.0)
    report["mask_cpu_seconds"] = round(mask_seconds, 1)
    torch.manual_seed(a.seed)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    net.train()
    t0, losses, warm = time.process_time(), [], 20
    for i, (r, m) in enumerate(batches):
        t = min(1.0, max(0.0, (i - warm) / max(1, len(batches) - warm)))
        lr = min(1.0, (i + 1) / warm) * (a.min_lr + (a.lr - a.min_lr) * 0.5 * (1 + math.cos(math.pi * t)))
        for group in opt.param_groups:
            group["lr"] = lr
        loss, terms = net.loss(r, m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        losses.append(float(terms["rec"].detach()))
        if (i + 1) % 50 == 0:
            print(f"{a.arm} update {i + 1}/{len(batches)}: rec {np.mean(losses[-50:]):.3f} lr {lr:.2e}", flush=True)
    report["train_cpu_seconds"] = round(time.process_time() - t0, 1)
    report["train_rec_last50"] = float(np.mean(losses[-50:])) if losses else None
    report.update(evaluate(net, ds, va, te, a.run, a.n_val, a.n_test, a.n_gmm))
    print(json.dumps(report, indent=1))
    save_json(report, a.out)


if __name__ == "__main__":
    main()
