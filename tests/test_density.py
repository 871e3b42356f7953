"""Ex-post densities: one interface, correct likelihoods, k selection, safe files."""
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from grammar_rae.density import DensityError, ExPostDensity, make_density


def two_blobs(n=600, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal([-4, 0, 1], 0.5, size=(n // 2, 3))
    b = rng.normal([4, 1, -1], [0.3, 1.0, 0.2], size=(n // 2, 3))
    return np.vstack([a, b])


def test_gaussian_matches_scipy():
    z = two_blobs()
    d = make_density("gaussian").fit(z)
    ref = multivariate_normal(z.mean(0), np.cov(z, rowvar=False) + 1e-6 * np.eye(3))  # reg_covar
    assert np.allclose(d.log_prob(z[:20]), ref.logpdf(z[:20]), rtol=1e-6)


def test_prior_is_standard_normal():
    d = make_density("prior").fit(None, dim=4)
    x = np.random.default_rng(1).normal(size=(10, 4))
    assert np.allclose(d.log_prob(x), multivariate_normal(np.zeros(4), np.eye(4)).logpdf(x))
    s = d.sample(20000, seed=3)
    assert s.shape == (20000, 4) and abs(s.mean()) < 0.03 and abs(s.std() - 1) < 0.03


def test_gmm_beats_gaussian_on_multimodal_codes_and_samples_land_on_modes():
    z = two_blobs()
    g = make_density("gaussian").fit(z)
    m = make_density("gmm", k=2).fit(z)
    held = two_blobs(seed=9)
    assert m.log_prob(held).mean() > g.log_prob(held).mean() + 1.0
    s = m.sample(2000, seed=0)
    assert (np.minimum(abs(s[:, 0] + 4), abs(s[:, 0] - 4)) < 2).mean() > 0.99


def test_auto_k_prefers_more_than_one_component():
    d = make_density("gmm", k="auto", k_candidates=(1, 2, 5)).fit(two_blobs())
    assert d.k in (2, 5) and set(d.selection) == {1, 2, 5}
    assert d.selection[d.k] == max(d.selection.values())


def test_save_load_round_trip_without_pickle(tmp_path):
    d = make_density("gmm", k=3).fit(two_blobs())
    d.save(tmp_path / "q")
    assert {p.name for p in tmp_path.iterdir()} == {"q.json", "q.safetensors"}
    e = ExPostDensity.load(tmp_path / "q")
    x = two_blobs(seed=5)[:10]
    assert np.allclose(d.log_prob(x), e.log_prob(x)) and np.allclose(d.sample(5, seed=1), e.sample(5, seed=1))


def test_bad_inputs_and_files(tmp_path):
    with pytest.raises(DensityError, match="NaN"):
        make_density("gaussian").fit(np.array([[0.0, np.nan]]))
    with pytest.raises(DensityError, match="not fitted"):
        make_density("gmm").sample(3)
    with pytest.raises(DensityError, match="unknown density"):
        make_density("spline-flow")
    (tmp_path / "x.json").write_text('{"format": "something-else"}')
    with pytest.raises(DensityError, match="not a grammar-rae density"):
        ExPostDensity.load(tmp_path / "x")
    (tmp_path / "y.json").write_text('{"format": "grammar-rae-density/1", "kind": "gmm", "k": 2, "seed": 0, "reg_covar": 1e-6}')
    (tmp_path / "y.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(DensityError, match="cannot read"):
        ExPostDensity.load(tmp_path / "y")


def ring(n=3000, seed=0):
    """Codes on a noisy circle in the first two of four dimensions: one Gaussian puts its mass in the hole."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 2 * np.pi, n)
    r = 3 + 0.15 * rng.standard_normal(n)
    return np.c_[r * np.cos(a), r * np.sin(a), rng.normal(0, 0.5, (n, 2))]


def test_a_flow_fits_what_one_gaussian_cannot_and_round_trips(tmp_path):
    z = ring()
    flow = make_density("flow", layers=6, hidden=64, epochs=60, patience=8).fit(z)
    gauss = make_density("gaussian").fit(z)
    held = ring(seed=7)
    assert flow.log_prob(held).mean() > gauss.log_prob(held).mean() + 0.5
    assert flow.held_out == pytest.approx(flow.log_prob(z).mean(), abs=0.5)   # the kept epoch's held-out fit
    s = flow.sample(4000, seed=0)
    radius = np.hypot(s[:, 0], s[:, 1])
    g_radius = np.hypot(*gauss.sample(4000, seed=0)[:, :2].T)
    # the flow's samples stay near the ring; the Gaussian's fill its hole
    assert np.mean(abs(radius - 3) < 0.75) > 0.85 and np.mean(abs(g_radius - 3) < 0.75) < 0.6
    assert np.mean(np.hypot(*flow.sample(4000, seed=0, temperature=0.5)[:, :2].T) < 1.5) < np.mean(g_radius < 1.5)
    # seeded, and saved without pickle: the same density back
    again = make_density("flow", layers=6, hidden=64, epochs=60, patience=8).fit(z)
    assert np.allclose(again.log_prob(held[:50]), flow.log_prob(held[:50]))
    flow.save(tmp_path / "flow")
    back = ExPostDensity.load(tmp_path / "flow")
    assert type(back).__name__ == "FlowDensity" and back.epochs_run == flow.epochs_run
    assert np.allclose(back.log_prob(held[:50]), flow.log_prob(held[:50]))
    assert np.array_equal(back.sample(10, seed=3), flow.sample(10, seed=3))
    with open(tmp_path / "flow.safetensors", "r+b") as f:   # a flipped byte: the checksum refuses it
        f.seek(-3, 2)
        f.write(b"\x00\x01\x02")
    with pytest.raises(DensityError):
        ExPostDensity.load(tmp_path / "flow")
    with pytest.raises(DensityError, match="at least"):
        make_density("flow").fit(z[:5])
