"""The BO loop end to end on a tiny expression model: report format, exact re-scoring, resume."""
import json

import pytest
import torch
from click.testing import CliRunner

from grammar_rae.cli import main
from grammar_rae.data.expressions import generate_expressions
from grammar_rae.optimize.bo import most_frequent_valid
from grammar_rae.optimize.objectives import get_objective
from grammar_rae.run import train_run
from grammar_rae.trainer import TrainConfig


def test_most_frequent_valid_decode():
    ok = lambda s: s != "bad"  # noqa: E731
    assert most_frequent_valid([["a", "b", "b", None], ["bad", "bad", "c"], [None, "bad"]], ok) == ["b", "c", None]
    # ties go to the first seen; each distinct string is checked once at most, however often decoded
    checked = []
    pick = most_frequent_valid([["x", "bad", "y", "y", "x", "bad", "bad"] * 50], lambda s: checked.append(s) or ok(s))
    assert pick == ["x"] and sorted(checked) == ["bad", "x"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bo")
    data = d / "expr.txt"
    data.write_text("\n".join(generate_expressions(300, seed=5)) + "\n")
    return train_run(d / "run", "expr", "rae", data=data, train=TrainConfig(epochs=1, batch_size=100),
                     progress=False, log=lambda m: None, cache_dir=d / "cache", decoder_hidden=16, encoder_hidden=16)


def independent_score(s: str | None) -> tuple[bool, float]:
    """The GrammarVAE expression score by a separate route: a recursive-descent evaluator with
    Python's precedence (not eval, not the package's code). Returns (valid, score)."""
    import math
    import re

    import numpy as np

    if s is None:
        return False, math.log(1001)
    tokens = re.findall(r"sin\(|exp\(|[x123+*/()]", s)
    if "".join(tokens) != s.replace(" ", ""):
        return False, math.log(1001)
    x = np.linspace(-10, 10, 1000)
    pos = [0]

    def peek():
        return tokens[pos[0]] if pos[0] < len(tokens) else None

    def take():
        pos[0] += 1
        return tokens[pos[0] - 1]

    def expr():
        v = term()
        while peek() == "+":
            take()
            v = v + term()
        return v

    def term():
        v = factor()
        while peek() in ("*", "/"):
            v = v * factor() if take() == "*" else v / factor()
        return v

    def factor():
        t = take()
        if t in ("(", "sin(", "exp("):
            v = expr()
            assert take() == ")"
            return {"(": lambda a: a, "sin(": np.sin, "exp(": np.exp}[t](v)
        return x if t == "x" else float(t)

    try:
        with np.errstate(all="ignore"):
            f = np.broadcast_to(expr(), x.shape)
        assert pos[0] == len(tokens)
    except (AssertionError, IndexError, TypeError):
        return False, math.log(1001)
    y = 1 / 3 + x + np.sin(x * x)
    with np.errstate(all="ignore"):
        score = math.log(1 + float(np.mean(np.minimum((f - y) ** 2, 1000))))
    return True, (score if math.isfinite(score) else math.log(1001))


def test_the_independent_scorer_agrees_on_hand_picked_expressions():
    import math

    assert independent_score("1 / 3 + x + sin( x * x )") == (True, 0.0)
    assert independent_score("x +")[0] is False and independent_score(None)[0] is False
    ok, score = independent_score("exp( x * x * x )")
    assert ok and 6.0 < score < 6.2  # capped per point, as the GrammarVAE's run_bo.py
    assert independent_score("1 + 2 * x")[1] != independent_score("( 1 + 2 ) * x")[1]  # precedence
    assert math.isclose(independent_score("x")[1], get_objective("expr")(["x"])[0])


def test_optimize_cli_report_rescores_independently_and_resumes(run, tmp_path):
    args = ["optimize", "--objective", "expr", "--run", str(run), "--iterations", "2", "--batch", "3",
            "--seeds", "1,2", "--n-decode", "3", "--inducing", "20", "--gp-epochs", "2", "--gp-refit-epochs", "1",
            "--gp-lr", "0.01", "--protocol", "gvae",   # the protocol: its states' format is what this checks
            "--device", "cpu", "--out", str(tmp_path / "bo")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "bo" / "report.json").read_text())
    ev = report["evaluations"]
    assert len(ev) == 2 * 2 * 3 and {e["seed"] for e in ev} == {1, 2} and {e["iteration"] for e in ev} == {1, 2}
    assert all(set(e) == {"seed", "iteration", "string", "score", "valid"} for e in ev)
    import numpy as np

    y = np.load(next((tmp_path / "bo").glob("data-*.npz")))["y"]
    worst = {s: y[json.loads((tmp_path / "bo" / "state" / f"seed-{s}.json").read_text())["train"]].max()
             for s in (1, 2)}  # lower is better: an invalid point gets its seed's worst training score
    rescored = [independent_score(e["string"]) for e in ev]
    assert [e["valid"] for e in ev] == [valid for valid, _ in rescored]
    assert sum(e["valid"] for e in ev) >= 6, ev  # most decodes are expressions: the rescoring is not vacuous
    want = [score if valid else worst[e["seed"]] for e, (valid, score) in zip(ev, rescored)]
    np.testing.assert_allclose([e["score"] for e in ev], want, rtol=0, atol=1e-9)
    per_seed = [sum(e["valid"] for e in ev if e["seed"] == s) / 6 for s in (1, 2)]
    s = report["summary"]
    assert abs(s["fraction_valid"]["mean"] - sum(per_seed) / 2) < 1e-12 and len(s["gp_test"]) == 2
    assert (tmp_path / "bo" / "best_vs_evaluations.png").is_file() and (tmp_path / "bo" / "report.md").is_file()
    # resume: a second call with more iterations continues after iteration 2 (and --threads is applied)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        r = CliRunner().invoke(main, args[:4] + [str(run), "--iterations", "3", "--threads", "1"] + args[7:])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output
    assert "resuming after iteration 2" in r.output
    report2 = json.loads((tmp_path / "bo" / "report.json").read_text())
    assert report2["evaluations"][:6] == [e for e in ev if e["seed"] == 1]
    assert len(report2["evaluations"]) == 2 * 3 * 3
    # other settings in the same folder are refused instead of mixed in
    r = CliRunner().invoke(main, args[:-2] + ["--scoring", "gvae", "--out", str(tmp_path / "bo")])
    assert r.exit_code == 1 and "other settings" in r.output
    # states written before the EI search was a setting were made by the multistart search
    for seed in (1, 2):
        path = tmp_path / "bo" / "state" / f"seed-{seed}.json"
        old = json.loads(path.read_text())
        del old["settings"]["gp"]["ei_search"]
        path.write_text(json.dumps(old))
    done = args[:4] + [str(run), "--iterations", "3"] + args[7:]
    r = CliRunner().invoke(main, done)  # the default search (grid) is not what made them
    assert r.exit_code == 1 and "other settings (gp)" in r.output
    r = CliRunner().invoke(main, done + ["--ei-search", "multistart"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "bo" / "report.json").read_text())["evaluations"] == report2["evaluations"]


def test_the_data_cache_is_keyed_by_the_runs_weights(run, tmp_path):
    import shutil

    from grammar_rae.checkpoint import save_weights, write_json
    from grammar_rae.optimize.bo import dataset_codes_and_scores
    from grammar_rae.run import load_run

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    obj = get_objective("expr")
    net, z1, _, _ = dataset_codes_and_scores(copy, obj, tmp_path / "bo", "cpu", log=lambda m: None)
    sd = {k: v + 0.01 for k, v in net.state_dict().items()}  # "retrained"
    sums = save_weights(copy / "checkpoints" / "best.safetensors", sd)
    write_json(copy / "checkpoints" / "best.json", {"epoch": 1, "sha256": sums})
    _, z2, _, _ = dataset_codes_and_scores(copy, obj, tmp_path / "bo", "cpu", log=lambda m: None)
    assert len(list((tmp_path / "bo").glob("data-*.npz"))) == 2 and not (z1 == z2).all()
    load_run(copy)
    # best.json left behind without its weights: the last weights load, and the key follows them
    (copy / "checkpoints" / "best.safetensors").unlink()
    _, z3, _, _ = dataset_codes_and_scores(copy, obj, tmp_path / "bo", "cpu", log=lambda m: None)
    assert not (z3 == z2).all()


@pytest.mark.parametrize("search", ["grid", "multistart"])
def test_batched_ei_beats_random_search_on_a_smooth_objective(search):
    """On a fixed latent set with a smooth objective, 3 iterations of 10 points by batched greedy EI
    (posterior-mean incumbent, refits) find a better point than 30 random points of the same box."""
    import numpy as np

    from grammar_rae.optimize.acquisition import batched_greedy_ei, posterior_mean_incumbent
    from grammar_rae.optimize.gp import SparseGP

    def f(z):  # smooth, one peak off-centre; the data never come near it
        return -((z - 1.2) ** 2).sum(1)

    wins, gaps = 0, []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        z = rng.normal(size=(400, 4)) * 0.6
        lower, upper = z.min(0) - 1.0, z.max(0) + 1.0
        x, y = z.copy(), f(z)
        for it in range(3):
            gp = SparseGP.fit(x, y, n_inducing=40, epochs=30, batch=400, lr=0.03, seed=seed * 10 + it)
            best = posterior_mean_incumbent(gp, lower, upper, maximise=True, seed=it, n_grid=2000, steps=50,
                                            search=search)
            pts = batched_greedy_ei(gp, best, lower, upper, batch=10, seed=it, search=search, n_grid=2000, maxiter=50,
                                    n_candidates=300, steps=25)
            x, y = np.concatenate([x, pts]), np.concatenate([y, f(pts)])
        bo_best = y[400:].max()
        random_best = f(rng.uniform(lower, upper, size=(30, 4))).max()
        wins += bo_best > random_best
        gaps.append(bo_best - random_best)
    assert wins == 3 and min(gaps) > 0.5, gaps


def test_local_proposals_find_the_small_basin_a_good_data_row_sits_in():
    """A broad bowl with three narrow wells, each centred on a data row: a sparse GP fitted on 2,000 codes
    smooths the wells away, so the box's EI proposes around the bowl's top (about 0) and never reaches
    them; local proposals (perturbations of the best observed points, chosen by the same EI) land in a well.
    Fails without them: the same batch from the box alone stays below 0.5 on every seed."""
    import numpy as np

    from grammar_rae.optimize.acquisition import batched_greedy_ei, local_pool, posterior_mean_incumbent
    from grammar_rae.optimize.gp import SparseGP

    for seed in range(3):
        rng = np.random.default_rng(seed)
        z = rng.normal(size=(2000, 8))
        wells = z[rng.choice(2000, 3, replace=False)]

        def f(q):
            d2 = ((q[:, None, :] - wells[None]) ** 2).sum(-1)
            return -0.1 * (q ** 2).sum(1) + 5.0 * np.exp(-d2 / (2 * 0.15 ** 2)).sum(1)

        y = f(z)
        lower, upper = z.min(0), z.max(0)
        gp = SparseGP.fit(z, y, n_inducing=50, epochs=20, batch=1000, lr=0.03, seed=seed)
        best = posterior_mean_incumbent(gp, lower, upper, maximise=True, seed=seed, n_grid=2000, steps=30)
        kw = dict(batch=10, seed=seed, n_grid=2000, maxiter=30, maximise=True)
        box = batched_greedy_ei(gp, best, lower, upper, **kw)
        pool = local_pool(z, y, True, lower, upper, seed)
        mixed = batched_greedy_ei(gp, best, lower, upper, local=pool, n_local=5, **kw)
        assert f(box).max() < 0.5, (seed, f(box).max())
        assert f(mixed).max() > 1.0, (seed, f(mixed).max())
        assert np.allclose(mixed[:5], box[:5])                      # the first half is the box's EI, unchanged


def test_local_pool_perturbs_the_best_points_at_each_scale():
    import numpy as np

    from grammar_rae.optimize.acquisition import LOCAL_SCALES, local_pool

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4)) * np.array([1.0, 2.0, 0.5, 1.0])
    y = rng.normal(size=500)
    pool = local_pool(x, y, False, x.min(0) - 10, x.max(0) + 10, seed=1, anchors=3, per=400)
    S = len(LOCAL_SCALES)
    assert pool.shape == (3 * S, 400, 4)
    best3 = x[np.argsort(y)[:3]]                                     # minimising: the 3 lowest, best first
    for g in range(3 * S):
        anchor, scale = best3[g // S], LOCAL_SCALES[g % S]
        spread = (pool[g] - anchor) / x.std(0)
        assert abs(spread.std() / scale - 1) < 0.1                   # each group: its anchor, at its scale
        assert np.abs(spread.mean(0)).max() < 0.2 * scale
    tight = local_pool(x, y, False, best3.min(0), best3.max(0), seed=1, anchors=3)
    assert (tight >= best3.min(0)).all() and (tight <= best3.max(0)).all()   # clipped to the box


def test_published_averaging_drops_scores_at_or_above_the_last_seeds_worst():
    from grammar_rae.optimize.bo import summarise

    obj = get_objective("expr")  # lower is better

    def state(seed, scores):
        return {"gp_test": None, "iterations": [{"evaluations": [
            {"seed": seed, "iteration": 1, "string": f"s{seed}{i}", "valid": v < 6.9, "score": v}
            for i, v in enumerate(scores)]}]}

    s = summarise([state(1, [1.0, 3.0, 6.908]), state(2, [2.0, 5.0])], obj)
    # ours: valid scores per seed, averaged: (2.0 + 3.5) / 2; published: below the last seed's worst (5.0)
    assert abs(s["average_score"]["mean"] - 2.75) < 1e-12
    assert abs(s["average_score_published"]["mean"] - (2.0 + 2.0) / 2) < 1e-12
    assert abs(s["fraction_valid"]["mean"] - (2 / 3 + 1) / 2) < 1e-12


def test_optimize_with_the_botorch_route(run, tmp_path):
    pytest.importorskip("botorch")
    args = ["optimize", "--objective", "expr", "--run", str(run), "--iterations", "1", "--batch", "2", "--seeds", "1",
            "--n-decode", "2", "--inducing", "10", "--gp-epochs", "2", "--gp-lr", "0.05", "--gp", "botorch",
            "--device", "cpu", "--out", str(tmp_path / "bo")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "bo" / "report.json").read_text())
    assert report["gp"]["backend"] == "botorch" and len(report["evaluations"]) == 2
    assert report["summary"]["gp_test"][0]["rmse"] > 0


def test_optimize_cli_density_region(run, tmp_path):
    """--search-region density: every chosen point lies in the region fitted on the seed's training
    codes; the box (the protocol) leaves no region keys in the settings, so older runs resume; the
    multistart search refuses the region with a message, before encoding anything."""
    import numpy as np

    from grammar_rae.optimize.regions import fit_density_region

    args = ["optimize", "--objective", "expr", "--run", str(run), "--iterations", "2", "--batch", "3",
            "--seeds", "1", "--n-decode", "3", "--inducing", "20", "--gp-epochs", "2", "--gp-lr", "0.01",
            "--device", "cpu"]
    r = CliRunner().invoke(main, args + ["--search-region", "density", "--region-quantile", "0.2",
                                         "--out", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    state = json.loads((tmp_path / "d" / "state" / "seed-1.json").read_text())
    assert state["settings"]["gp"]["region"] == "density" and state["settings"]["gp"]["region_quantile"] == 0.2
    z = np.load(next((tmp_path / "d").glob("data-*.npz")))["z"]
    density, tau = fit_density_region(z[state["train"]], 0.2, seed=1)
    points = np.array([p for it in state["iterations"] for p in it["points"]])
    assert points.shape == (6, z.shape[1]) and (density.log_prob(points) >= tau - 1e-9).all()
    assert (density.log_prob(z[state["train"]]) >= tau).mean() < 0.81  # 20% of the codes lie outside
    r = CliRunner().invoke(main, args + ["--protocol", "gvae", "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    gp = json.loads((tmp_path / "b" / "state" / "seed-1.json").read_text())["settings"]["gp"]
    assert "region" not in gp and "region_quantile" not in gp
    r = CliRunner().invoke(main, args + ["--search-region", "density", "--ei-search", "multistart",
                                         "--out", str(tmp_path / "m")])
    assert r.exit_code == 1 and "grid EI search" in r.output and "encoding" not in r.output, r.output


def test_optimize_cli_trust_region(run, tmp_path):
    """--search-region trust: every chosen point lies in its iteration's recorded trust region, centred
    at the best point observed before that iteration, of length 0.8 and then 0.4 or 0.8 by whether the
    first batch improved (batch = d: one failure halves it); a run resumed after iteration 1 searches
    the same regions; a state whose lengths do not follow from its scores, BoTorch and a misspelt
    region are refused."""
    import numpy as np

    def args(out, iterations):
        return ["optimize", "--objective", "expr", "--run", str(run), "--iterations", str(iterations), "--batch", "25",
                "--seeds", "1", "--n-decode", "3", "--inducing", "20", "--gp-epochs", "2", "--gp-lr", "0.01",
                "--device", "cpu", "--search-region", "trust", "--out", str(out)]

    r = CliRunner().invoke(main, args(tmp_path / "t", 2))
    assert r.exit_code == 0, r.output
    state = json.loads((tmp_path / "t" / "state" / "seed-1.json").read_text())
    assert state["settings"]["gp"]["region"] == "trust" and "region_quantile" not in state["settings"]["gp"]
    data = np.load(next((tmp_path / "t").glob("data-*.npz")))
    z, y = data["z"], data["y"]
    assert z.shape[1] <= 25  # so one failing batch halves the length
    x_seen, y_seen = z[state["train"]], y[state["train"]]
    box_lo, box_hi = x_seen.min(0), x_seen.max(0)
    first = [e["score"] for e in state["iterations"][0]["evaluations"]]
    improved = min(first) < y_seen.min() - 1e-3 * abs(y_seen.min())
    assert [it["trust"]["length"] for it in state["iterations"]] == [0.8, 0.8 if improved else 0.4]
    for it in state["iterations"]:
        lo, hi = np.array(it["trust"]["lower"]), np.array(it["trust"]["upper"])
        points = np.array(it["points"])
        assert ((points >= lo - 1e-9) & (points <= hi + 1e-9)).all()
        best = x_seen[np.argmin(y_seen)]  # the region's centre where the box does not cut it
        uncut = (lo > box_lo) & (hi < box_hi)
        assert uncut.any() and np.allclose(((lo + hi) / 2)[uncut], best[uncut])
        assert np.prod((hi - lo) / (box_hi - box_lo)) < it["trust"]["length"] ** z.shape[1] + 1e-12
        x_seen = np.concatenate([x_seen, points])
        y_seen = np.concatenate([y_seen, [e["score"] for e in it["evaluations"]]])
    # stopped after iteration 1 and resumed: the same regions
    for n in (1, 2):
        r = CliRunner().invoke(main, args(tmp_path / "r", n))
        assert r.exit_code == 0, r.output
    resumed = json.loads((tmp_path / "r" / "state" / "seed-1.json").read_text())
    for a, b in zip(state["iterations"], resumed["iterations"], strict=True):
        assert a["trust"]["length"] == b["trust"]["length"]
        np.testing.assert_allclose(a["trust"]["lower"], b["trust"]["lower"], atol=1e-6)
    # a recorded length its scores do not give is refused on resume
    resumed["iterations"][1]["trust"]["length"] = 1.6
    (tmp_path / "r" / "state" / "seed-1.json").write_text(json.dumps(resumed))
    r = CliRunner().invoke(main, args(tmp_path / "r", 3))
    assert r.exit_code == 1 and "trust region lengths" in r.output, r.output
    r = CliRunner().invoke(main, args(tmp_path / "b", 1) + ["--gp", "botorch"])
    assert r.exit_code == 1 and "lengthscales" in r.output and "encoding" not in r.output, r.output
    # through the Python API a misspelt region is refused, not searched as the box
    from grammar_rae.errors import ConfigError
    from grammar_rae.optimize.bo import optimize

    with pytest.raises(ConfigError, match="unknown search region 'trsut'"):
        optimize(run, "expr", tmp_path / "api", gp_kw={"region": "trsut"})
    assert not (tmp_path / "api").exists()


class _GridNet:
    """A stand-in decoder: a code decodes (every sample alike) to the cell of a unit grid its first two
    coordinates fall in, so nearby codes share a string and farther ones do not."""

    def decode_repeated(self, z, n, sample=True, generator=None):
        import types

        cells = [f"c{int(a // 1)}:{int(b // 1)}" for a, b in z[:, :2].tolist()]
        for _ in range(n):
            yield types.SimpleNamespace(strings=list(cells))


def test_decode_new_never_repeats_an_evaluation_and_moves_points_to_new_strings():
    """Five points on one spot: the protocol's rule evaluates one string five times; decode_new keeps the
    first point, moves the others to perturbations whose decodes are new (inside the box it is given),
    and leaves known strings alone; a point with nothing new anywhere keeps the protocol's choice."""
    import numpy as np

    from grammar_rae.optimize.bo import decode_new, decode_points

    net, ok = _GridNet(), (lambda s: True)
    pts = np.full((5, 3), 0.5)
    box = (np.full(3, -3.0), np.full(3, 4.0))
    assert decode_points(net, pts, 3, ok, 0, "cpu") == ["c0:0"] * 5            # what the protocol evaluates
    moved, strings = decode_new(net, pts, 3, ok, 0, "cpu", known={"c1:0"}, box=box, scale=np.ones(3))
    assert strings[0] == "c0:0" and np.allclose(moved[0], 0.5)                   # new: kept where it was
    assert len(set(strings)) == 5 and "c1:0" not in strings                     # all new, none known
    assert all(s == f"c{int(a // 1)}:{int(b // 1)}" for s, (a, b, _) in zip(strings, moved))   # moved with its string
    assert ((moved >= box[0]) & (moved <= box[1])).all()
    # only the points' own cell is inside: nothing new can be found, so the protocol's choice is kept
    _, strings = decode_new(net, pts[:2], 3, ok, 0, "cpu", known=set(), box=box, scale=np.ones(3),
                            inside=lambda c: (np.floor(c[:, 0]) == 0) & (np.floor(c[:, 1]) == 0))
    assert strings == ["c0:0", "c0:0"]
    # an invalid decode is never chosen, new or not
    _, strings = decode_new(net, pts[:1], 3, lambda s: s != "c0:0", 0, "cpu", known=set(), box=box, scale=np.ones(3))
    assert strings[0] not in (None, "c0:0")


def test_gp_rows_keep_the_best_tenth_and_a_seeded_sample():
    import numpy as np

    from grammar_rae.optimize.bo import gp_rows

    y = np.random.default_rng(0).normal(size=5000)
    assert np.array_equal(gp_rows(y, None, True, 1), np.arange(5000))
    assert np.array_equal(gp_rows(y, 9000, True, 1), np.arange(5000))
    for maximise in (True, False):
        rows = gp_rows(y, 1000, maximise, seed=1)
        assert len(rows) == len(set(rows.tolist())) == 1000 and np.all(np.diff(rows) > 0)
        best = np.argsort(-y if maximise else y)[:100]
        assert set(best.tolist()) <= set(rows.tolist())                        # the best tenth, all of it
        assert np.array_equal(rows, gp_rows(y, 1000, maximise, seed=1))         # seeded
        assert not np.array_equal(rows, gp_rows(y, 1000, maximise, seed=2))
        rest = np.setdiff1d(rows, best)
        assert abs(np.median(y[rest])) < 0.15                                   # the others: a uniform sample


def test_the_default_protocol_evaluates_no_string_twice(run, tmp_path):
    """On the tiny model the protocol's batches decode to few distinct strings (repeats); the default
    preset's every evaluation is a string the run had not evaluated, across iterations and on resume."""
    args = ["optimize", "--objective", "expr", "--target", "x * 3", "--run", str(run), "--iterations", "2",
            "--batch", "8", "--n-decode", "3", "--inducing", "20", "--gp-epochs", "2", "--device", "cpu"]
    r = CliRunner().invoke(main, args + ["--protocol", "gvae", "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    protocol = [e["string"] for e in json.loads((tmp_path / "p" / "report.json").read_text())["evaluations"]]
    assert len(set(protocol)) < len(protocol)
    r = CliRunner().invoke(main, args[:8] + ["1"] + args[9:] + ["--out", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "d")])         # resumed for iteration 2
    assert r.exit_code == 0 and "resuming after iteration 1" in r.output, r.output
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    strings = [e["string"] for e in report["evaluations"]]
    assert len(strings) == 16 and len(set(strings)) == 16 and None not in strings
    assert report["protocol"] == "default" and report["new_only"] is True
    state = json.loads((tmp_path / "d" / "state" / "seed-1.json").read_text())
    assert state["settings"]["new_only"] is True and state["settings"]["gp"]["local"] == 0.5


def test_a_default_run_on_a_thinned_gp_resumes_to_what_an_uninterrupted_one_proposes(run, tmp_path):
    """--gp-rows 30 (of 270 training codes): stopped after iteration 1 and resumed, the default preset proposes
    and evaluates exactly what one uninterrupted run does (GP rows, moved points and the strings already
    evaluated are all rebuilt from the state); the state records the rows."""
    args = ["optimize", "--objective", "expr", "--target", "x * 3", "--run", str(run), "--batch", "6", "--n-decode", "3",
            "--inducing", "10", "--gp-epochs", "2", "--gp-rows", "30", "--device", "cpu"]
    r = CliRunner().invoke(main, args + ["--iterations", "2", "--out", str(tmp_path / "once")])
    assert r.exit_code == 0, r.output
    for n in (1, 2):
        r = CliRunner().invoke(main, args + ["--iterations", str(n), "--out", str(tmp_path / "twice")])
        assert r.exit_code == 0, r.output
    a, b = (json.loads((tmp_path / d / "state" / "seed-1.json").read_text()) for d in ("once", "twice"))
    assert a["settings"]["gp"]["rows"] == 30
    for x, y in zip(a["iterations"], b["iterations"], strict=True):
        assert x["points"] == y["points"] and x["evaluations"] == y["evaluations"]


def test_local_proposals_outside_a_density_region_give_way_to_the_grids_point():
    """A region that holds only x0 < 0 and a pool of candidates all at x0 > 0: every point of the batch,
    local slots included, lies in the region."""
    import numpy as np

    from grammar_rae.optimize.acquisition import batched_greedy_ei
    from grammar_rae.optimize.gp import SparseGP

    class Half:                                   # the density region {x : x0 < 0} of the box [-1, 1]^3
        def sample(self, n, seed=0):
            u = np.random.default_rng(seed).uniform(-1, 1, size=(n, 3))
            u[:, 0] = -np.abs(u[:, 0])
            return u

        def log_prob(self, x):
            return np.where(np.asarray(x)[:, 0] < 0, 0.0, -1e9)

    rng = np.random.default_rng(0)
    z = rng.uniform(-1, 1, size=(300, 3))
    gp = SparseGP.fit(z, z[:, 0] + z[:, 1], n_inducing=20, epochs=5, batch=300, lr=0.03, seed=0)
    pool = rng.uniform(0.2, 1.0, size=(4, 50, 3))  # every candidate outside the region
    pts = batched_greedy_ei(gp, 1.0, -np.ones(3), np.ones(3), batch=4, seed=0, n_grid=500, maxiter=10,
                            maximise=True, density=Half(), threshold=-1.0, local=pool, n_local=2)
    assert pts.shape == (4, 3) and (pts[:, 0] <= 1e-9).all(), pts
