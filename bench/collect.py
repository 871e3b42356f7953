"""Tables and figures for BENCHMARKS.md from finished runs (nothing is re-measured here), and the
small result files behind them, kept under bench/results/ so a figure never outlives its evidence.

    python bench/collect.py keep TABLE RUN_DIR...   # copy run.json, history, eval/metrics.json to bench/results/TABLE/
    python bench/collect.py models DIR...           # a model table (DIR: a run, or a bench/results/TABLE/RUN folder)
    python bench/collect.py bo BO_DIR...            # a BO table (after `grammar-rae optimize ... --out BO_DIR`)
    python bench/collect.py ttq OUT.png DIR...      # validation loss and reconstruction against wall-clock time
"""
import json
import shutil
import sys
from pathlib import Path


def pct(x):
    return "–" if x is None else f"{100 * x:.1f}%"


def _files(d: Path):
    """(run.json, history dict, metrics or None) of a run directory or a kept result folder."""
    run = json.loads((d / "run.json").read_text())
    last = d / "checkpoints" / "last.json" if (d / "checkpoints").is_dir() else d / "history.json"
    hist = json.loads(last.read_text())
    m = d / "eval" / "metrics.json" if (d / "eval").is_dir() else d / "metrics.json"
    return run, hist, (json.loads(m.read_text()) if m.is_file() else None)


def keep(table, dirs):
    for d in map(Path, dirs):
        out = Path(__file__).parent / "results" / table / d.name
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(d / "run.json", out / "run.json")
        shutil.copyfile(d / "checkpoints" / "last.json", out / "history.json")
        if (d / "eval" / "metrics.json").is_file():
            shutil.copyfile(d / "eval" / "metrics.json", out / "metrics.json")
        print(f"kept {out}")


def models(dirs):
    print("| run | arch | model | epochs | train time | best val. rec. (nats) | recon. argmax test / val | "
          "recon. GVAE 10×100 test / val | valid prior | valid N | valid GMM | unique GMM | novel GMM | s/epoch |")
    print("|---" * 14 + "|")
    for d in map(Path, dirs):
        run, last, m = _files(d)
        hist = last.get("history", [])
        total = sum(h["seconds"] for h in hist)
        sec = total / max(len(hist), 1)
        s = m["samples"]
        r = m["reconstruction"]
        print(f"| {d.name} | {run['model'].get('arch', 'gvae')} | {m['model']} | {m['epochs']} | {total / 60:.1f} min | "
              f"{last['best_val']:.3f} | {pct(r.get('argmax'))} / {pct(r.get('val_argmax'))} | "
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


def ttq(out, dirs):
    """Validation reconstruction loss and exact reconstruction of validation rows against cumulative
    training time (the trainer's per-epoch history), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for d in map(Path, dirs):
        run, last, _ = _files(d)
        hist = last.get("history", [])
        t, elapsed = [], 0.0
        for h in hist:
            elapsed = h.get("elapsed", elapsed + h["seconds"])
            t.append(elapsed / 60)
        label = f"{d.name} ({run['model'].get('arch', 'gvae')})"
        a.plot(t, [h["val_rec"] for h in hist], marker="o", ms=3, label=label)
        if all("val_recon" in h for h in hist):
            b.plot(t, [100 * h["val_recon"] for h in hist], marker="o", ms=3, label=label)
    a.set_yscale("log")
    a.set_xlabel("training time (minutes)")
    a.set_ylabel("validation reconstruction loss (nats / sequence)")
    b.set_xlabel("training time (minutes)")
    b.set_ylabel("exact argmax reconstruction of validation rows (%)")
    b.set_ylim(-2, 102)
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "keep":
        keep(rest[0], rest[1:])
    elif cmd == "ttq":
        ttq(rest[0], rest[1:])
    else:
        {"models": models, "bo": bo}[cmd](rest)
