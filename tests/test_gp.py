"""Sparse GP and expected improvement."""

import numpy as np
import pytest
import torch

from grammar_rae.optimize.acquisition import (BelievedGP, batched_greedy_ei, expected_improvement,
                                              log_expected_improvement)
from grammar_rae.optimize.gp import SparseGP


def smooth(x):
    return np.sin(3 * x[:, 0]) + 0.5 * np.cos(2 * x[:, 1]) + 0.2 * x[:, 0] * x[:, 1]


def data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, 2))
    return x, smooth(x) + 0.05 * rng.standard_normal(n)


@pytest.fixture(scope="module")
def gp():
    x, y = data(1500, 0)
    return SparseGP.fit(x, y, n_inducing=60, epochs=60, batch=500, lr=0.02, seed=0)


def test_sparse_gp_recovers_a_smooth_function(gp):
    xt, yt = data(500, 1)
    m = gp.test_metrics(xt, yt)
    assert m["rmse"] < 0.15, m          # the function's own std is ~0.8
    assert m["log_likelihood"] > 0.0, m
    _, var = gp.predict(np.array([[10.0, 10.0]]), include_noise=False)
    assert var[0] > 0.5 * np.var(data(1500, 0)[1])  # far from data the prior variance returns


def test_expected_improvement_matches_its_closed_form_and_monte_carlo():
    mean, var, best = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([0.25, 1.0, 0.01]), 0.5
    ei = expected_improvement(mean, var, best)
    from scipy.stats import norm

    s = var.sqrt().numpy()
    u = (mean.numpy() - best) / s
    closed = (mean.numpy() - best) * norm.cdf(u) + s * norm.pdf(u)
    assert np.allclose(ei.numpy(), closed)
    samples = mean.numpy() + s * np.random.default_rng(0).standard_normal((400000, 3))
    assert np.allclose(ei.numpy(), np.maximum(samples - best, 0).mean(0), atol=3e-3)


def test_kriging_believer_shrinks_variance_near_chosen_points_only(gp):
    b = BelievedGP(gp)
    here, far = torch.tensor([[0.5, 0.5]], dtype=torch.float64), torch.tensor([[-1.5, 1.5]], dtype=torch.float64)
    with torch.no_grad():
        m0, v0 = b.mean_var(torch.cat([here, far]))
        b.believe(here[0])
        m1, v1 = b.mean_var(torch.cat([here, far]))
    assert torch.allclose(m0, m1) and v1[0] < 0.5 * v0[0] and v1[1] > 0.95 * v0[1]


def test_log_expected_improvement_is_accurate_where_ei_underflows():
    from scipy.special import erfcx

    u = np.concatenate([np.linspace(-40, 6, 400), [-10.0001, -9.9999]])
    sigma = 0.7
    mean, var = torch.as_tensor(u * sigma), torch.full((len(u),), sigma ** 2, dtype=torch.float64)
    got = log_expected_improvement(mean, var, 0.0).numpy()
    # independent: u Φ(u) + φ(u) = exp(−u²/2) (½ u erfcx(−u/√2) + 1/√(2π)), erfcx accurate in the tail
    want = np.log(sigma) - u ** 2 / 2 + np.log(0.5 * u * erfcx(-u / np.sqrt(2)) + 1 / np.sqrt(2 * np.pi))
    assert np.allclose(got, want, rtol=0, atol=2e-6), np.abs(got - want).max()
    near = u > -5
    assert np.allclose(got[near], np.log(expected_improvement(mean, var, 0.0).numpy()[near]), atol=1e-9)
    x = torch.tensor([-30.0, -6.0, 0.0], dtype=torch.float64, requires_grad=True)
    log_expected_improvement(x, torch.ones(3, dtype=torch.float64), 0.0).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad > 0).all()  # uphill towards the incumbent everywhere


def test_grid_search_refines_the_best_grid_point(gp):
    """The GVAE's search: the first point's log EI is at least the best grid point's, which it starts from."""
    from grammar_rae.optimize.acquisition import Region

    _, y = data(1500, 0)
    lo, hi = torch.tensor([-2.0, -2.0], dtype=torch.float64), torch.tensor([2.0, 2.0], dtype=torch.float64)
    f_best = (y.max() - gp.y_mean) / gp.y_std
    x = batched_greedy_ei(gp, best=y.max(), lower=lo.numpy(), upper=hi.numpy(), batch=1, n_grid=50, seed=3)
    with torch.no_grad():
        grid = Region(lo, hi).grid(50, torch.Generator().manual_seed(3))
        on_grid = log_expected_improvement(*gp.latent(grid), f_best).max()
        chosen = log_expected_improvement(*gp.latent(torch.as_tensor(x)), f_best)[0]
    assert chosen > on_grid + 1e-3  # 50 grid points leave room; L-BFGS-B climbs from the best of them


@pytest.mark.parametrize("search,apart", [("grid", 1e-4), ("multistart", 0.05)])
def test_a_weak_incumbent_does_not_pile_the_batch_onto_one_point(gp, search, apart):
    """An incumbent far below the GP's best mean (a local incumbent search can end there): the first
    point improves on it without any variance, so unless the incumbent is raised, EI stays high there
    after believing it and the next points land on it again (without: grid 0.0 apart, multistart 0.003)."""
    _, y = data(1500, 0)
    x = batched_greedy_ei(gp, best=float(np.median(y)), lower=np.array([-2, -2]), upper=np.array([2, 2]), batch=6,
                          search=search, n_grid=500, maxiter=50, n_candidates=300, steps=20, seed=0)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)[np.triu_indices(6, 1)]
    assert d.min() > apart, d


@pytest.mark.parametrize("search", ["grid", "multistart"])
def test_batched_greedy_ei_spreads_its_batch_inside_the_box(gp, search):
    _, y = data(1500, 0)
    box = dict(lower=np.array([-2, -2]), upper=np.array([2, 2]), n_candidates=300, steps=20, seed=0, search=search,
               n_grid=500, maxiter=50)
    x = batched_greedy_ei(gp, best=y.max(), batch=5, **box)
    assert x.shape == (5, 2) and (x >= -2).all() and (x <= 2).all()
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)[np.triu_indices(5, 1)]
    assert d.min() > 0.1  # the believer keeps points apart
    assert gp.predict(x[:1])[0][0] > 1.3  # the first point sits near the maximum (~1.6)
    xm = batched_greedy_ei(gp, best=y.min(), batch=3, maximise=False, **box)
    assert gp.predict(xm[:1])[0][0] < -1.5  # minimising: near the minimum (~ -2)


def test_believed_posterior_equals_conditioning_the_joint_gaussian(gp):
    """The cached Kriging-believer update is exactly the Gaussian conditional of the joint posterior."""
    b = BelievedGP(gp)
    g = torch.Generator().manual_seed(1)
    xf = torch.rand(4, 2, generator=g, dtype=torch.float64) * 4 - 2
    for x in xf:
        b.believe(x)
    x = torch.rand(7, 2, generator=g, dtype=torch.float64) * 4 - 2
    with torch.no_grad():
        mean, var = b.mean_var(x)
        m0, cov = gp.latent(torch.cat([xf, x]), full_cov=True)
    c_ff = cov[:4, :4] + 1e-6 * torch.eye(4, dtype=cov.dtype)
    expected = cov.diagonal()[4:] - (cov[:4, 4:] * torch.linalg.solve(c_ff, cov[:4, 4:])).sum(0)
    assert torch.allclose(mean, m0[4:]) and torch.allclose(var, expected.clamp_min(1e-12), atol=1e-9)


def test_warm_started_gp_keeps_what_it_learnt(gp):
    x, y = data(1500, 0)
    xt, yt = data(500, 1)
    same = SparseGP.fit(x, y, epochs=0, batch=500, init=gp)  # zero epochs: the warm GP itself
    assert np.allclose(same.predict(xt)[0], gp.predict(xt)[0])
    cold = SparseGP.fit(x, y, n_inducing=60, epochs=1, batch=500, lr=0.02, seed=0)
    warm = SparseGP.fit(x, y, epochs=1, batch=500, lr=0.02, seed=0, init=gp)
    assert warm.test_metrics(xt, yt)["rmse"] < cold.test_metrics(xt, yt)["rmse"]


def test_botorch_route_fits_and_proposes_inside_the_box():
    pytest.importorskip("botorch")
    from grammar_rae.optimize.botorch_gp import fit_and_propose

    x, y = data(600, 0)
    xt, yt = data(200, 1)
    lo, hi = np.array([-2.0, -2.0]), np.array([2.0, 2.0])
    pts, m = fit_and_propose(x, y, lo, hi, batch=4, maximise=True, n_inducing=40, epochs=200, lr=0.05,
                             minibatch=200, seed=0, x_test=xt, y_test=yt, num_restarts=2, raw_samples=64)
    assert m["rmse"] < 0.35 * np.std(yt) and m["log_likelihood"] > -1.0
    assert pts.shape == (4, 2) and (pts >= lo - 1e-9).all() and (pts <= hi + 1e-9).all()
    assert len({tuple(np.round(p, 3)) for p in pts}) == 4  # sequential qLogEI spreads the batch
    assert smooth(pts).mean() > np.mean(y)  # the proposals aim at high values


def test_elbo_equals_hensman_eq4_written_out_point_by_point():
    """The summed-variance ELBO (one Gram product) equals eq. 4 evaluated per point from the
    predictive marginals, in value and in every parameter's gradient."""
    x, y = data(300, 3)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    gp = SparseGP(xt[:40].clone(), lengthscale=0.7, noise=0.2)
    with torch.no_grad():  # a non-trivial q(v): random mean, random lower-triangular S
        g = torch.Generator().manual_seed(0)
        gp.q_mean.copy_(torch.randn(40, generator=g, dtype=torch.float64))
        gp.q_sqrt.copy_(torch.eye(40, dtype=torch.float64) + 0.1 * torch.randn(40, 40, generator=g, dtype=torch.float64))
        gp.log_outputscale.fill_(0.3)

    def direct():
        mean, var = gp.latent(xt)
        s2 = gp.log_noise.exp()
        ll = -0.5 * torch.log(2 * torch.pi * s2) - (yt - mean) ** 2 / (2 * s2) - var / (2 * s2)
        s = torch.tril(gp.q_sqrt)
        kl = 0.5 * ((s ** 2).sum() + (gp.q_mean ** 2).sum() - 40 - torch.log(s.diagonal() ** 2).sum())
        return 1000 / 300 * ll.sum() - kl

    grads = []
    for f in (lambda: gp.elbo(xt, yt, 1000), direct):
        gp.zero_grad()
        value = f()
        value.backward()
        grads.append((value.item(), [p.grad.clone() for p in gp.parameters()]))
    (v1, g1), (v2, g2) = grads
    assert abs(v1 - v2) < 1e-8 * abs(v2)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)


@pytest.fixture(scope="module")
def disk_region():
    """A Gaussian density of codes around (−0.5, 1.5), std 0.3, and its 1% log-density quantile: a disk
    of radius ≈ 0.9 where the function stays below 0.58, leaving out its maximum (1.52 at (−1.58, −0.16))."""
    from grammar_rae.density import make_density

    codes = np.random.default_rng(0).normal((-0.5, 1.5), 0.3, size=(4000, 2))
    density = make_density("gaussian").fit(codes)
    return density, float(np.quantile(density.log_prob(codes), 0.01))


def test_region_grid_and_pull_stay_inside_the_density_region(disk_region):
    from grammar_rae.optimize.acquisition import Region

    density, tau = disk_region
    region = Region(np.array([-2.0, -2.0]), np.array([2.0, 2.0]), density, tau)
    grid = region.grid(500, torch.Generator().manual_seed(0))
    assert grid.shape == (500, 2) and (density.log_prob(grid.numpy()) >= tau).all()
    assert (grid >= -2).all() and (grid <= 2).all() and grid.std(0).min() > 0.2  # spread over the disk
    start, outside = torch.tensor([-0.5, 1.5], dtype=torch.float64), torch.tensor([1.5, -1.5], dtype=torch.float64)
    x = region.pull(start, outside)
    t = (x - start) / (outside - start)
    assert torch.allclose(t[0], t[1]) and 0 < t[0] < 1  # on the segment start → outside
    lp = density.log_prob(x.numpy()[None])[0]
    assert tau <= lp < tau + 0.01  # at the region's edge
    inside = torch.tensor([-0.7, 1.6], dtype=torch.float64)
    assert torch.equal(region.pull(start, inside), inside)  # inside: unchanged


def test_density_region_keeps_ei_and_the_incumbent_inside_it(gp, disk_region):
    """The GP's maximum lies outside the region: the box's search goes there, the region's does not,
    and the region's incumbent is its own best mean (below the box's)."""
    from grammar_rae.optimize.acquisition import posterior_mean_incumbent

    density, tau = disk_region
    box = dict(lower=np.array([-2, -2]), upper=np.array([2, 2]), seed=0, n_grid=500)
    inc_box = posterior_mean_incumbent(gp, steps=50, **box)
    inc_region = posterior_mean_incumbent(gp, steps=50, density=density, threshold=tau, **box)
    x_box = batched_greedy_ei(gp, inc_box, batch=4, maxiter=50, **box)
    x_region = batched_greedy_ei(gp, inc_region, batch=4, maxiter=50, density=density, threshold=tau, **box)
    assert (density.log_prob(x_region) >= tau - 1e-9).all()
    assert (density.log_prob(x_box) < tau).any()
    disk = torch.as_tensor(np.random.default_rng(1).normal((-0.5, 1.5), 0.3, size=(20000, 2)))
    disk = disk[torch.as_tensor(density.log_prob(disk.numpy()) >= tau)]
    best_in_disk = gp.predict(disk)[0].max()
    assert best_in_disk - 0.02 <= inc_region < inc_box - 0.3, (inc_region, best_in_disk, inc_box)
    with pytest.raises(ValueError, match="grid search only"):
        batched_greedy_ei(gp, inc_region, batch=1, search="multistart", density=density, threshold=tau, **box)


class StrayTensors(torch.overrides.TorchFunctionMode):
    """Tensors that grammar_rae.optimize creates without saying where land on the meta device.

    ``SparseGP.fit(device="cuda")`` keeps its data on the GPU; a factory call without a device (the
    ``torch.eye`` of the inducing Cholesky) makes a CPU tensor, and adding it to the GPU's fails. No
    GPU is needed to see it: with the GP on the CPU, such a tensor is sent to the meta device instead,
    where mixing it with the GP's tensors fails the same way (and any that slip through are listed).
    Only calls made directly by the package count: torch's own (Adam's step counter) are left alone."""

    FACTORIES = {torch.eye, torch.zeros, torch.ones, torch.full, torch.empty, torch.rand, torch.randn,
                 torch.randint, torch.randperm, torch.arange, torch.linspace, torch.tensor, torch.as_tensor,
                 torch.scalar_tensor}

    def __init__(self):
        super().__init__()
        self.strays = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        import sys

        kwargs = dict(kwargs or {})
        caller = sys._getframe(1).f_code.co_filename  # factories are C functions: the frame that called it
        made_here = "grammar_rae/optimize/" in caller.replace("\\", "/")
        from_tensor = func in (torch.tensor, torch.as_tensor) and isinstance(args[0], torch.Tensor)
        if func in self.FACTORIES and made_here and kwargs.get("device") is None and not from_tensor:
            self.strays.append(f"{func.__name__} at {caller}:{sys._getframe(1).f_lineno}")
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def fit_and_acquire(region=None):
    """Fit, predict, the incumbent and both EI searches on a tiny problem."""
    from grammar_rae.optimize.acquisition import posterior_mean_incumbent

    x, y = data(200, 5)
    gp = SparseGP.fit(x, y, n_inducing=20, epochs=3, batch=100, lr=0.02, seed=0, device="cpu")
    out = {"predict": np.concatenate(gp.predict(x[:10])), "rmse": gp.test_metrics(x[:50], y[:50])["rmse"]}
    box = dict(lower=np.array([-2, -2]), upper=np.array([2, 2]), seed=1)
    density, tau = region if region is not None else (None, None)
    for search in ("grid", "multistart"):
        where = dict(density=density, threshold=tau) if search == "grid" else {}
        best = posterior_mean_incumbent(gp, search=search, n_grid=200, steps=10, **box, **where)
        out[search] = batched_greedy_ei(gp, best, batch=3, search=search, n_grid=200, maxiter=10, n_candidates=50,
                                        steps=5, **box, **where)
        out[f"{search}-incumbent"] = best
    return out


def test_the_gp_and_acquisition_make_every_tensor_on_the_gps_device(disk_region):
    plain = fit_and_acquire(disk_region)
    mode = StrayTensors()
    with mode:
        checked = fit_and_acquire(disk_region)
    assert mode.strays == []
    for k in plain:  # the same numbers: no tensor went elsewhere unnoticed
        np.testing.assert_array_equal(checked[k], plain[k], err_msg=k)
