"""The latent-space BO loop (Kusner et al. 2017, Sec. 4.3; reused by the RAE paper, Table 3).

Per seed: encode every dataset string (encoder means), score it, split 90/10 (seeded), fit the
sparse GP on the 90%, report its test RMSE/log-likelihood; then ``iterations`` times: choose a batch
of points by greedy EI in the box spanned by the training codes, decode each point ``n_decode``
times by sampling and keep the most frequent valid string (none valid: the point is invalid and
gets the worst training score), score, add the points to the GP's data and refit.
State is saved after every iteration (``DIR/state/seed-S.json``), so an interrupted run resumes
at the next iteration.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import read_json, write_json
from ..train import resolve_device
from .acquisition import batched_greedy_ei
from .gp import SparseGP
from .objectives import Objective, get_objective


def dataset_codes_and_scores(run_dir: Path, objective: Objective, out: Path, device, log=print):
    """Codes and objective scores of every string of the run's data (cached in ``out``)."""
    from ..data.parsed import prepare_dataset
    from ..data.shipped import resolve_source
    from ..run import encode_rules, load_run, padded_rules

    net, meta = load_run(run_dir, device=device)
    cache = out / f"data-{objective.name.replace(':', '_').replace('/', '_')}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as f:
            return net, f["z"], f["y"], [str(s) for s in f["strings"]]
    ds = prepare_dataset(net.grammar, resolve_source(meta["data"]["source"], meta["data"].get("sha256")), quiet=True)
    n = meta["data"]["rows"]
    rules = padded_rules(ds, net.config.max_length, np.arange(n))
    log(f"encoding {n} strings and scoring them with {objective.name}")
    z = encode_rules(net, rules, device=device)
    strings = ds.strings[:n]
    y = objective(strings)
    np.savez(cache, z=z, y=y, strings=np.array(strings))
    return net, z, y, strings


def most_frequent_valid(decodes: list[list[str | None]], valid) -> list[str | None]:
    """Per point, the most frequent decode that ``valid`` accepts (ties: first seen), or None."""
    out = []
    for ds in decodes:
        counts = Counter(s for s in ds if s is not None and valid(s))
        out.append(counts.most_common(1)[0][0] if counts else None)
    return out


def _validity_check(objective: Objective):
    """Molecules: RDKit must parse them (their objectives give NaN otherwise); expressions: every
    complete decode is a valid expression, whatever its score."""
    return lambda s: bool(np.isfinite(objective.fn([s])[0]))


def run_seed(net, z, y, objective: Objective, seed: int, iterations: int, batch: int, n_decode: int,
             state_path: Path, gp_kw: dict, device, log=print, progress=True) -> dict:
    sign = 1.0 if objective.higher_is_better else -1.0
    if state_path.is_file():
        state = read_json(state_path)
        log(f"seed {seed}: resuming after iteration {len(state['iterations'])}")
    else:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(z))
        n_train = int(round(0.9 * len(z)))
        state = {"seed": seed, "train": perm[:n_train].tolist(), "test": perm[n_train:].tolist(),
                 "iterations": [], "gp_test": None}
    tr, te = np.array(state["train"]), np.array(state["test"])
    x_extra = [np.array(p) for it in state["iterations"] for p in it["points"]]
    y_extra = [e["score"] for it in state["iterations"] for e in it["evaluations"]]
    worst = float(y[tr].min() if sign > 0 else y[tr].max())
    gp_kw = dict(gp_kw)
    refit_epochs = gp_kw.pop("refit_epochs", None)
    backend = gp_kw.pop("backend", "native")
    lower, upper = z[tr].min(0), z[tr].max(0)  # the acquisition box: the training codes' bounding box
    gp = None
    while len(state["iterations"]) < iterations:
        it = len(state["iterations"]) + 1
        t0 = time.time()
        x_fit = np.concatenate([z[tr]] + ([np.stack(x_extra)] if x_extra else []))
        y_fit = np.concatenate([y[tr], np.array(y_extra)])
        if backend == "botorch":
            from .botorch_gp import fit_and_propose

            need_test = state["gp_test"] is None
            points, metrics = fit_and_propose(
                x_fit, y_fit, lower, upper, batch, sign > 0, n_inducing=gp_kw["n_inducing"],
                epochs=gp_kw["epochs"], lr=gp_kw["lr"], minibatch=gp_kw["batch"], seed=seed * 1000 + it,
                x_test=z[te] if need_test else None, y_test=y[te] if need_test else None)
            if need_test:
                state["gp_test"] = metrics
        else:
            if gp is not None and refit_epochs:  # warm start from the previous iteration's GP
                gp = SparseGP.fit(x_fit, y_fit, seed=seed + it, progress=progress, init=gp,
                                  **{**gp_kw, "epochs": refit_epochs})
            else:
                gp = SparseGP.fit(x_fit, y_fit, seed=seed + it, progress=progress, **gp_kw)
            if state["gp_test"] is None:
                state["gp_test"] = gp.test_metrics(z[te], y[te])
            best = float(y_fit.max() if sign > 0 else y_fit.min())
            points = batched_greedy_ei(gp, best, lower, upper, batch=batch, seed=seed * 1000 + it,
                                       maximise=sign > 0)
        if it == 1:
            log(f"seed {seed}: sparse GP on the test split: RMSE {state['gp_test']['rmse']:.3f}, "
                f"log-likelihood {state['gp_test']['log_likelihood']:.3f}")
        gen = torch.Generator(device=device).manual_seed(seed * 1000 + it)
        zt = torch.as_tensor(points, dtype=torch.float32, device=device)
        decodes = [[] for _ in range(len(points))]
        for out in net.decode_repeated(zt, n_decode, sample=True, generator=gen):
            for i, s in enumerate(out.strings):
                decodes[i].append(s)
        chosen = most_frequent_valid(decodes, _validity_check(objective))
        scores = objective(chosen)
        evaluations = []
        for s, sc in zip(chosen, scores):
            valid = s is not None
            evaluations.append({"seed": seed, "iteration": it, "string": s, "valid": valid,
                                "score": float(sc) if valid else worst})
        state["iterations"].append({"points": points.tolist(), "evaluations": evaluations,
                                    "seconds": round(time.time() - t0, 1)})
        x_extra += list(points)
        y_extra += [e["score"] for e in evaluations]
        write_json(state_path, state)
        valid = [e for e in evaluations if e["valid"]]
        top = max((sign * e["score"] for e in valid), default=float("nan")) * sign
        log(f"seed {seed} iteration {it}/{iterations}: {len(valid)}/{len(points)} valid, best {top:.3f}, "
            f"{time.time() - t0:.0f}s")
    return state


def _mean_std(values) -> dict:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std())} if len(v) else {"mean": float("nan"), "std": float("nan")}


def summarise(states: list[dict], objective: Objective) -> dict:
    sign = 1.0 if objective.higher_is_better else -1.0
    evaluations = [e for st in states for it in st["iterations"] for e in it["evaluations"]]
    valid = [e for e in evaluations if e["valid"]]
    per_seed_valid = [np.mean([e["valid"] for it in st["iterations"] for e in it["evaluations"]]) for st in states]
    per_seed_avg = [np.mean([e["score"] for it in st["iterations"] for e in it["evaluations"] if e["valid"]] or [np.nan])
                    for st in states]
    best_unique: dict[str, float] = {}
    for e in valid:
        best_unique[e["string"]] = e["score"]
    top = sorted(best_unique.items(), key=lambda kv: -sign * kv[1])[:3]
    best_per_iteration = {}
    for e in valid:
        k = f"{e['seed']}:{e['iteration']}"
        if k not in best_per_iteration or sign * e["score"] > sign * best_per_iteration[k]:
            best_per_iteration[k] = e["score"]
    return {
        "objective": objective.name, "higher_is_better": objective.higher_is_better,
        "fraction_valid": {"mean": float(np.mean(per_seed_valid)), "std": float(np.std(per_seed_valid))},
        "average_score": _mean_std(per_seed_avg),  # over valid evaluations; NaN when a run found none
        "top3": [{"string": s, "score": sc} for s, sc in top],
        "best_per_iteration": best_per_iteration,
        "gp_test": [st["gp_test"] for st in states],
    }


def optimize(run_dir: str | Path, objective: str, out: str | Path, target: str | None = None, iterations: int = 5,
             batch: int = 50, seeds=(1,), n_decode: int | None = None, device: str = "auto", gp_kw: dict | None = None,
             progress: bool = True, log=print) -> dict:
    from ..pretrained import resolve_run

    run_dir, out = resolve_run(run_dir), Path(out)
    obj = get_objective(objective, target)
    dev = resolve_device(device)
    out.mkdir(parents=True, exist_ok=True)
    net, z, y, strings = dataset_codes_and_scores(run_dir, obj, out, dev, log)
    if n_decode is None:
        n_decode = 500 if net.grammar.name.startswith("smiles") else 25  # the GrammarVAE's choices
    gp_kw = {"n_inducing": 500, "epochs": 50, "batch": 5000, "lr": 5e-4, **(gp_kw or {})}
    states = [run_seed(net, z, y, obj, s, iterations, batch, n_decode, out / "state" / f"seed-{s}.json", gp_kw,
                       dev, log, progress) for s in seeds]
    summary = summarise(states, obj)
    report = {"run": str(run_dir), "objective": obj.name, "target": target, "iterations": iterations,
              "batch": batch, "seeds": list(seeds), "n_decode": n_decode, "gp": gp_kw, "summary": summary,
              "evaluations": [e for st in states for it in st["iterations"] for e in it["evaluations"]]}
    write_json(out / "report.json", report)
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    plot_progress(report, out / "best_vs_evaluations.png")
    if net.grammar.name.startswith("smiles"):
        from ..evaluate import molecule_grid

        molecule_grid([t["string"] for t in summary["top3"]] +
                      [e["string"] for e in sorted((e for e in report["evaluations"] if e["valid"]),
                                                   key=lambda e: -e["score"])][:21], out / "best_molecules.png")
    return report


def markdown(report: dict) -> str:
    s = report["summary"]
    lines = [f"# BO: {report['objective']} ({report['iterations']} iterations x {report['batch']} points, "
             f"seeds {report['seeds']})", "",
             "| fraction valid | average score | top-3 |", "|---|---|---|",
             f"| {s['fraction_valid']['mean']:.2f} ± {s['fraction_valid']['std']:.2f} "
             f"| {s['average_score']['mean']:.2f} ± {s['average_score']['std']:.2f} "
             "| " + ", ".join(f"{t['score']:.2f}" for t in s["top3"]) + " |", "", "top strings:"]
    lines += [f"- `{t['string']}`: {t['score']:.3f}" for t in s["top3"]]
    return "\n".join(lines) + "\n"


def plot_progress(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sign = 1.0 if report["summary"]["higher_is_better"] else -1.0
    fig, ax = plt.subplots(figsize=(6, 4))
    for seed in report["seeds"]:
        scores = [e["score"] for e in report["evaluations"] if e["seed"] == seed]
        if scores:
            best = sign * np.maximum.accumulate(sign * np.array(scores))
            ax.plot(np.arange(1, len(best) + 1), best, label=f"seed {seed}")
    ax.set_xlabel("evaluations")
    ax.set_ylabel(f"best {report['objective']} so far")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
