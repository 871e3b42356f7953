"""Image datasets and the image AE family: splits never overlap; each term acts where it should."""
import numpy as np
import pytest
import torch

from grammar_rae.data.images import load_images, read_idx
from grammar_rae.models import regularisers as R
from grammar_rae.models.image_ae import IMAGE_MODELS, ImageAE, ImageAEConfig
from grammar_rae.models.regularisers import mmd_imq


def test_digits_splits_are_disjoint_and_cover_the_set():
    d = load_images("digits")
    assert d.shape == (1, 8, 8) and d.train.dtype == torch.uint8 and int(d.train.max()) == 255
    tr, va, te = (set(d.rows[k].tolist()) for k in ("train", "val", "test"))
    assert not (tr & va) and not (tr & te) and not (va & te) and len(tr | va | te) == 1797
    assert len(d.train) == len(tr) and len(d.val) == len(va) and len(d.test) == len(te)
    assert torch.equal(load_images("digits").val, d.val)  # seeded


def test_mnist_reader_and_split(tmp_path):
    from conftest import MNIST, need

    folder = need(MNIST)
    x = read_idx(folder / "t10k-images-idx3-ubyte.gz")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    d = load_images("mnist", path=folder)
    assert len(d.train) == 54000 and len(d.val) == 6000 and len(d.test) == 10000
    tr, va = set(d.rows["train"].tolist()), set(d.rows["val"].tolist())
    assert not (tr & va) and len(tr | va) == 60000  # validation is never drawn from training rows


def test_a_file_that_is_not_unsigned_byte_idx_is_refused(tmp_path):
    import gzip

    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x00\x00\x0c\x01junk")  # type 0x0c: int32, not the unsigned bytes MNIST holds
    with pytest.raises(ValueError, match="IDX"):
        read_idx(bad)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + (100).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 10)
    with pytest.raises(ValueError, match="header says"):
        read_idx(short)


@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_each_image_model_trains_a_step(model):
    torch.manual_seed(0)
    m = ImageAE(ImageAEConfig(model=model))
    x = load_images("digits").train[:32]
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    total, terms = m.loss(x)
    total.backward()
    opt.step()
    expected = {"rae-l2": {"rec", "z", "reg"}, "rae-gp": {"rec", "z", "reg"}, "rae-sn": {"rec", "z"},
                "rae": {"rec", "z"}, "ae": {"rec"}, "vae": {"rec", "kl"}, "cv-vae": {"rec", "z"},
                "wae": {"rec", "mmd"}, "2s-vae": {"rec", "kl"}}[model]
    assert torch.isfinite(total) and set(terms) == expected
    assert m.decode(torch.randn(4, 8)).shape == (4, 1, 8, 8)


def imq_mmd_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² with k(x, y) = C / (C + ‖x − y‖²), C = 2·d (Tolstikhin et al. 2018, Sec. 4 and
    eq. 4 with σ² = 1), as explicit sums over pairs."""
    n, d = a.shape
    c = 2.0 * d

    def k(x, y):
        return c / (c + ((x - y) ** 2).sum())

    same_a = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    same_b = sum(k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    cross = sum(k(a[i], b[j]) for i in range(n) for j in range(n)) / n ** 2
    return same_a + same_b - 2 * cross


def test_wae_and_2s_vae_losses_are_their_papers_terms():
    """WAE: rec = ‖x − D(μ)‖² and mmd = MMD²(codes, a draw of N(0, I)); 2s-VAE's first stage:
    kl = KL(N(μ, σ²) ‖ N(0, I)) of the encoder's two heads -- each recomputed here from the network's parts."""
    x = load_images("digits").train[:24]
    torch.manual_seed(0)
    wae = ImageAE(ImageAEConfig(model="wae"))
    torch.manual_seed(5)
    _, terms = wae.loss(x)
    with torch.no_grad():
        images = wae.prepare(x)
        codes = wae.to_z(wae.encoder(images))
        torch.manual_seed(5)  # the loss's only random draw is its prior sample
        prior = torch.randn(codes.shape)
        rec = ((wae.decoder(codes) - images) ** 2).sum((1, 2, 3)).mean()
    assert float(terms["rec"].detach()) == pytest.approx(float(rec), rel=1e-5)
    assert float(terms["mmd"].detach()) == pytest.approx(imq_mmd_by_hand(codes.double().numpy(), prior.double().numpy()),
                                                rel=1e-4, abs=1e-6)
    torch.manual_seed(0)
    two_stage = ImageAE(ImageAEConfig(model="2s-vae"))
    _, terms = two_stage.loss(x)
    with torch.no_grad():
        h = two_stage.encoder(two_stage.prepare(x))
        mean, log_var = two_stage.to_z(h), two_stage.to_log_var(h)
        q = torch.distributions.Normal(mean, (0.5 * log_var).exp())
        kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1).mean()
    assert float(terms["kl"].detach()) == pytest.approx(float(kl), rel=1e-5)


def test_mnist_paper_backbone_shapes():
    m = ImageAE(ImageAEConfig(dataset="mnist", model="rae-l2", image_size=32, latent_dim=16, backbone="paper"))
    x = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    assert m.prepare(x).shape == (2, 1, 32, 32) and m.encode(x).shape == (2, 16)
    assert m.config.beta == 1e-4 and m.config.lam == 1e-7


def test_image_regularisers_touch_only_their_parameters():
    m = ImageAE(ImageAEConfig(model="rae-l2"))
    R.decoder_l2(m.decoder).backward()
    assert all(p.grad is None for p in list(m.encoder.parameters()) + list(m.to_z.parameters()))
    assert all(p.grad is not None for p in R.decoder_parameters(m.decoder))
    sn = ImageAE(ImageAEConfig(model="rae-sn"))
    sn.eval()
    w = sn.decoder[0].weight
    assert torch.linalg.matrix_norm(w.detach(), ord=2) < 1.05
    enc = sn.encoder[0]
    assert not hasattr(enc, "parametrizations")


def test_mmd_is_near_zero_for_matching_samples_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(500, 8, generator=g), torch.randn(500, 8, generator=g)
    assert abs(mmd_imq(a, b).item()) < 0.01
    assert mmd_imq(a + 2.0, b).item() > 0.1


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    from grammar_rae.fid import frechet_distance

    a = np.random.default_rng(0).normal(size=(2000, 5))
    assert abs(frechet_distance(a, a)) < 1e-6
    assert frechet_distance(a, a + 0.5) == pytest.approx(5 * 0.25, rel=1e-3)


def test_images_cli_train_sample_evaluate(tmp_path):
    import json

    from click.testing import CliRunner

    from grammar_rae.cli import main

    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["images", "train", "--dataset", "digits", "--model", "rae-l2", "--epochs", "2",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["images", "sample", "--run", str(out), "--n", "16", "--out", str(tmp_path / "s.png")])
    assert r.exit_code == 0 and (tmp_path / "s.png").is_file()
    r = CliRunner().invoke(main, ["images", "evaluate", "--run", str(out), "--n", "200", "--out", str(tmp_path / "ev"),
                                  "--cache-dir", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())[str(out)]
    assert {"rec", "n", "gmm", "interp"} <= set(rep) and all(rep[k] > 0 for k in ("rec", "n", "gmm", "interp"))
    assert rep["reference_test_vs_val"] < rep["n"]  # real held-out images are closer than 2-epoch samples
    assert (out / "eval" / "interp.png").is_file()


def test_a_resumed_image_run_keeps_its_own_settings_and_takes_this_commands_budget(tmp_path):
    import json

    from click.testing import CliRunner

    from grammar_rae.cli import main

    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["images", "train", "--dataset", "digits", "--epochs", "1", "--lr", "1e-3",
                                  "--batch-size", "50", "--limit", "300", "--threads", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    first = json.loads((out / "run.json").read_text())["train"]
    assert (first["lr"], first["batch_size"], first["threads"]) == (1e-3, 50, 1)
    # the same command shape with --resume and only --epochs and the budget flags: lr, batch and the
    # image limit stay the run's own
    r = CliRunner().invoke(main, ["images", "train", "--dataset", "digits", "--resume", "--epochs", "2",
                                  "--max-minutes", "30", "--checkpoint-minutes", "5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "run.json").read_text())
    t = meta["train"]
    assert (t["lr"], t["batch_size"], t["epochs"]) == (1e-3, 50, 2) and meta["limit"] == 300
    assert (t["max_minutes"], t["checkpoint_minutes"], t["threads"]) == (30.0, 5.0, 0)
    assert json.loads((out / "checkpoints" / "last.json").read_text())["epoch"] == 2
