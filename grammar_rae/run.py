"""Grammar-model runs: train into a run directory, load one back safely, sample from it.

A run directory is self-contained: ``run.json`` (configs, data provenance, split sizes),
``grammar.cfg`` (the grammar it was trained with; its sha256 is checked on load), ``split.npz``
(row indices of train/val/test in the prepared dataset), ``checkpoints/`` (see checkpoint.py),
``density/`` (ex-post densities fitted on the training codes) and ``loss.png``.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .checkpoint import RUN_FORMAT, RunError, load_model_state, read_json, write_json
from .data.shipped import resolve_source
from .density import DensityError, ExPostDensity, make_density
from .grammar import Grammar, GrammarError, load_grammar
from .models.grammar_ae import GrammarAE, GrammarAEConfig
from .train import Trainer, TrainConfig, distributed, resolve_device

MIN_ROWS = 20
MIN_STEPS = {"smiles": 277, "expr": 15, "smiles-chars": 120}  # the GrammarVAE's decoder lengths


def split_rows(n: int, seed: int, val_fraction: float = 0.1, test_rows: int | None = None, test: str = "first"):
    """Test rows (default min(5000, n/10)): ``first`` -- the first rows (ZINC: 5,000, the GrammarVAE
    protocol; ZINC250k's file is in random order) -- or ``random``, a seeded sample (for files in a
    systematic order, such as the enumerated expression set, whose first rows are one corner of the
    language). The rest is split at random (seeded) into train and validation."""
    test_rows = min(5000, n // 10) if test_rows is None else test_rows
    rng = np.random.default_rng(seed)
    if test == "first":
        test_idx = np.arange(test_rows)
    elif test == "random":
        test_idx = np.sort(np.random.default_rng(seed + 1).choice(n, size=test_rows, replace=False))
    else:
        raise ValueError(f"test split must be 'first' or 'random', not {test!r}")
    rest = rng.permutation(np.setdiff1d(np.arange(n), test_idx))
    n_val = max(1, int(round(len(rest) * val_fraction)))
    return np.sort(rest[n_val:]), np.sort(rest[:n_val]), test_idx


def default_dataset(grammar: Grammar, data: str | Path | None, out: Path, cache_dir=None, progress=True,
                    limit: int | None = None):
    """The prepared dataset a `train` run uses: ``data`` if given, else the shipped data set of the
    grammar -- the GrammarVAE's expression set, or ZINC250k (a downloaded copy in the cache wins)."""
    from .data.download import zinc250k_path
    from .data.parsed import prepare_dataset
    from .data.shipped import shipped_path

    base = grammar.name.removesuffix("-chars")
    if data is None:
        if base == "expr":
            data = shipped_path("expressions", cache_dir)
        elif base == "smiles":
            data = zinc250k_path(cache_dir)
        else:
            raise FileNotFoundError(f"grammar {base!r} has no default data set: pass --data PATH")
    return prepare_dataset(grammar, data, cache_dir=cache_dir, progress=progress)


def train_run(out: str | Path, grammar: str = "expr", model: str = "rae-l2", data=None, limit: int | None = None,
              train: TrainConfig | None = None, resume: bool = False, progress: bool = True, log=print,
              cache_dir=None, test_split: str | None = None, arch: str = "teacher-forced",
              init_from: str | Path | None = None, **model_overrides) -> Path:
    """Train a grammar model into ``out`` (or continue it with ``resume``) and fit its densities.

    ``train``: default, the recipe for the grammar, architecture and device (recipes.py); the
    recipe's network sizes apply unless ``model_overrides`` name others.
    ``test_split``: ``first`` (default for SMILES: the GrammarVAE's first 5,000 rows) or ``random``
    (default otherwise); see :func:`split_rows`. A resumed run keeps the split saved in its directory.
    ``init_from``: a run directory or shipped NAME whose network (configuration and best weights) a
    new run starts from -- to continue training a shipped model, or to fine-tune it on other data."""
    from .recipes import recipe, train_config

    out = Path(out)
    chosen = recipe(grammar, arch, resolve_device(train.device if train else "auto").type)
    model_overrides = {**chosen.model, **model_overrides}
    train = train or train_config(grammar, arch)
    existing = (out / "run.json").is_file()
    if existing and not resume:
        raise RunError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    continuing = existing and resume
    if continuing:
        meta = read_json(out / "run.json")
        if meta.get("format") != RUN_FORMAT:
            raise RunError(f"{out}/run.json is not a grammar-rae run")
        grammar, model = meta.get("base_grammar", meta["grammar"]), meta.get("label", meta["model"]["model"])
        limit = meta["data"]["limit"]
        data = resolve_source(meta["data"]["source"], meta["data"].get("sha256"), cache_dir)
        # the model and optimiser settings are the run's; how and how long to run this time are the caller's
        train = TrainConfig(**{**meta["train"], "epochs": train.epochs, "device": train.device, "amp": train.amp,
                               "max_minutes": train.max_minutes, "threads": train.threads})
    base = load_grammar(grammar)
    # The character VAE baseline is the VAE on the grammar's token-level twin (Grammar.character_grammar).
    g, family = (base.character_grammar, "vae") if model == "cvae" else (base, model)
    ds = default_dataset(g, data, out, cache_dir=cache_dir, progress=progress, limit=limit)
    n = len(ds) if limit is None else min(limit, len(ds))
    if n < MIN_ROWS:
        what = f"{len(ds)} parseable rows" + (f" ({len(ds.skipped)} lines skipped)" if ds.skipped else "")
        raise RunError(f"{ds.source} has {what}{f', --limit {limit}' if limit is not None else ''}: too few to "
                       f"train on (at least {MIN_ROWS} are needed, for training, validation and test rows)")
    if continuing and (out / "split.npz").is_file():
        with np.load(out / "split.npz", allow_pickle=False) as f:
            tr, va, te = f["train"], f["val"], f["test"]
        test_split = meta["data"].get("test_split", "first")
    else:
        test_split = test_split or ("first" if base.name == "smiles" else "random")
        tr, va, te = split_rows(n, train.seed, test=test_split)
    max_length = max(ds.max_length, MIN_STEPS.get(g.name, 0))
    train_rules, val_rules = padded_rules(ds, max_length, tr), padded_rules(ds, max_length, va)
    start = None
    if continuing:
        config = GrammarAEConfig.from_dict(meta["model"])
    elif init_from is not None:
        start, start_meta = load_run(init_from)
        if start_meta["grammar_sha256"] != g.sha256:
            raise RunError(f"{init_from} was trained with another grammar than {g.name}; it cannot start this run")
        config = start.config
        config.max_length = max(config.max_length, max_length)
    else:
        config = GrammarAEConfig.for_grammar(base.name, max_length, family, arch=arch, **model_overrides)
    rank, _ = distributed()
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        write_run_files(out, g, tr, va, te, {
            "format": RUN_FORMAT, "label": model, "grammar": g.name, "grammar_sha256": g.sha256,
            "base_grammar": base.name, "model": config.to_dict(), "train": asdict(train),
            **({"init_from": str(init_from)} if init_from is not None else {}),
            "data": {"source": ds.source, "sha256": ds.source_sha256, "limit": limit, "rows": n,
                     "train": len(tr), "val": len(va), "test": len(te), "test_split": test_split},
        })
    torch.manual_seed(train.seed)
    net = GrammarAE(config, g)
    if start is not None:
        net.load_state_dict(start.state_dict())
        log(f"starting from the weights of {init_from}")
    log(f"{model} ({config.arch} architecture) on {g.name}: {sum(p.numel() for p in net.parameters()):,} "
        f"parameters; {len(tr)} train / {len(va)} val / {len(te)} test rows; device {resolve_device(train.device)}")
    trainer = Trainer(net, train_rules, val_rules, train, out, progress=progress, log=log)
    trainer.fit(resume=resume)
    if rank != 0:
        return out
    plot_history(trainer.history, out / "loss.png")
    net, _ = load_run(out)
    fit_densities(net, train_rules, out, device=trainer.device)
    return out


def padded_rules(ds, length: int, rows) -> torch.Tensor:
    """Rows of a parsed dataset as a compact uint8 tensor [len(rows), length], padding appended
    (the model makes one-hots per batch)."""
    rules = torch.from_numpy(np.ascontiguousarray(ds.rules[rows]))
    if rules.shape[1] < length:
        pad = torch.full((len(rules), length - rules.shape[1]), ds.grammar.padding_index, dtype=rules.dtype)
        rules = torch.cat([rules, pad], 1)
    return rules


def write_run_files(out: Path, g: Grammar, tr, va, te, meta: dict) -> None:
    from .io import atomic_target

    (out / "grammar.cfg").write_text(g.text, encoding="utf-8")
    with atomic_target(out / "split.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, train=tr, val=va, test=te)
    write_json(out / "run.json", meta)


@torch.no_grad()
def encode_rules(net: GrammarAE, rules: torch.Tensor, batch: int = 2000, device="cpu") -> np.ndarray:
    net.eval().to(device)
    return torch.cat([net.encode(rules[i:i + batch].to(device)).float().cpu()
                      for i in range(0, len(rules), batch)]).numpy()


def fit_densities(net: GrammarAE, train_rules: torch.Tensor, out: Path, device="cpu", k: int = 10):
    """Gaussian and GMM(k) on the training codes (RAE paper's N and GMM columns), saved in density/."""
    z = encode_rules(net, train_rules, device=device)
    for kind in ("gaussian", "gmm"):
        make_density(kind, k=min(k, len(z))).fit(z).save(out / "density" / kind)


def plot_history(history: list[dict], path: Path) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in sorted(k for k in history[0] if k.startswith("train_") or k == "val_rec"):
        ax.plot(epochs, [h[key] for h in history], label=key, marker="o", ms=3)
    ax.set_xlabel("epoch")
    ax.set_yscale("symlog")
    ax.legend()
    ax.set_title(f"loss terms ({path.parent.name})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_run(run_dir: str | Path, which: str = "best", device="cpu") -> tuple[GrammarAE, dict]:
    """The trained model of a run directory (or a shipped pretrained NAME), with clear errors for
    anything damaged or foreign."""
    from .pretrained import resolve_run

    run_dir = resolve_run(run_dir)
    meta = read_json(run_dir / "run.json")
    if meta.get("format") != RUN_FORMAT:
        raise RunError(f"{run_dir}/run.json is not a grammar-rae run (format {meta.get('format')!r})")
    try:
        text = (run_dir / "grammar.cfg").read_text(encoding="utf-8")
        if hashlib.sha256(text.encode()).hexdigest() != meta["grammar_sha256"]:
            raise RunError(f"{run_dir}/grammar.cfg differs from the grammar this run was trained with")
        g = Grammar(text, name=meta["grammar"], path=str(run_dir / "grammar.cfg"))
        config = GrammarAEConfig.from_dict(meta["model"])
        net = GrammarAE(config, g)
    except (OSError, KeyError, TypeError, ValueError, GrammarError) as e:
        if isinstance(e, RunError):
            raise
        raise RunError(f"{run_dir}: run description is incomplete or invalid ({e})") from e
    name = which if (run_dir / "checkpoints" / f"{which}.safetensors").is_file() else "last"
    sums = read_json(run_dir / "checkpoints" / f"{name}.json").get("sha256")
    load_model_state(net, run_dir / "checkpoints" / f"{name}.safetensors", sums)
    return net.eval().to(device), meta


def load_density(run_dir: str | Path, kind: str, dim: int) -> ExPostDensity:
    from .pretrained import resolve_run

    if kind == "prior":
        return make_density("prior").fit(None, dim=dim)
    try:
        return ExPostDensity.load(resolve_run(run_dir) / "density" / kind)
    except DensityError as e:
        raise RunError(f"{run_dir}: no usable {kind} density ({e}); train the run to the end first") from e


def sample_run(run_dir: str | Path, n: int, density: str = "gmm", seed: int = 0, stochastic: bool = False,
               temperature: float = 1.0, device="auto", batch: int = 1000):
    """``n`` strings decoded from codes drawn from the run's ex-post density (None where invalid)."""
    dev = resolve_device(device)
    net, _ = load_run(run_dir, device=dev)
    q = load_density(run_dir, density, net.config.latent_dim)
    return decode_strings(net, q.sample(n, seed=seed), stochastic, temperature, seed, batch)


def decode_strings(net: GrammarAE, z: np.ndarray, stochastic: bool = False, temperature: float = 1.0,
                   seed: int = 0, batch: int = 1000) -> list:
    """Strings decoded in batches from codes ``z [n, d]`` on the model's device (None: incomplete)."""
    dev = next(net.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    z = torch.as_tensor(np.asarray(z, dtype=np.float32))
    out = []
    for i in range(0, len(z), batch):
        out += net.decode(z[i:i + batch].to(dev), sample=stochastic, temperature=temperature, generator=gen).strings
    return out


def encode_strings(run_dir: str | Path, strings, device="auto", batch: int = 1000):
    """Deterministic codes (encoder means) of strings: ``(z [n_ok, d], kept indices, errors)`` where
    errors lists ``(index, ParseError)`` for strings outside the grammar (they get no code)."""
    from .data.parsed import pack

    dev = resolve_device(device)
    net, _ = load_run(run_dir, device=dev)
    g = net.grammar
    results, errors = g.parse_many(list(strings), workers=1, on_error="skip")
    keep = [i for i, r in enumerate(results) if r is not None and len(r) <= net.config.max_length]
    errors += [(i, None) for i, r in enumerate(results) if r is not None and len(r) > net.config.max_length]
    if not keep:
        return np.zeros((0, net.config.latent_dim), dtype=np.float32), keep, sorted(errors, key=lambda e: e[0])
    rules, _ = pack(g, [results[i] for i in keep], max_length=net.config.max_length)
    z = encode_rules(net, torch.from_numpy(rules.astype(np.int64)), batch=batch, device=dev)
    return z, keep, sorted(errors, key=lambda e: e[0])


def decode_codes(run_dir: str | Path, z: np.ndarray, stochastic: bool = False, temperature: float = 1.0,
                 seed: int = 0, device="auto", batch: int = 1000) -> list:
    """Strings decoded from codes ``z [n, d]`` (None where the derivation does not complete)."""
    dev = resolve_device(device)
    net, _ = load_run(run_dir, device=dev)
    z = np.asarray(z, dtype=np.float32)
    if z.ndim != 2 or z.shape[1] != net.config.latent_dim:
        raise RunError(f"codes must have shape [n, {net.config.latent_dim}] for this run, got {z.shape}")
    return decode_strings(net, z, stochastic, temperature, seed, batch)
