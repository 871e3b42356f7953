"""Latent-space BO against the baselines a user would try, on objectives it was never tuned on (issue 26).

    python bench/bo_targets.py targets --set dev                 # list a target set and how near the data it is
    python bench/bo_targets.py run --set dev --budget 60 --seeds 1,2,3 --out bench/results/bo-targets
    python bench/bo_targets.py run --task molecules --budget 250 --seeds 1,2,3 --out bench/results/bo-targets
    python bench/bo_targets.py report --out bench/results/bo-targets

Targets (expressions, scored as the GrammarVAE scores its target: log(1 + mean min((f − y)², 1000)) on
1,000 points of [−10, 10], lower is better). A set is drawn by one seeded rule, written down here
before any run: random leftmost derivations of the expression grammar (``generate_expressions``: rules
drawn uniformly among those that can still finish within 15), kept when the expression contains x, is
finite and bounded on [−10, 10] (|f| ≤ 1e5: beyond, every candidate scores the error cap alone), varies
there (std > 0.1) and is not a row of the shipped expression set;
``dev`` draws with seed 1000, ``test`` with seed 2000 (and drops any dev target). Each target is tagged
by its nearest row in the data: ``near`` when some row of the shipped set scores below 0.5 on it,
``far`` otherwise; a set holds ``--per-kind`` of each (6: 12 targets).
Molecules: penalised logP, QED and the Tanimoto similarity (Morgan radius 2, 2048 bits) to a held-out
molecule (GuacaMol's rediscovery kind): the first molecule of zinc-grae's test split with ≥ 25 heavy
atoms.

Methods, each at the same number of objective evaluations (the budget: 60 = 3 × 20, 250 = 5 × 50):
  bo       ``grammar-rae optimize`` with its defaults, the ``default`` preset (or ``--bo KEY=VALUE ...``,
           Model.optimize's keywords, e.g. ``protocol=gvae`` for the GrammarVAE protocol); its evaluations
           are the decoded points it proposes (the GP's data -- the encoded data set with its scores, as
           in the protocol -- is not counted; the report's "beyond the data" column shows what it found
           that is not a data row)
  random   rows drawn uniformly from the data set, scored
  gmm      codes drawn from the model's ex-post GMM, decoded by argmax, scored
  ga       a steady-state genetic algorithm over codes: 20 random data rows (encoded; they count as
           evaluations), then per child two parents by tournament (3), uniform crossover, Gaussian
           mutation (0.1 × the data codes' std per dimension), argmax decode, score; it replaces the worst
           member when better. Constants fixed before any run.
Each (target, method, budget, seed) is one JSON under OUT/TASK/, resumable by skipping what exists.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NEAR = 0.5                 # a target is "near" the data when some row scores below this
BUDGETS = {60: (3, 20), 250: (5, 50)}
SET_SEEDS = {"dev": 1000, "test": 2000}
GA_POPULATION, GA_TOURNAMENT, GA_MUTATION = 20, 3, 0.1
SIMILARITY_MIN_ATOMS = 25


# ------------------------------------------------------------------------------------------ targets
def _file_rows() -> list[str]:
    from grammar_rae.data.shipped import shipped_path

    return [s.strip() for s in shipped_path("expressions").read_text().splitlines() if s.strip()]


_DATA_VALUES: dict = {}


def best_in_data(targets: list[str], rows: list[str], chunk: int = 10_000) -> list[float]:
    """Per target the best (lowest) score of any data row, by the objective's formula on the data's
    values (computed once: [rows, 1000])."""
    from grammar_rae.optimize.objectives import EXPR_INVALID, evaluate_expression, expression_values

    x = np.linspace(-10, 10, 1000)
    if len(_DATA_VALUES.get("rows", ())) != len(rows):
        _DATA_VALUES.update(rows=rows, f=expression_values(rows, x).astype(np.float32))
    f = _DATA_VALUES["f"]
    out = []
    for t in targets:
        y = evaluate_expression(t, x).astype(np.float32)
        best = np.inf
        for i in range(0, len(f), chunk):
            with np.errstate(all="ignore"):
                score = np.log1p(np.minimum((f[i:i + chunk] - y) ** 2, 1000.0).mean(1))
            best = min(best, float(np.where(np.isfinite(score), score, EXPR_INVALID).min()))
        out.append(best)
    return out


def draw_targets(which: str, per_kind: int = 6) -> list[dict]:
    """The target set ``which`` (dev / test) by the rule of the module docstring."""
    from grammar_rae.data.expressions import generate_expressions
    from grammar_rae.optimize.objectives import evaluate_expression

    rows = _file_rows()
    in_file = set(rows)
    exclude = {t["target"] for t in draw_targets("dev", per_kind)} if which == "test" else set()
    x = np.linspace(-10, 10, 1000)
    kept: dict[str, list] = {"near": [], "far": []}
    pool = generate_expressions(4000, seed=SET_SEEDS[which])
    candidates = []
    for s in pool:
        if "x" not in s.split() or s in in_file or s in exclude:
            continue
        try:
            y = evaluate_expression(s, x)
        except ValueError:
            continue
        if np.isfinite(y).all() and np.abs(y).max() <= 1e5 and float(np.std(y)) > 0.1:
            candidates.append(s)
    for i in range(0, len(candidates), 50):          # tag in blocks until both kinds are full
        block = candidates[i:i + 50]
        for s, b in zip(block, best_in_data(block, rows)):
            kind = "near" if b < NEAR else "far"
            if len(kept[kind]) < per_kind:
                kept[kind].append({"target": s, "kind": kind, "data_best": b})
        if all(len(v) == per_kind for v in kept.values()):
            break
    return kept["near"] + kept["far"]


# ------------------------------------------------------------------------------------------ molecules
def heldout_molecule() -> str:
    from rdkit import Chem

    import grammar_rae
    from grammar_rae.data.shipped import shipped_path

    m = grammar_rae.load("zinc-grae", device="cpu")
    zinc = [s.strip() for s in shipped_path("zinc250k").read_text().splitlines()]
    for i in np.asarray(m.run.split()[2]):
        mol = Chem.MolFromSmiles(zinc[i])
        if mol is not None and mol.GetNumHeavyAtoms() >= SIMILARITY_MIN_ATOMS:
            return zinc[i]
    raise SystemExit("no held-out molecule is large enough")


_FP: dict = {}


def similarity(strings):
    """Tanimoto similarity (Morgan r=2, 2048 bits) to the held-out molecule; NaN where not a molecule.
    As ``bench.bo_targets:similarity`` it is a ``package.module:function`` objective."""
    from rdkit import Chem, DataStructs, RDLogger
    from rdkit.Chem import rdFingerprintGenerator

    RDLogger.DisableLog("rdApp.*")
    if "target" not in _FP:
        _FP["gen"] = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
        _FP["target"] = _FP["gen"].GetFingerprint(Chem.MolFromSmiles(heldout_molecule()))
    out = []
    for s in strings:
        mol = Chem.MolFromSmiles(s) if s else None
        out.append(DataStructs.TanimotoSimilarity(_FP["gen"].GetFingerprint(mol), _FP["target"])
                   if mol is not None else float("nan"))
    return np.array(out, dtype=np.float64)


def objective_of(task: str, target: str):
    from grammar_rae.optimize.objectives import get_objective

    if task == "expr":
        return get_objective("expr", target)
    return get_objective("bench.bo_targets:similarity" if target == "similarity" else target)


# ------------------------------------------------------------------------------------------ methods
def _result(scores, valid, obj, seconds, strings) -> dict:
    scores = np.asarray(scores, dtype=float)
    valid = np.asarray(valid, dtype=bool)
    sign = 1.0 if obj.higher_is_better else -1.0
    good = scores[valid]
    return {"scores": scores.tolist(), "valid": valid.tolist(), "strings": list(strings),
            "best": float(sign * np.max(sign * good)) if len(good) else None,
            "mean": float(good.mean()) if len(good) else None, "fraction_valid": float(valid.mean()),
            "seconds": round(seconds, 1)}


def run_random(model, data: list[str], obj, budget: int, seed: int) -> dict:
    t0 = time.time()
    rows = [data[i] for i in np.random.default_rng(seed).choice(len(data), budget, replace=False)]
    return _result(obj(rows), obj.valid(rows), obj, time.time() - t0, rows)


def run_gmm(model, data, obj, budget: int, seed: int) -> dict:
    t0 = time.time()
    strings = model.sample(budget, density="gmm", seed=seed)
    return _result(obj(strings), obj.valid(strings), obj, time.time() - t0, strings)


def run_ga(model, data: list[str], obj, budget: int, seed: int) -> dict:
    t0 = time.time()
    rng = np.random.default_rng(seed)
    sign = 1.0 if obj.higher_is_better else -1.0
    start = [data[i] for i in rng.choice(len(data), GA_POPULATION, replace=False)]
    pop = model.encode(start, errors="ignore")
    fit = sign * obj(start)
    scores, valid, strings = list(obj(start)), list(obj.valid(start)), list(start)
    scale = GA_MUTATION * model.density("gaussian").sample(5000, seed=0).std(0)
    while len(scores) < budget:
        parents = []
        for _ in range(2):
            pick = rng.choice(GA_POPULATION, GA_TOURNAMENT, replace=False)
            parents.append(pick[np.argmax(fit[pick])])
        child = np.where(rng.random(pop.shape[1]) < 0.5, pop[parents[0]], pop[parents[1]])
        child = child + scale * rng.standard_normal(pop.shape[1])
        s = model.decode(child.astype(np.float32))
        sc, ok = float(obj([s])[0]), bool(obj.valid([s])[0])
        scores.append(sc), valid.append(ok), strings.append(s)
        worst = int(np.argmin(fit))
        if ok and sign * sc > fit[worst]:
            pop[worst], fit[worst] = child, sign * sc
    return _result(scores, valid, obj, time.time() - t0, strings)


def run_bo(model, data, obj, budget: int, seed: int, target: str, task: str, work: Path, bo_kw: dict) -> dict:
    iterations, batch = BUDGETS[budget]
    t0 = time.time()
    objective = "expr" if task == "expr" else ("bench.bo_targets:similarity" if target == "similarity" else target)
    report = model.optimize(objective, work, target=target if task == "expr" else None, iterations=iterations,
                            batch=batch, seeds=(seed,), progress=False, log=None, **bo_kw)
    ev = [e for e in report["evaluations"] if e["seed"] == seed]
    return _result([e["score"] for e in ev], [e["valid"] for e in ev], obj, time.time() - t0,
                   [e["string"] for e in ev])


# ------------------------------------------------------------------------------------------ commands
def cmd_targets(a):
    for t in draw_targets(a.set, a.per_kind):
        print(f"{t['kind']:4}  data best {t['data_best']:.3f}  {t['target']}")


def _parse_kw(pairs):
    kw = {}
    for p in pairs or []:
        k, _, v = p.partition("=")
        try:
            kw[k] = json.loads(v)
        except json.JSONDecodeError:
            kw[k] = v
    return kw


def cmd_run(a):
    import grammar_rae

    task = a.task
    model = grammar_rae.load("zinc-grae" if task == "molecules" else "expr-grae", device="cpu")
    if task == "expr":
        targets = [t["target"] for t in draw_targets(a.set, a.per_kind)]
        data = _file_rows()
        folder = Path(a.out) / f"expr-{a.set}"
    else:
        from grammar_rae.data.shipped import shipped_path

        targets = ["logp", "qed", "similarity"]
        data = [s.strip() for s in shipped_path("zinc250k").read_text().splitlines() if s.strip()]
        folder = Path(a.out) / "molecules"
    if a.part:
        k, n = (int(v) for v in a.part.split("/"))
        targets = targets[k - 1::n]
    from grammar_rae.checkpoint import write_json

    bo_kw = _parse_kw(a.bo)
    label = a.bo_label or ("bo" if not bo_kw else "bo-" + "-".join(f"{k}{v}" for k, v in sorted(bo_kw.items())))
    for target in targets:
        obj = objective_of(task, target)
        for seed in a.seeds:
            for method in a.methods:
                name = label if method == "bo" else method
                path = folder / f"{_slug(target)}--{name}--{a.budget}--seed{seed}.json"
                if path.is_file():
                    continue
                if method == "bo":
                    work = folder / "bo-work" / f"{_slug(target)}--{name}--{a.budget}"
                    res = run_bo(model, data, obj, a.budget, seed, target, task, work, bo_kw)
                else:
                    res = {"random": run_random, "gmm": run_gmm, "ga": run_ga}[method](model, data, obj, a.budget, seed)
                res.update(task=task, target=target, method=name, budget=a.budget, seed=seed,
                           higher_is_better=obj.higher_is_better, bo=bo_kw if method == "bo" else None)
                write_json(path, res)   # atomic: a kill mid-write leaves no torn result to skip
                print(f"{target[:40]:40} {name:10} budget {a.budget:3} seed {seed}: best {res['best']}, "
                      f"mean {res['mean']}, valid {res['fraction_valid']:.2f}, {res['seconds']:.0f} s", flush=True)


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in s)[:60]


def _canonical(task: str):
    """A string's identity for "is it a data row": itself for expressions, RDKit's canonical SMILES for
    molecules (the decoder may spell a data molecule another way)."""
    if task == "expr":
        return lambda s: s
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")

    def canon(s):
        mol = Chem.MolFromSmiles(s) if s else None
        return Chem.MolToSmiles(mol) if mol is not None else s
    return canon


def _data_strings(task: str) -> set:
    from grammar_rae.data.shipped import shipped_path

    if task == "expr":
        return set(_file_rows())
    canon = _canonical(task)
    return {canon(s.strip()) for s in shipped_path("zinc250k").read_text().splitlines() if s.strip()}


def cmd_report(a):
    rows = [json.loads(p.read_text()) for p in sorted(Path(a.out).glob(f"{a.only}/*.json"))]
    if a.methods:
        rows = [r for r in rows if r["method"] in a.methods]
    if not rows:
        raise SystemExit(f"no results under {a.out}")
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["task"], r["target"], r["budget"], r["method"]), []).append(r)
    tasks = {r["task"] for r in rows}
    data, canon = {t: _data_strings(t) for t in tasks}, {t: _canonical(t) for t in tasks}
    for r in rows:   # each evaluation: a data row or not (molecules by canonical SMILES)
        r["in_data"] = [canon[r["task"]](st) in data[r["task"]] if st else False for st in r["strings"]]
    lines = ["Best and mean: medians over seeds of each run's best and mean valid score. Beyond the data: the "
             "best of the evaluations that are not rows of the data set (nan: none); data rows: the share of "
             "the evaluations that are.", "",
             "| task | target | budget | method | best (median over seeds) | mean | valid | beyond the data | "
             "data rows | seeds |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (task, target, budget, method), rs in sorted(groups.items()):
        best = np.median([r["best"] for r in rs if r["best"] is not None])
        mean = np.median([r["mean"] for r in rs if r["mean"] is not None])
        sign = 1.0 if rs[0]["higher_is_better"] else -1.0
        beyond = [sign * max((sign * sc for sc, ok, known in zip(r["scores"], r["valid"], r["in_data"])
                              if ok and not known), default=-np.inf) for r in rs]
        beyond = [b for b in beyond if np.isfinite(b)]
        in_data = np.mean([np.mean(r["in_data"]) for r in rs])
        lines.append(f"| {task} | `{target}` | {budget} | {method} | {best:.3f} | {mean:.3f} | "
                     f"{np.mean([r['fraction_valid'] for r in rs]):.2f} | "
                     f"{np.median(beyond) if beyond else float('nan'):.3f} | {in_data:.2f} | {len(rs)} |")
    text = "\n".join(lines) + "\n" + summary(groups)
    (Path(a.out) / f"table{'' if a.only == '*' else '-' + a.only}.md").write_text(text)
    print(text)
    for task, budget in sorted({(k[0], k[2]) for k in groups}):
        plot_task(groups, task, budget, Path(a.out) / f"{task if a.only == '*' else a.only}-{budget}.png")


def summary(groups) -> str:
    """Per task and budget, for each method against random search: targets won in best-found and in mean
    (medians over seeds), and the median ratio of best-found (BO / random; < 1 is better when lower is)."""
    out = ["", "| task | budget | method | wins in best vs random | wins in mean vs random | median best ratio | "
           "wins in best vs GMM |", "|---|---|---|---|---|---|---|"]
    for task, budget in sorted({(k[0], k[2]) for k in groups}):
        methods = sorted({k[3] for k in groups if k[0] == task and k[2] == budget} - {"random"})
        targets = sorted({k[1] for k in groups if k[0] == task and k[2] == budget and k[3] == "random"})
        for method in methods:
            wins_best = wins_mean = wins_gmm = n = n_gmm = 0
            ratios = []
            for t in targets:
                if (task, t, budget, method) not in groups:
                    continue
                mine, rand = groups[(task, t, budget, method)], groups[(task, t, budget, "random")]
                sign = 1.0 if mine[0]["higher_is_better"] else -1.0
                med = lambda rs, k: float(np.median([r[k] for r in rs if r[k] is not None]))  # noqa: E731
                n += 1
                wins_best += sign * med(mine, "best") > sign * med(rand, "best")
                wins_mean += sign * med(mine, "mean") > sign * med(rand, "mean")
                if med(rand, "best") != 0:
                    ratios.append(med(mine, "best") / med(rand, "best"))
                if (task, t, budget, "gmm") in groups:
                    n_gmm += 1
                    wins_gmm += sign * med(mine, "best") > sign * med(groups[(task, t, budget, "gmm")], "best")
            out.append(f"| {task} | {budget} | {method} | {wins_best}/{n} | {wins_mean}/{n} | "
                       f"{np.median(ratios) if ratios else float('nan'):.3f} | {wins_gmm}/{n_gmm} |")
    return "\n".join(out) + "\n"


def plot_task(groups, task: str, budget: int, path: Path) -> None:
    """Best-so-far against evaluations, one panel per target: per method the median over seeds and the
    quartiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = sorted({k[1] for k in groups if k[0] == task and k[2] == budget})
    cols = min(4, len(targets))
    rows_ = -(-len(targets) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(max(6, 4 * cols), 3.2 * rows_), squeeze=False)
    for ax, t in zip(axes.flat, targets):
        for method in sorted({k[3] for k in groups if k[:3] == (task, t, budget)}):
            curves = []
            for r in groups[(task, t, budget, method)]:
                sign = 1.0 if r["higher_is_better"] else -1.0
                sc = np.where(r["valid"], r["scores"], np.nan) * sign
                curves.append(sign * np.fmax.accumulate(np.nan_to_num(sc, nan=-np.inf)))
            c = np.array(curves)
            c[~np.isfinite(c)] = np.nan
            x = np.arange(1, c.shape[1] + 1)
            ax.plot(x, np.nanmedian(c, 0), label=method)
            ax.fill_between(x, np.nanpercentile(c, 25, 0), np.nanpercentile(c, 75, 0), alpha=0.2)
        ax.set_title(t[:40], fontsize=7)
        ax.set_xlabel("evaluations", fontsize=7)
    for ax in list(axes.flat)[len(targets):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{task}: best so far (median, quartiles over seeds), budget {budget}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("targets")
    t.add_argument("--set", choices=list(SET_SEEDS), default="dev")
    t.add_argument("--per-kind", type=int, default=6)
    r = sub.add_parser("run")
    r.add_argument("--task", choices=["expr", "molecules"], default="expr")
    r.add_argument("--set", choices=list(SET_SEEDS), default="dev")
    r.add_argument("--per-kind", type=int, default=6)
    r.add_argument("--budget", type=int, choices=list(BUDGETS), default=60)
    r.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 3])
    r.add_argument("--methods", type=lambda s: s.split(","), default=["random", "gmm", "ga", "bo"])
    r.add_argument("--bo", nargs="*", help="Model.optimize keywords for the BO method, KEY=VALUE (JSON values)")
    r.add_argument("--bo-label", default=None)
    r.add_argument("--part", default=None, help="K/N: every N-th target from the K-th (to split the work)")
    r.add_argument("--out", default="bench/results/bo-targets")
    p = sub.add_parser("report")
    p.add_argument("--out", default="bench/results/bo-targets")
    p.add_argument("--only", default="*", help="one result folder (expr-dev, expr-test, molecules); default all")
    p.add_argument("--methods", type=lambda v: v.split(","), default=None,
                   help="only these methods (labels), e.g. bo,random,gmm,ga; default all")
    a = ap.parse_args()
    {"targets": cmd_targets, "run": cmd_run, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
