"""The ZINC learning curve: test reconstruction, validation NLL and GMM validity of weight snapshots of
a training run, against cumulative CPU-hours; appended to bench/results/zinc-grae/curve.json and drawn
as curve.png.

    python bench/zinc_curve.py --run training/zinc-grae --snapshots /tmp/snap --segment "session 7: cosine"
        --cpu-seconds-per-step 0.49 [--steps 3438,6876,...] [--start-weights zinc-grae] [--prior-cpu-hours 2.02]

Each snapshot ``step-N.safetensors`` (fp32 weights the run committed at update N) is measured with:
  - argmax reconstruction of all 5,000 test molecules (RDKit canonical match), with the semantic layer
    (the default decoder), and without it at the segment's first and last point;
  - the masked NLL (nats/molecule) of 5,000 validation molecules;
  - RDKit validity of 1,000 samples of a 10-component GMM fitted on the codes of 20,000 training
    molecules (the shipped density uses all of them; a subsample keeps a point under a minute),
    with and without the semantic layer.
CPU-hours: ``--prior-cpu-hours`` (the run it started from) + N x ``--cpu-seconds-per-step``, the training
process's own CPU time per update (user + system, all its threads) measured on this machine while it
had the machine to itself -- what an update costs, whatever else ran beside it.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).parent / "results" / "zinc-grae"


def measure(net, ds, rows: dict, plain: bool = True, rng_seed: int = 0) -> dict:
    from grammar_rae.density import make_density
    from grammar_rae.metrics import canonical
    from grammar_rae.run import decode_strings, encode_rules, padded_rules

    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    T = net.config.max_length
    out = {}
    test = padded_rules(ds, T, rows["test"])
    want = canonical([ds.strings[i] for i in rows["test"]], True)
    with torch.no_grad():
        z_test = encode_rules(net, test)
    for on in ((True, False) if plain else (True,)):
        net.semantics = on
        back = canonical(decode_strings(net, z_test), True)
        out[f"test_recon{'' if on else '_plain'}"] = float(np.mean([a is not None and a == b for a, b in zip(back, want)]))
    val = padded_rules(ds, T, rows["val"])
    with torch.no_grad():
        nll = torch.cat([net.reconstruction_loss(val[i:i + 1000].long()) for i in range(0, len(val), 1000)])
    out["val_nll"] = float(nll.float().mean())
    codes = encode_rules(net, padded_rules(ds, T, rows["train"]))
    q = make_density("gmm", k=10, seed=rng_seed).fit(codes)
    z = q.sample(1000, seed=rng_seed)
    for on in ((True, False) if plain else (True,)):
        net.semantics = on
        s = decode_strings(net, z)
        ok = [x is not None and Chem.MolFromSmiles(x) is not None for x in s]
        out[f"gmm_valid{'' if on else '_plain'}"] = float(np.mean(ok))
    net.semantics = True
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="training/zinc-grae")
    ap.add_argument("--snapshots", default="/tmp/snap")
    ap.add_argument("--steps", default=None, help="comma-separated snapshot steps (default: all)")
    ap.add_argument("--segment", required=True, help="name of this training segment (what was run)")
    ap.add_argument("--start-weights", default=None, help="also measure these weights as the segment's step 0 "
                    "(e.g. the shipped model it started from: zinc-grae)")
    ap.add_argument("--prior-cpu-hours", type=float, default=0.0)
    ap.add_argument("--cpu-seconds-per-step", type=float, required=True,
                    help="the training process's CPU seconds per update (from /proc/PID/stat over a stretch)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from grammar_rae.checkpoint import load_model_state, read_json
    from grammar_rae.data.parsed import prepare_dataset
    from grammar_rae.data.shipped import resolve_source
    from grammar_rae.run import load_run, load_split

    run = Path(a.run)
    net, meta = load_run(run)
    ds = prepare_dataset(net.grammar, resolve_source(meta["data"]["source"], meta["data"]["sha256"]), quiet=True)
    tr, va, te = load_split(run, meta)
    rng = np.random.default_rng(0)
    rows = {"test": te[:5000], "val": np.sort(rng.permutation(va)[:5000]), "train": np.sort(rng.permutation(tr)[:20000])}
    snap = Path(a.snapshots)
    steps = sorted(int(p.stem.split("-")[1]) for p in snap.glob("step-*.safetensors"))
    if a.steps:
        steps = [s for s in steps if s in {int(x) for x in a.steps.split(",")}]
    cfg = read_json(run / "run.json")["train"]
    points = []
    todo = ([(0, None)] if a.start_weights else []) + [(s, snap / f"step-{s}.safetensors") for s in steps]
    for step, path in todo:
        t0 = time.time()
        if path is None:
            net = load_run(a.start_weights)[0].float()
        else:
            load_model_state(net, path)
        m = measure(net, ds, rows, plain=(step, path) in (todo[0], todo[-1]))
        p = {"segment": a.segment, "step": step,
             "cpu_hours": round(a.prior_cpu_hours + step * a.cpu_seconds_per_step / 3600, 3), **m,
             "measure_seconds": round(time.time() - t0, 1)}
        print(json.dumps(p), flush=True)
        points.append(p)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "curve.json"
    curve = json.loads(path.read_text()) if path.is_file() else {"points": [], "segments": []}
    curve["points"] = [p for p in curve["points"] if p["segment"] != a.segment] + points
    curve["segments"] = [s for s in curve["segments"] if s["name"] != a.segment] + [{
        "name": a.segment, "run": str(run), "settings": {k: cfg.get(k) for k in (
            "schedule", "lr", "min_lr", "warmup_steps", "schedule_steps", "batch_size", "grad_clip", "threads")},
        "init_from": meta.get("init_from"), "prior_cpu_hours": a.prior_cpu_hours,
        "cpu_seconds_per_step": a.cpu_seconds_per_step,
        "measured": "test_recon: argmax, 5,000 test molecules; val_nll: 5,000 validation molecules; gmm_valid: "
                    "1,000 samples of a GMM on 20,000 training codes; *_plain: without the semantic layer"}]
    path.write_text(json.dumps(curve, indent=1) + "\n")
    plot(curve, OUT / "curve.png")
    print(f"wrote {path} and {OUT / 'curve.png'}")


def plot(curve: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted(curve["points"], key=lambda p: p["cpu_hours"])
    x = [p["cpu_hours"] for p in pts]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(x, [100 * p["test_recon"] for p in pts], "o-", label="argmax, semantic decoder")
    xp = [p for p in pts if "test_recon_plain" in p]
    axes[0].plot([p["cpu_hours"] for p in xp], [100 * p["test_recon_plain"] for p in xp], "s--", label="argmax, grammar only")
    axes[0].axhline(76.7, color="grey", ls=":", label="JT-VAE 76.7%")
    axes[0].set_ylabel("test reconstruction (%)")
    axes[1].plot(x, [p["val_nll"] for p in pts], "o-")
    axes[1].set_ylabel("validation NLL (nats / molecule)")
    axes[2].plot(x, [100 * p["gmm_valid"] for p in pts], "o-", label="semantic decoder")
    axes[2].plot([p["cpu_hours"] for p in xp], [100 * p["gmm_valid_plain"] for p in xp], "s--", label="grammar only")
    axes[2].set_ylabel("GMM samples RDKit-valid (%)")
    for ax in axes:
        ax.set_xlabel("cumulative CPU-hours")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=8)
    fig.suptitle(f"zinc-grae learning curve: {len(curve['segments'])} training segments (their settings: curve.json)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
