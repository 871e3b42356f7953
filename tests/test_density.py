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
        make_density("flow")
    (tmp_path / "x.json").write_text('{"format": "something-else"}')
    with pytest.raises(DensityError, match="not a grammar-rae density"):
        ExPostDensity.load(tmp_path / "x")
    (tmp_path / "y.json").write_text('{"format": "grammar-rae-density/1", "kind": "gmm", "k": 2, "seed": 0, "reg_covar": 1e-6}')
    (tmp_path / "y.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(DensityError, match="cannot read"):
        ExPostDensity.load(tmp_path / "y")
