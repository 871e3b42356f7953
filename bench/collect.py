"""Markdown tables for BENCHMARKS.md from finished runs (nothing is re-measured here).

    python bench/collect.py models RUN_DIR...     # after `grammar-rae evaluate --run RUN_DIR --gvae-protocol`
    python bench/collect.py bo BO_DIR...          # after `grammar-rae optimize ... --out BO_DIR`
"""
import json
import sys
from pathlib import Path


def pct(x):
    return "–" if x is None else f"{100 * x:.1f}%"


def models(dirs):
    print("| run | model | epochs | best val. rec. (nats) | recon. argmax test / val | recon. GVAE 10×100 test / val | "
          "valid prior | valid N | valid GMM | unique GMM | novel GMM | s/epoch |")
    print("|---" * 12 + "|")
    for d in map(Path, dirs):
        m = json.loads((d / "eval" / "metrics.json").read_text())
        last = json.loads((d / "checkpoints" / "last.json").read_text())
        hist = last.get("history", [])
        sec = sum(h["seconds"] for h in hist) / max(len(hist), 1)
        s = m["samples"]
        r = m["reconstruction"]
        print(f"| {d.name} | {m['model']} | {m['epochs']} | {last['best_val']:.3f} | "
              f"{pct(r.get('argmax'))} / {pct(r.get('val_argmax'))} | "
              f"{pct(r.get('gvae_10x100'))} / {pct(r.get('val_gvae_10x100'))} | "
              f"{pct(s['prior']['validity'])} | {pct(s['gaussian']['validity'])} | {pct(s['gmm']['validity'])} | "
              f"{pct(s['gmm']['uniqueness'])} | {pct(s['gmm'].get('novelty'))} | {sec:.{1 if sec < 10 else 0}f} |")


def bo(dirs):
    print("| BO run | seeds | fraction valid | average score | top-3 | GP test RMSE | GP test log-lik. |")
    print("|---" * 7 + "|")
    for d in map(Path, dirs):
        r = json.loads((d / "report.json").read_text())
        s = r["summary"]
        gp = [g for g in s["gp_test"] if g]
        rmse = sum(g["rmse"] for g in gp) / len(gp)
        ll = sum(g["log_likelihood"] for g in gp) / len(gp)
        top = ", ".join(f"{t['score']:.2f} `{t['string']}`" for t in s["top3"])
        n_seeds = len({e["seed"] for e in r["evaluations"]})
        print(f"| {d.name} | {n_seeds} | {s['fraction_valid']['mean']:.2f} ± {s['fraction_valid']['std']:.2f} | "
              f"{s['average_score']['mean']:.2f} ± {s['average_score']['std']:.2f} | {top} | {rmse:.3f} | {ll:.3f} |")


if __name__ == "__main__":
    {"models": models, "bo": bo}[sys.argv[1]](sys.argv[2:])
