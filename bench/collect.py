"""Tables and figures for BENCHMARKS.md from finished runs (nothing is re-measured here), and the
small result files behind them, kept under bench/results/ so a figure never outlives its evidence.

    python bench/collect.py keep TABLE RUN_DIR...   # copy run.json, history, eval/metrics.json to bench/results/TABLE/
    python bench/collect.py models DIR...           # a model table (DIR: a run, or a bench/results/TABLE/RUN folder)
    python bench/collect.py bo BO_DIR...            # a BO table (after `grammar-rae optimize ... --out BO_DIR`)
    python bench/collect.py keep-bo TABLE BO_DIR... # copy report.json and its PNGs to bench/results/TABLE/
    python bench/collect.py bo-plot OUT.png BO_DIR...  # best-so-far against evaluations, one line per run
    python bench/collect.py bo-rescored BO_DIR...   # expression runs' strings re-scored as the GVAE code did
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


def _reports(dirs):
    """(name, report.json) of BO output folders or kept result folders."""
    return [(Path(d).name, json.loads((Path(d) / "report.json").read_text())) for d in dirs]


def bo(dirs):
    """Both averagings side by side: ours (every valid evaluation, mean ± std over seeds) and the
    published script's (GVAE get_final_results.py: scores better than the last seed's worst, ± std/√iters)."""
    print("| BO run | seeds | wall time | fraction valid | average score (ours) | average score (published script's) | "
          "best per seed | top-3 | GP test RMSE | GP test log-lik. |")
    print("|---" * 10 + "|")
    for name, r in _reports(dirs):
        s = r["summary"]
        gp = [g for g in s["gp_test"] if g]
        rmse = sum(g["rmse"] for g in gp) / len(gp)
        ll = sum(g["log_likelihood"] for g in gp) / len(gp)
        top = ", ".join(f"{t['score']:.2f} `{t['string']}`" for t in s["top3"])
        sign = 1 if s["higher_is_better"] else -1
        best = [sign * max(sign * e["score"] for e in r["evaluations"] if e["seed"] == seed and e["valid"])
                for seed in r["seeds"] if any(e["seed"] == seed and e["valid"] for e in r["evaluations"])]
        pub = s["average_score_published"]
        wall = f"{r['seconds'] / 60:.0f} min" if "seconds" in r else "–"
        print(f"| {name} | {len(r['seeds'])} | {wall} | {s['fraction_valid']['mean']:.2f} ± {s['fraction_valid']['std']:.2f} | "
              f"{s['average_score']['mean']:.2f} ± {s['average_score']['std']:.2f} | "
              f"{pub['mean']:.2f} ± {pub['std_over_sqrt_iterations']:.2f} | {', '.join(f'{b:.2f}' for b in best)} | "
              f"{top} | {rmse:.3f} | {ll:.3f} |")


def bo_rescored(dirs):
    """Expression BO runs made with our scoring, their evaluated strings re-scored as the GVAE code scored
    them (Python 2 integer division: the target becomes x + sin(x·x); the exact target scores 0.105),
    averaged both ways: the strings our BO chose, put on the published table's scale. (A BO run made
    with --scoring gvae would also have chosen its points by that score.)"""
    from grammar_rae.optimize.bo import summarise
    from grammar_rae.optimize.objectives import get_objective

    print("| BO run (strings re-scored as the GVAE code did) | average score (ours) | average score (published script's) | "
          "best per seed | top-3 |")
    print("|---" * 5 + "|")
    for name, r in _reports(dirs):
        obj = get_objective("expr", r.get("target"), scoring="gvae")
        states = []
        for seed in r["seeds"]:
            its = sorted({e["iteration"] for e in r["evaluations"] if e["seed"] == seed})
            states.append({"gp_test": None, "iterations": [{"evaluations": [
                {**e, "score": float(obj([e["string"]])[0]) if e["valid"] else e["score"]}
                for e in r["evaluations"] if e["seed"] == seed and e["iteration"] == it]} for it in its]})
        s = summarise(states, obj)
        best = [min(e["score"] for it in st["iterations"] for e in it["evaluations"] if e["valid"]) for st in states]
        pub = s["average_score_published"]
        print(f"| {name} | {s['average_score']['mean']:.2f} ± {s['average_score']['std']:.2f} | "
              f"{pub['mean']:.2f} ± {pub['std_over_sqrt_iterations']:.2f} | {', '.join(f'{b:.2f}' for b in best)} | "
              + ", ".join(f"{t['score']:.2f} `{t['string']}`" for t in s["top3"]) + " |")


def keep_bo(table, dirs):
    """report.json (every evaluation, the summary, the settings) and the PNGs of BO runs."""
    for d in map(Path, dirs):
        out = Path(__file__).parent / "results" / table / d.name
        out.mkdir(parents=True, exist_ok=True)
        for f in ("report.json", "report.md", "best_vs_evaluations.png", "best_molecules.png"):
            if (d / f).is_file():
                shutil.copyfile(d / f, out / f)
        r = json.loads((d / "report.json").read_text())
        if r["objective"] != "expr":   # molecules: the top-3 drawn with their scores
            from grammar_rae.evaluate import molecule_grid

            top = r["summary"]["top3"]
            molecule_grid([t["string"] for t in top], out / "top3.png", n=3, per_row=3, keep_order=True,
                          legends=[f"{r['objective']} {t['score']:.2f}" for t in top])
        print(f"kept {out}")


def bo_plot(out, dirs):
    """Best score so far against evaluations, one line per BO run (mean over seeds, band min–max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in _reports(dirs):
        sign = 1 if r["summary"]["higher_is_better"] else -1
        curves = []
        for seed in r["seeds"]:
            sc = np.array([e["score"] if e["valid"] else -sign * np.inf for e in r["evaluations"] if e["seed"] == seed])
            if len(sc):
                curves.append(sign * np.maximum.accumulate(sign * sc))
        n = min(map(len, curves))
        c = np.array([k[:n] for k in curves])
        x = np.arange(1, n + 1)
        line, = ax.plot(x, c.mean(0), label=f"{name} (mean of {len(c)} seeds)")
        ax.fill_between(x, c.min(0), c.max(0), color=line.get_color(), alpha=0.15)
        ax.axhline(r["data_best"], color=line.get_color(), ls=":", lw=1)
    ax.set_xlabel("evaluations")
    ax.set_ylabel(f"best {r['objective']} so far")
    better = "higher" if r["summary"]["higher_is_better"] else "lower"
    ax.set_title(f"{r['objective']} ({better} is better); band: min–max over seeds; dotted: best in the GP's data",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


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
    commands = ("keep", "keep-bo", "ttq", "bo-rescored", "bo-plot", "models", "bo")
    if len(sys.argv) < 3 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "keep":
        keep(rest[0], rest[1:])
    elif cmd == "keep-bo":
        keep_bo(rest[0], rest[1:])
    elif cmd == "ttq":
        ttq(rest[0], rest[1:])
    elif cmd == "bo-rescored":
        bo_rescored(rest)
    elif cmd == "bo-plot":
        bo_plot(rest[0], rest[1:])
    else:
        {"models": models, "bo": bo}[cmd](rest)
