"""`grammar-rae demo`: the product in a few minutes, offline, on a laptop CPU.

With the shipped ``zinc-grae`` it reconstructs held-out ZINC250k molecules, samples new ones from
the ex-post GMM (validity, uniqueness and novelty checked with RDKit), draws them and an
interpolation between two molecules, runs a short latent-space BO on penalised logP; then it trains
a small expression GrammarRAE from scratch to show training. Every number is measured as it runs.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch


def run_demo(out: str | Path = "runs/demo", n_recon: int = 300, n_samples: int = 500, bo_rows: int = 2000,
             expr_rows: int = 30_000, expr_epochs: int = 4, cache_dir=None, log=print, decoding=None) -> dict:
    """``grammar-rae demo``. ``decoding``: how molecules are decoded (a DecodeOptions; default: the
    semantic layer with 16 retries)."""
    from .data.parsed import prepare_dataset
    from .data.shipped import resolve_source
    from .evaluate import molecule_grid, training_canonical
    from .io import write_lines
    from .metrics import canonical, generation_metrics
    from .pretrained import resolve_run
    from .run import decode_strings, load_density, load_split, padded_rules

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    facts: dict = {}
    t_all = time.time()

    # 1. the shipped molecule model
    t0 = time.time()
    from .api import load

    model = load("zinc-grae", device="cpu", decoding=decoding)
    net, meta = model.net, model.meta
    ds = prepare_dataset(net.grammar, resolve_source(meta["data"]["source"], meta["data"]["sha256"], cache_dir),
                         cache_dir=cache_dir, quiet=True)
    shipped = resolve_run("zinc-grae")
    train_rows, _, test_rows = load_split(shipped, meta)
    about = meta.get("pretrained", {})
    log(f"[1/5] zinc-grae: {meta['label']} GrammarRAE ({meta['model']['arch']}, latent {meta['model']['latent_dim']}), "
        f"trained {about.get('epochs', '?')} epochs on {meta['data']['train']:,} ZINC250k molecules")

    # 2. reconstruction of held-out molecules (the GrammarVAE test set: the first 5,000 rows)
    rows = test_rows[:n_recon]
    rules = padded_rules(ds, net.config.max_length, rows)
    with torch.no_grad():
        back = decode_strings(net, net.encode(rules.long()).numpy())
    want = [ds.strings[i] for i in rows]
    hits = sum(a is not None and a == b for a, b in zip(canonical(back, True), canonical(want, True)))
    facts["reconstruction"] = hits / len(rows)
    write_lines(out / "reconstructions.tsv", [f"{a}\t{b or ''}" for a, b in zip(want, back)])
    log(f"[2/5] reconstruction of {len(rows)} held-out molecules (argmax decode, canonical SMILES equal): "
        f"{facts['reconstruction']:.1%}  ({time.time() - t0:.0f} s)  -> {out / 'reconstructions.tsv'}")

    # 3. new molecules from the ex-post GMM
    t0 = time.time()
    q = load_density("zinc-grae", "gmm", net.config.latent_dim)
    samples = decode_strings(net, q.sample(n_samples, seed=0))
    train_canonical = training_canonical([ds.strings[i] for i in train_rows], True, cache_dir, shipped)
    m = generation_metrics(samples, True, training_canonical=train_canonical)
    facts["samples"] = m
    write_lines(out / "samples.smi", samples)
    molecule_grid(samples, out / "samples.png", n=24)
    log(f"[3/5] {n_samples} GMM samples, checked with RDKit: {m['validity']:.1%} valid, {m['uniqueness']:.1%} unique, "
        f"{m.get('novelty', float('nan')):.1%} novel  ({time.time() - t0:.0f} s)  -> {out / 'samples.png'}")
    a, b = ds.strings[test_rows[0]], ds.strings[test_rows[1]]
    ends = net.encode(padded_rules(ds, net.config.max_length, test_rows[:2]).long()).detach().numpy()
    t = np.linspace(0, 1, 8)[:, None]
    path = decode_strings(net, (1 - t) * ends[0] + t * ends[1])
    molecule_grid(path, out / "interpolation.png", n=8, per_row=8, keep_order=True)
    write_lines(out / "interpolation.smi", path)
    log(f"      interpolation {a} -> {b} in 8 steps  -> {out / 'interpolation.png'}")

    # 4. a short latent-space BO on penalised logP, fresh each time (a state left by an earlier demo,
    # perhaps of another version with other settings, would be resumed or refused)
    t0 = time.time()
    import shutil

    from .optimize.bo import optimize

    shutil.rmtree(out / "bo" / "state", ignore_errors=True)
    report = optimize(model, "logp", out / "bo", iterations=3, batch=10, seeds=[1], n_decode=20, device="cpu",
                      gp_kw={"n_inducing": 100, "epochs": 15, "lr": 5e-3, "batch": 1000}, progress=False,
                      log=lambda msg: None, data_rows=bo_rows, cache_dir=cache_dir)
    s = report["summary"]
    facts["bo"] = {"best": s["top3"][0]["score"] if s["top3"] else None, "data_best": report["data_best"],
                   "fraction_valid": s["fraction_valid"]["mean"]}
    best = s["top3"][0] if s["top3"] else {"string": "-", "score": float("nan")}
    log(f"[4/5] BO on penalised logP (GP on {bo_rows} molecules' codes, 3 x 10 points): best {best['score']:.2f} "
        f"({best['string']}) vs {report['data_best']:.2f} in its data; {s['fraction_valid']['mean']:.0%} valid  "
        f"({time.time() - t0:.0f} s)  -> {out / 'bo' / 'best_vs_evaluations.png'}")

    # 5. training: a small expression GrammarRAE from scratch
    t0 = time.time()
    from .data.shipped import shipped_path
    from .recipes import train_config
    from .run import train_run

    expr_data = out / "expressions.txt"
    lines = shipped_path("expressions", cache_dir).read_text().splitlines()
    pick = np.sort(np.random.default_rng(0).choice(len(lines), expr_rows, replace=False))
    write_lines(expr_data, [lines[i] for i in pick])
    run = train_run(out / "expr-rae", "expr", "rae-l2", data=expr_data, resume=True, progress=False, cache_dir=cache_dir,
                    train=train_config("expr", epochs=expr_epochs), log=lambda msg: log("      " + msg))
    from .checkpoint import read_json

    hist = read_json(run / "checkpoints" / "last.json")["history"]
    facts["expr_reconstruction"] = hist[-1].get("val_recon")
    log(f"[5/5] trained an expression GrammarRAE on {expr_rows:,} expressions for {expr_epochs} epochs: "
        f"{facts['expr_reconstruction']:.1%} of validation rows reconstructed exactly  ({time.time() - t0:.0f} s)"
        f"  -> {run}")
    facts["seconds"] = round(time.time() - t_all, 1)
    log(f"done in {facts['seconds']:.0f} s; outputs in {out}")
    return facts

