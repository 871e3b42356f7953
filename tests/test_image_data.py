"""CIFAR-10 and CelebA readers, the 2s-VAE second stage, Inception FID plumbing, safe archives."""
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from grammar_rae.data.images import load_images, read_cifar_batch


def _cifar_folder(tmp, python: bool = False, n: int = 20):
    rng = np.random.default_rng(0)
    folder = tmp / ("cifar-10-batches-py" if python else "cifar-10-batches-bin")
    folder.mkdir()
    expected = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, size=n)
        expected[name] = (x.reshape(-1, 3, 32, 32), y)
        if python:
            with open(folder / name, "wb") as f:
                pickle.dump({b"data": x, b"labels": y.tolist(), b"batch_label": b"x"}, f)
        else:
            np.concatenate([y[:, None].astype(np.uint8), x], 1).tofile(folder / f"{name}.bin")
    return folder, expected


@pytest.mark.parametrize("python", [False, True])
def test_cifar_batches_read_exactly_and_split_disjointly(tmp_path, python):
    folder, expected = _cifar_folder(tmp_path, python)
    ext = "" if python else ".bin"
    x, y = read_cifar_batch(folder / f"test_batch{ext}")
    assert np.array_equal(x, expected["test_batch"][0]) and np.array_equal(y, expected["test_batch"][1])
    d = load_images("cifar10", path=tmp_path)  # finds the batches folder inside
    assert d.shape == (3, 32, 32) and len(d.train) == 90 and len(d.val) == 10 and len(d.test) == 20
    assert not set(d.rows["train"].tolist()) & set(d.rows["val"].tolist())
    assert torch.equal(d.test, torch.from_numpy(expected["test_batch"][0]))


def test_cifar_python_batch_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    bad = tmp_path / "test_batch"
    bad.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(ValueError, match="refusing"):
        read_cifar_batch(bad)
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="3073"):
        read_cifar_batch(tmp_path / "junk.bin")


def test_celeba_folder_crop_partition_and_cache(tmp_path):
    from PIL import Image

    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    names = [f"{i:06d}.jpg" for i in range(1, 10)]
    for i, name in enumerate(names):
        arr = np.full((218, 178, 3), 20, np.uint8)
        arr[39:179, 19:159] = 200 + i  # the central 140×140 crop is bright, the border dark
        Image.fromarray(arr).save(folder / name, quality=100)
    (tmp_path / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, [0] * 5 + [1] * 2 + [2] * 2)))
    d = load_images("celeba", path=folder, cache_dir=tmp_path / "cache")
    assert d.shape == (3, 64, 64) and (len(d.train), len(d.val), len(d.test)) == (5, 2, 2)
    assert int(d.train.min()) > 150  # only the crop survives
    assert list((tmp_path / "cache" / "datasets").glob("celeba-64-*.npy"))
    for p in folder.iterdir():  # the cache is used: same array without decoding JPEGs again
        p.write_bytes(p.read_bytes())
    assert torch.equal(load_images("celeba", path=folder, cache_dir=tmp_path / "cache").train, d.train)
    with pytest.raises(FileNotFoundError, match="--data"):
        load_images("celeba")


def test_second_stage_vae_density_fits_samples_and_round_trips(tmp_path):
    from grammar_rae.density import DensityError, ExPostDensity, make_density

    rng = np.random.default_rng(0)
    z = rng.normal(size=(2000, 4)) * [3.0, 1.0, 0.5, 0.1] + [5.0, 0, 0, 1.0]
    d = make_density("two-stage", hidden=64, epochs=30, seed=0).fit(z)
    s = d.sample(4000, seed=1)
    assert s.shape == (4000, 4)
    assert np.allclose(s.mean(0), z.mean(0), atol=0.3 * z.std(0) + 0.05)
    assert np.allclose(s.std(0), z.std(0), rtol=0.4)
    lp = d.log_prob(z[:100])
    assert lp.mean() > d.log_prob(z[:100] + 10 * z.std(0)).mean()
    d.save(tmp_path / "q")
    e = ExPostDensity.load(tmp_path / "q")
    assert np.allclose(e.sample(10, seed=3), d.sample(10, seed=3)) and np.allclose(e.log_prob(z[:5]), lp[:5])
    with pytest.raises(DensityError, match="not fitted"):
        make_density("two-stage").sample(2)


def test_two_stage_vae_image_run_uses_its_second_stage(tmp_path):
    from grammar_rae.image_runs import density_for, load_image_run, train_image_run
    from grammar_rae.trainer import TrainConfig

    out = train_image_run(tmp_path / "r", "digits", "2s-vae", train=TrainConfig(epochs=1, batch_size=100),
                          progress=False, log=lambda *a: None)
    net, _ = load_image_run(out)
    assert net.to_log_var is not None
    assert type(density_for(out, net, "gaussian")).__name__ == "SecondStageVAE"
    assert type(density_for(out, net, "gmm")).__name__ == "ExPostDensity"


class _FakeInception(torch.nn.Module):
    """Stands in for inception-2015-12-05.pt: same call signature, uint8 [N, 3, H, W] in."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = x.float()
        feats = torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), x[:, 0].mean((1, 2)) - x[:, 2].mean((1, 2))], 1)
        return feats if return_features else feats.sum(1, keepdim=True)


def test_inception_features_from_a_torchscript_file(tmp_path):
    from grammar_rae.fid import InceptionFeatures, frechet_distance

    path = tmp_path / "inception.pt"
    torch.jit.script(_FakeInception()).save(str(path))
    f = InceptionFeatures(path)
    g = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 200, (300, 1, 8, 8), dtype=torch.uint8, generator=g)
    a = f(grey)
    assert a.shape == (300, 3) and np.allclose(a[:, 2], 0)  # grey repeated to 3 equal channels
    assert frechet_distance(a, a) < 1e-6 and frechet_distance(f(grey + 40), a) > 100
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="TorchScript"):
        InceptionFeatures(tmp_path / "bad.pt")


def test_download_checks_md5_and_unpacks_archives_safely(tmp_path, monkeypatch):
    from grammar_rae.data import download as D

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"hello"
        info = tarfile.TarInfo("pack/a.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    archive = tmp_path / "src" / "pack.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(buf.getvalue())
    import hashlib

    md5 = hashlib.md5(buf.getvalue()).hexdigest()
    monkeypatch.setitem(D.DATASETS, "toy", (D.RemoteFile("pack.tar.gz", f"md5:{md5}", (), extract="pack"),))
    out = D.fetch("toy", cache_dir=tmp_path / "cache", path=archive)
    assert (out / "pack" / "a.txt").read_bytes() == b"hello"
    monkeypatch.setitem(D.DATASETS, "toy2", (D.RemoteFile("pack.tar.gz", "md5:" + "0" * 32, (), extract="pack"),))
    with pytest.raises(D.ChecksumError, match="md5"):
        D.fetch("toy2", cache_dir=tmp_path / "cache2", path=archive)
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    bad = tmp_path / "evil.tar.gz"
    bad.write_bytes(evil.getvalue())
    with pytest.raises(tarfile.TarError):
        D._extract(bad, "evil")
    assert not (tmp_path / "escape.txt").exists()
