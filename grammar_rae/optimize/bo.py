"""The latent-space BO loop (Kusner et al. 2017, Sec. 4.3; reused by the RAE paper, Table 3).

Per seed: encode every dataset string (encoder means), score it, split 90/10 (seeded), fit the
sparse GP on the 90%, report its test RMSE/log-likelihood; then ``iterations`` times: choose a batch
of points by greedy EI in the search region (regions.py: the box spanned by the training codes, the
protocol's; its part where an ex-post GMM of the training codes is dense; or a TuRBO trust region
around the best point so far), decode each point ``n_decode``
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
from ..errors import ConfigError
from ..trainer import resolve_device
from .acquisition import batched_greedy_ei, local_pool, posterior_mean_incumbent
from .config import BOConfig, GPConfig, make_config
from .gp import SparseGP
from .objectives import Objective, get_objective
from .regions import make_region


def dataset_codes_and_scores(run, objective: Objective, out: Path, device, log=print,
                             data_rows: int | None = None, cache_dir=None, progress: bool = False):
    """Codes and objective scores of the strings of the run's data -- all of them, or a seeded sample
    of ``data_rows`` -- cached in ``out`` under a key of the run's weights, the objective and the rows,
    so a retrained run or another objective never reuses stale codes."""
    import hashlib
    import json

    from ..data.parsed import prepare_dataset
    from ..data.shipped import resolve_source
    from ..run import encode_rules, loaded_model, padded_rules
    from ..rundir import RunDir

    net, meta, run_dir = loaded_model(run, device)   # a loaded Model as it is, or a run directory loaded
    device = next(net.parameters()).device
    weights = RunDir.open(run_dir, "grammar").checkpoint(meta["checkpoint"])[2]   # the commit JSON of the checkpoint load_run loaded
    key = hashlib.sha256(json.dumps([weights.get("sha256"), weights.get("epoch"), meta["data"].get("sha256"),
                                     objective.name, objective.key, data_rows]).encode()).hexdigest()[:16]
    cache = out / f"data-{key}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as f:
            return net, f["z"], f["y"], [str(s) for s in f["strings"]]
    ds = prepare_dataset(net.grammar, resolve_source(meta["data"]["source"], meta["data"].get("sha256"), cache_dir),
                         cache_dir=cache_dir, quiet=True)
    n = meta["data"]["rows"]
    rows = np.arange(n)
    if data_rows is not None and data_rows < n:
        rows = np.sort(np.random.default_rng(0).choice(n, data_rows, replace=False))
    rules = padded_rules(ds, net.config.max_length, rows)
    log(f"encoding {len(rows)} strings and scoring them with {objective.name}")
    z = encode_rules(net, rules, device=device, progress=progress)
    strings = [ds.strings[i] for i in rows]
    from tqdm import tqdm

    chunk = 5000
    y = np.concatenate([objective(strings[i:i + chunk]) for i in tqdm(
        range(0, len(strings), chunk), desc="scoring", unit="chunk", disable=not progress)]) if strings else np.zeros(0)
    from ..io import atomic_target

    with atomic_target(cache) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, z=z, y=y, strings=np.array(strings))
    return net, z, y, strings


def most_frequent_valid(decodes: list[list[str | None]], valid) -> list[str | None]:
    """Per point, the most frequent decode that ``valid`` accepts (ties: first seen), or None. Distinct
    strings are checked from the most frequent down, so ``valid`` (for molecules: RDKit and the
    objective) runs once per distinct string until one passes, not once per decode."""
    out = []
    for ds in decodes:
        counts = Counter(s for s in ds if s is not None)   # most_common keeps first-seen order among ties
        out.append(next((s for s, _ in counts.most_common() if valid(s)), None))
    return out


def _initial_state(seed: int, n: int) -> dict:
    """A seed's 90/10 train/test split of the data (REFERENCE.md §5) and its empty history."""
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(0.9 * n))
    return {"seed": seed, "train": perm[:n_train].tolist(), "test": perm[n_train:].tolist(), "iterations": [],
            "gp_test": None}


def _propose(x_fit, y_fit, box, batch: int, maximise: bool, gp_config: GPConfig, region, seed: int, warm, test,
             progress, state, anchors=None):
    """Fit the GP on (x_fit, y_fit) and choose ``batch`` points by batched greedy EI where the search
    ``region`` (regions.py) says, given the fitted GP; local proposals perturb the best of ``anchors``
    (codes, scores: all that is known; default (x_fit, y_fit)).
    Returns (points, GP, test metrics or None, the (lower, upper) searched)."""
    c = gp_config
    fit_kw = dict(n_inducing=c.n_inducing, epochs=c.epochs, batch=c.batch, lr=c.lr)
    if c.backend == "botorch":   # the box only (GPConfig refuses the other regions for it)
        try:
            from .botorch_gp import fit_and_propose
        except ImportError as e:
            raise ConfigError(f"--gp botorch needs BoTorch ({e}): pip install \"grammar-rae[botorch]\"") from None
        points, metrics = fit_and_propose(
            x_fit, y_fit, *box, batch, maximise, n_inducing=c.n_inducing, epochs=c.epochs, lr=c.lr, minibatch=c.batch,
            seed=seed, x_test=test[0] if test else None, y_test=test[1] if test else None)
        return points, None, metrics, box
    if warm is not None and c.refit_epochs:  # warm start from the previous iteration's GP
        gp = SparseGP.fit(x_fit, y_fit, seed=seed, progress=progress, init=warm, **{**fit_kw, "epochs": c.refit_epochs})
    else:
        gp = SparseGP.fit(x_fit, y_fit, seed=seed, progress=progress, **fit_kw)
    metrics = gp.test_metrics(*test) if test else None
    lower, upper = region.bounds(box, gp, x_fit, y_fit, state)
    cut = dict(density=region.density, threshold=region.threshold)
    if c.incumbent == "posterior-mean":  # the GVAE's batched_greedy_ei
        best = posterior_mean_incumbent(gp, lower, upper, maximise, seed=seed, search=c.ei_search, **cut)
    else:
        best = float(y_fit.max() if maximise else y_fit.min())
    n_local = int(round(c.local * batch))
    pool = None
    if n_local:   # perturbations of the best known points that lie where EI searches (a trust region: its own)
        xa, ya = anchors or (x_fit, y_fit)
        inside = np.all((xa >= lower) & (xa <= upper), axis=1)
        pool = local_pool(xa[inside], ya[inside], maximise, lower, upper, seed) if inside.any() else None
        n_local = n_local if pool is not None else 0
    points = batched_greedy_ei(gp, best, lower, upper, batch=batch, search=c.ei_search, seed=seed, maximise=maximise,
                               local=pool, n_local=n_local, **cut)
    return points, gp, metrics, (lower, upper)


def _decodes(net, points: np.ndarray, n_decode: int, seed: int, device) -> list[list[str | None]]:
    """Each point decoded ``n_decode`` times by sampling: per point the list of its decodes."""
    gen = torch.Generator(device=device).manual_seed(seed)
    zt = torch.as_tensor(points, dtype=torch.float32, device=device)
    decodes = [[] for _ in range(len(points))]
    for out in net.decode_repeated(zt, n_decode, sample=True, generator=gen):
        for i, s in enumerate(out.strings):
            decodes[i].append(s)
    return decodes


def decode_points(net, points: np.ndarray, n_decode: int, valid, seed: int, device) -> list[str | None]:
    """Each point decoded ``n_decode`` times by sampling; its most frequent valid string, or None."""
    return most_frequent_valid(_decodes(net, points, n_decode, seed, device), valid)


# a point whose decodes were all evaluated already is moved: ``NEW_PER`` perturbations of it at each of these
# scales (times the codes' std per dimension), smallest first, until one decodes to a new string. The
# decoder's basins are wide: on expr-grae, 50 perturbations of a data row's code at 0.1 std all decode
# to that row, at 0.4 std 6-18 distinct strings, at 0.8 20-41
NEW_SCALES, NEW_PER = (0.2, 0.4, 0.8, 1.6), 8


def decode_new(net, points: np.ndarray, n_decode: int, valid, seed: int, device, known: set, box,
               scale: np.ndarray, inside=None) -> tuple[np.ndarray, list[str | None]]:
    """Like :func:`decode_points`, but every string new: per point the most frequent valid decode that is
    not in ``known`` (the run's earlier evaluations) nor chosen for an earlier point of the batch. A
    point none of whose decodes is new is replaced by the first of ``NEW_PER`` perturbations of it
    (Gaussian, ``NEW_SCALES`` × ``scale`` per dimension, clipped to ``box``, the bounds searched; with
    ``inside``, a function of [n, d] codes, only those it accepts) whose decodes give one, smallest
    scale first; a point still without one keeps its most frequent valid decode (a repeat).
    A repeat tells the GP nothing and spends an evaluation (bench/bo_targets.py: the protocol's batches
    decoded to the same few strings again and again; 60 evaluations held 26 distinct strings). Data rows
    are not excluded: their scores are known, but the decoder's basins are so wide that few codes near
    the data decode to anything else (on expr-grae, 2-9 of 50 perturbations at 0.8-1.6 std), so
    excluding them leaves little to evaluate near the best rows.
    Returns (the points, moved ones replaced; their strings)."""
    decodes = _decodes(net, points, n_decode, seed, device)
    taken = set(known)

    def first_new(ds):   # the most frequent valid decode not taken yet
        return most_frequent_valid([ds], lambda s: s not in taken and valid(s))[0]

    points = np.array(points, dtype=np.float64, copy=True)
    chosen: list[str | None] = [None] * len(points)
    pending = []
    for i, ds in enumerate(decodes):
        s = first_new(ds)
        if s is None:
            pending.append(i)
        else:
            chosen[i] = s
            taken.add(s)
    rng = np.random.default_rng(seed)
    for r, f in enumerate(NEW_SCALES):
        if not pending:
            break
        cand = points[pending][:, None, :] + rng.standard_normal((len(pending), NEW_PER, points.shape[1])) * (f * scale)
        cand = np.clip(cand, box[0], box[1])
        ok = (np.asarray(inside(cand.reshape(-1, points.shape[1]))) if inside is not None
              else np.ones(cand.shape[0] * NEW_PER, dtype=bool)).reshape(len(pending), NEW_PER)
        more = _decodes(net, cand.reshape(-1, points.shape[1]), n_decode, seed * 7 + r + 1, device)
        still = []
        for j, i in enumerate(pending):
            for k in range(NEW_PER):
                s = first_new(more[j * NEW_PER + k]) if ok[j, k] else None
                if s is not None:
                    chosen[i], points[i] = s, cand[j, k]
                    taken.add(s)
                    break
            else:
                still.append(i)
        pending = still
    for i in pending:   # nothing new anywhere near: the protocol's choice
        chosen[i] = most_frequent_valid([decodes[i]], valid)[0]
    return points, chosen


def gp_rows(y: np.ndarray, rows: int | None, maximise: bool, seed: int) -> np.ndarray:
    """Which of the training codes (scores ``y``) the GP is fitted on: all when ``rows`` is None or not
    fewer; else the best tenth of ``rows`` by score (where a search goes, the GP should see the data
    densely) and a seeded uniform sample of the others for the rest (its picture of the whole space)."""
    n = len(y)
    if rows is None or rows >= n:
        return np.arange(n)
    top = max(1, rows // 10)
    order = np.argsort(-y if maximise else y, kind="stable")
    rest = np.random.default_rng(seed).choice(order[top:], rows - top, replace=False)
    return np.sort(np.concatenate([order[:top], rest]))


def run_seed(net, z, y, objective: Objective, seed: int, config: BOConfig, state_path: Path, device, log=print,
             progress=True, settings: dict | None = None) -> dict:
    """One BO run (REFERENCE.md §5): per iteration fit, propose, decode, score, add; the state is
    saved after every iteration, so a second call with the same ``settings`` resumes."""
    maximise = objective.higher_is_better
    iterations, batch = config.iterations, config.batch
    n_decode = config.decodes_per_point(net.grammar.name.startswith("smiles"))
    settings = settings or {}
    if state_path.is_file():
        state = read_json(state_path)
        gp_settings = state.get("settings", {}).get("gp")
        if isinstance(gp_settings, dict) and "ei_search" not in gp_settings:
            gp_settings["ei_search"] = "multistart"  # states from before the grid search were made by it
        if isinstance(gp_settings, dict):
            gp_settings.setdefault("backend", "native")  # API states from before BOConfig named no backend
        if state.get("settings", settings) != settings:
            old = state.get("settings", {})
            changed = sorted(k for k in set(settings) | set(old) if old.get(k) != settings.get(k))
            hint = (" (it was made by the GrammarVAE protocol, the default before the presets: add --protocol gvae)"
                    if "new_only" not in old and "rows" not in (old.get("gp") or {}) and settings.get("new_only")
                    else "")
            raise ConfigError(f"{state_path.parent.parent} holds a BO run with other settings ({', '.join(changed)}); "
                              f"choose another --out, or repeat the original settings to resume it{hint}")
        log(f"seed {seed}: resuming after iteration {len(state['iterations'])}")
    else:
        state = {**_initial_state(seed, len(z)), "settings": settings}
    tr, te = np.array(state["train"]), np.array(state["test"])
    region = make_region(config.gp, seed, batch, maximise, iterations)   # where EI searches (regions.py)
    region.start(z[tr], float(y[tr].max() if maximise else y[tr].min()), state, state_path)
    x_extra = [np.array(p) for it in state["iterations"] for p in it["points"]]
    y_extra = [e["score"] for it in state["iterations"] for e in it["evaluations"]]
    worst = float(y[tr].min() if maximise else y[tr].max())  # an invalid point gets the worst training score
    box = (z[tr].min(0), z[tr].max(0))  # the acquisition box: the training codes' bounding box
    fit_rows = tr[gp_rows(y[tr], config.gp.rows, maximise, seed)]   # what the GP is fitted on (all by default)
    scale = z[tr].std(0)
    gp = None
    while len(state["iterations"]) < iterations:
        it = len(state["iterations"]) + 1
        t0 = time.time()
        extra = [np.stack(x_extra)] if x_extra else []
        x_fit = np.concatenate([z[fit_rows]] + extra)
        y_fit = np.concatenate([y[fit_rows], np.array(y_extra)])
        anchors = (np.concatenate([z[tr]] + extra), np.concatenate([y[tr], np.array(y_extra)]))
        test = (z[te], y[te]) if state["gp_test"] is None else None
        points, gp, metrics, searched = _propose(x_fit, y_fit, box, batch, maximise, config.gp, region,
                                                 seed * 1000 + it, gp, test, progress, state, anchors)
        if metrics is not None:
            state["gp_test"] = metrics
            log(f"seed {seed}: sparse GP on the test split: RMSE {metrics['rmse']:.3f}, "
                f"log-likelihood {metrics['log_likelihood']:.3f}")
        valid_one = lambda s: bool(objective.valid([s])[0])  # noqa: E731
        if config.new_only:
            known = {e["string"] for i in state["iterations"] for e in i["evaluations"] if e["string"]}
            inside = None if region.density is None else (
                lambda c: region.density.log_prob(c) >= region.threshold)
            points, chosen = decode_new(net, points, n_decode, valid_one, seed * 1000 + it, device, known,
                                        searched, scale, inside)
        else:
            chosen = decode_points(net, points, n_decode, valid_one, seed * 1000 + it, device)
        scores = objective(chosen)
        evaluations = [{"seed": seed, "iteration": it, "string": s, "valid": s is not None,
                        "score": float(sc) if s is not None else worst} for s, sc in zip(chosen, scores)]
        record = {"points": points.tolist(), "evaluations": evaluations, "seconds": round(time.time() - t0, 1),
                  **region.record(searched, state)}
        state["iterations"].append(record)
        x_extra += list(points)
        y_extra += [e["score"] for e in evaluations]
        write_json(state_path, state)
        valid = [e["score"] for e in evaluations if e["valid"]]
        top = (max(valid) if maximise else min(valid)) if valid else float("nan")
        log(f"seed {seed} iteration {it}/{iterations}: {len(valid)}/{len(points)} valid, best {top:.3f}, "
            f"{time.time() - t0:.0f}s")
    return state


def _mean_std(values) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std())} if len(v) else {"mean": float("nan"), "std": float("nan")}


def summarise(states: list[dict], objective: Objective) -> dict:
    """Fraction valid, average score and top-3, in two ways: ours (every valid evaluation averaged,
    mean ± std over seeds) and the published script's (GVAE get_final_results.py: per seed, the mean
    of the scores better than the worst score of the *last* seed, std over seeds / √iterations), so
    a reader can put our numbers beside the paper's honestly."""
    sign = 1.0 if objective.higher_is_better else -1.0
    evaluations = [e for st in states for it in st["iterations"] for e in it["evaluations"]]
    valid = [e for e in evaluations if e["valid"]]
    per_seed = [[e for it in st["iterations"] for e in it["evaluations"]] for st in states]
    per_seed_valid = [np.mean([e["valid"] for e in ev]) if ev else np.nan for ev in per_seed]
    per_seed_avg = [float(np.mean(v)) if (v := [e["score"] for e in ev if e["valid"]]) else np.nan for ev in per_seed]
    best_unique: dict[str, float] = {}
    for e in valid:
        best_unique[e["string"]] = e["score"]
    top = sorted(best_unique.items(), key=lambda kv: -sign * kv[1])[:3]
    best_per_iteration = {}
    for e in valid:
        k = f"{e['seed']}:{e['iteration']}"
        if k not in best_per_iteration or sign * e["score"] > sign * best_per_iteration[k]:
            best_per_iteration[k] = e["score"]
    iterations = max((len(st["iterations"]) for st in states), default=1) or 1
    worst_last = max((sign * -e["score"] for e in per_seed[-1]), default=np.nan) * -sign if per_seed else np.nan
    published = [float(np.mean(v)) if (v := [e["score"] for e in ev if sign * e["score"] > sign * worst_last]) else np.nan
                 for ev in per_seed]
    finite = [p for p in published if np.isfinite(p)]
    return {
        "objective": objective.name, "higher_is_better": objective.higher_is_better,
        "fraction_valid": {**{k: v for k, v in _mean_std(per_seed_valid).items()}},
        "average_score": _mean_std(per_seed_avg),  # over valid evaluations; NaN when a run found none
        "average_score_published": {"mean": float(np.mean(finite)) if finite else float("nan"),
                                    "std_over_sqrt_iterations": float(np.std(finite) / np.sqrt(iterations))
                                    if finite else float("nan")},
        "top3": [{"string": s, "score": sc} for s, sc in top],
        "best_per_iteration": best_per_iteration,
        "gp_test": [st["gp_test"] for st in states],
    }


def optimize(run_dir: str | Path, objective: str, out: str | Path, target: str | None = None, iterations: int = 5,
             batch: int = 50, seeds=(1,), n_decode: int | None = None, device: str = "auto", gp_kw: dict | None = None,
             progress: bool = True, log=print, data_rows: int | None = None, cache_dir=None,
             scoring: str = "ours", protocol: str = "gvae", new_only: bool | None = None) -> dict:
    """BO on a loaded Model, a run or a shipped NAME from keywords, the GrammarVAE/RAE protocol unless ``protocol``
    names another preset (config.PRESETS; ``Model.optimize`` and the command line start from
    ``default``): builds the :class:`~grammar_rae.optimize.config.BOConfig` (:func:`make_config`) and
    runs :func:`run_bo`. ``gp_kw``: some of :class:`~grammar_rae.optimize.config.GPConfig`'s fields
    (n_inducing, epochs, batch, lr, refit_epochs, rows, backend, incumbent, ei_search, region,
    region_quantile, local); the rest keep the preset's values."""
    config = make_config(protocol, gp_kw, objective=objective, target=target, scoring=scoring, iterations=iterations,
                         batch=batch, seeds=tuple(seeds), n_decode=n_decode, data_rows=data_rows, new_only=new_only)
    return run_bo(run_dir, config, out, device=device, progress=progress, log=log, cache_dir=cache_dir)


def run_bo(run, config: BOConfig, out: str | Path, device: str = "auto", progress: bool = True,
           log=print, cache_dir=None) -> dict:
    """One BO run as ``config`` says, on a loaded ``grammar_rae.Model`` (decoding as it is set to) or a
    run directory / shipped NAME (loaded on ``device``): see the module docstring. Writes
    ``out``/report.json, report.md and plots; the same call again resumes after the last iteration."""
    from ..pretrained import resolve_run

    out = Path(out)
    run_dir = Path(run.run_dir) if hasattr(run, "run_dir") else resolve_run(run)
    obj = get_objective(config.objective, config.target, scoring=config.scoring)
    dev = resolve_device(device)
    out.mkdir(parents=True, exist_ok=True)
    net, z, y, strings = dataset_codes_and_scores(run, obj, out, dev, log, config.data_rows, cache_dir, progress)
    dev = next(net.parameters()).device   # a loaded Model's own
    molecules = net.grammar.name.startswith("smiles")
    # what a resumed run must share with the one it continues (more iterations are fine)
    settings = config.resume_settings(obj.key or obj.name, len(z), molecules)
    states = [run_seed(net, z, y, obj, s, config, out / "state" / f"seed-{s}.json", dev, log, progress, settings)
              for s in config.seeds]
    summary = summarise(states, obj)
    report = {"run": str(run_dir), "objective": obj.name, "target": config.target, "scoring": config.scoring,
              "protocol": config.preset, "new_only": config.new_only,
              "iterations": config.iterations, "batch": config.batch, "seeds": list(config.seeds),
              "n_decode": config.decodes_per_point(molecules), "gp": config.gp.as_kw(), "data_rows": len(z),
              "data_best": float(y.max() if obj.higher_is_better else y.min()), "summary": summary,
              "seconds": round(sum(it.get("seconds", 0.0) for st in states for it in st["iterations"]), 1),
              "evaluations": [e for st in states for it in st["iterations"] for e in it["evaluations"]]}
    write_json(out / "report.json", report)
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    plot_progress(report, out / "best_vs_evaluations.png")
    if molecules:
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
    if "data_best" in report:
        ax.axhline(report["data_best"], color="grey", ls="--", lw=1, label="best in the data")
    ax.set_xlabel("evaluations")
    ax.set_ylabel(f"best {report['objective']} so far")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
