"""Grammar-model runs: train into a run directory and load one back safely (the directory itself:
rundir.py; the object users hold: api.py's Model).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import RUN_FORMAT, RunError, write_json
from .data.shipped import resolve_source
from .density import ExPostDensity, make_density
from .errors import ConfigError
from .grammar import Grammar, load_grammar
from .grammar.compact import FORMS, compact_grammar
from .models.grammar_ae import GrammarAE, GrammarAEConfig
from .plots import plot_history
from .rundir import RunDir
from .trainer import Trainer, TrainConfig, distributed, resolve_device, resumed_config

MIN_ROWS = 20
MIN_STEPS = {"smiles": 277, "expr": 15, "smiles-chars": 120,  # the GrammarVAE's decoder lengths
             "smiles-compact": 159}  # ZINC250k's longest derivation in the compact grammar
# model settings that say how a network is trained, not its shape: a run started --init-from may choose its own
LOSS_SETTINGS = ("beta", "lam", "vae_epsilon_std", "cv_sigma", "dropout", "rule_dropout", "latent_noise")


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
        raise ConfigError(f"test split must be 'first' or 'random', not {test!r}")
    rest = rng.permutation(np.setdiff1d(np.arange(n), test_idx))
    n_val = max(1, int(round(len(rest) * val_fraction)))
    return np.sort(rest[n_val:]), np.sort(rest[:n_val]), test_idx


def subsample_split(tr, va, train_rows: int, seed: int):
    """A seeded sample of ``train_rows`` training rows and a tenth as many validation rows (at least 500)
    from a full split, whose test rows stay the standard ones: a small run that shows overfitting
    quickly, measured on the same test molecules as a full run."""
    if train_rows < 1:
        raise ConfigError(f"--train-rows must be at least 1, not {train_rows}")
    rng = np.random.default_rng(seed + 2)
    tr = np.sort(rng.choice(tr, size=min(train_rows, len(tr)), replace=False))
    va = np.sort(rng.choice(va, size=min(max(500, train_rows // 10), len(va)), replace=False))
    return tr, va


def default_dataset(grammar: Grammar, data: str | Path | None, cache_dir=None, progress=True):
    """The prepared dataset a `train` run uses: ``data`` if given, else the shipped data set of the
    grammar -- the GrammarVAE's expression set, or ZINC250k (a downloaded copy in the cache wins)."""
    from .data.download import zinc250k_path
    from .data.parsed import prepare_dataset
    from .data.shipped import shipped_path

    base = grammar.name.removesuffix("-chars").removesuffix("-compact")
    if data is None:
        if base == "expr":
            data = shipped_path("expressions", cache_dir)
        elif base == "smiles":
            data = zinc250k_path(cache_dir)
        else:
            raise FileNotFoundError(f"grammar {base!r} has no default data set: pass --data PATH")
    return prepare_dataset(grammar, data, cache_dir=cache_dir, progress=progress)


@dataclass
class _Plan:
    """What a `train` call will do: a new run, or the continuation of the one in ``out``."""
    grammar: str
    model: str
    data: object
    limit: int | None
    train_rows: int | None
    grammar_form: str
    train: TrainConfig
    meta: dict | None          # run.json of the run being continued
    overrides: dict

    @property
    def continuing(self) -> bool:
        return self.meta is not None




def _plan(out: Path, grammar, model, data, limit, train, resume, arch, overrides, cache_dir, given,
          train_rows=None, grammar_form="original") -> _Plan:
    from .recipes import recipe, train_config

    chosen = recipe(grammar, arch, resolve_device(train.device if train else "auto").type)
    explicit_train = train is not None
    train = train or train_config(grammar, arch)
    existing = RunDir.start(out, resume)
    meta = existing.meta if existing is not None else None
    if meta is None:
        return _Plan(grammar, model, data, limit, train_rows, grammar_form, train, None, {**chosen.model, **overrides})
    # A resumed run keeps its own settings (its recipe's, not today's defaults); the caller's per-invocation
    # settings apply, and of the others only those given explicitly (``given``: the CLI's flags; from the
    # API without ``given``, a ``train`` config's epoch count, as before).
    if given is None:
        given = {"epochs": train.epochs} if explicit_train else {}
    return _Plan(meta.get("base_grammar", meta["grammar"]), meta.get("label", meta["model"]["model"]),
                 resolve_source(meta["data"]["source"], meta["data"].get("sha256"), cache_dir), meta["data"]["limit"],
                 meta["data"].get("train_rows"), meta.get("grammar_form", "original"),
                 resumed_config(meta["train"], train, given), meta, {})


def _rows(plan: _Plan, g: Grammar, base_name: str, out: Path, test_split, progress, cache_dir):
    """The prepared dataset and its train/validation/test rows (a resumed run keeps its own)."""
    ds = default_dataset(g, plan.data, cache_dir=cache_dir, progress=progress)
    n = len(ds) if plan.limit is None else min(plan.limit, len(ds))
    if n < MIN_ROWS:
        what = f"{len(ds)} parseable rows" + (f" ({len(ds.skipped)} lines skipped)" if ds.skipped else "")
        limit = f", --limit {plan.limit}" if plan.limit is not None else ""
        raise RunError(f"{ds.source} has {what}{limit}: too few to train on (at least {MIN_ROWS} are needed, "
                       "for training, validation and test rows)")
    if plan.continuing and (out / "split.npz").is_file():
        tr, va, te = load_split(out, plan.meta)
        test_split = plan.meta["data"].get("test_split", "first")
    else:
        test_split = test_split or ("first" if base_name == "smiles" else "random")
        tr, va, te = split_rows(n, plan.train.seed, test=test_split)
        if plan.train_rows is not None:
            tr, va = subsample_split(tr, va, plan.train_rows, plan.train.seed)
    return ds, n, (tr, va, te), test_split


def train_run(out: str | Path, grammar: str = "expr", model: str = "rae-l2", data=None, limit: int | None = None,
              train: TrainConfig | None = None, resume: bool = False, progress: bool = True, log=print,
              cache_dir=None, test_split: str | None = None, arch: str = "teacher-forced",
              init_from: str | Path | None = None, given: dict | None = None, train_rows: int | None = None,
              grammar_form: str = "original", **model_overrides) -> Path:
    """Train a grammar model into ``out`` (or continue it with ``resume``) and fit its densities.

    ``train``: default, the recipe for the grammar, architecture and device (recipes.py); the
    recipe's network sizes apply unless ``model_overrides`` name others.
    ``test_split``: ``first`` (default for SMILES: the GrammarVAE's first 5,000 rows) or ``random``
    (default otherwise); see :func:`split_rows`. A resumed run keeps the split saved in its directory.
    ``init_from``: a run directory or shipped NAME whose network (configuration and best weights) a
    new run starts from -- to continue training a shipped model, or to fine-tune it on other data.
    ``train_rows``: train on a seeded sample of this many of the split's training rows (validation: a
    tenth as many), the test rows unchanged (:func:`subsample_split`).
    ``grammar_form``: ``original`` (the grammar file as written: the papers' protocols) or ``compact`` (its
    unit productions folded, grammar/compact.py: the same strings in about half the decoder steps).
    ``given``: on ``resume``, the training settings the caller chose explicitly (the CLI's flags); the
    run's own settings apply to the rest."""
    out = Path(out)
    plan = _plan(out, grammar, model, data, limit, train, resume, arch, model_overrides, cache_dir, given,
                 train_rows, grammar_form)
    base = load_grammar(plan.grammar)
    if plan.grammar_form not in FORMS:
        raise ConfigError(f"grammar form must be one of {', '.join(FORMS)}, not {plan.grammar_form!r}")
    if plan.grammar_form == "compact" and plan.model == "cvae":
        raise ConfigError("the character VAE has no grammar to make compact: use --grammar-form original")
    # The character VAE baseline is the VAE on the grammar's token-level twin (Grammar.character_grammar).
    g, family = (base.character_grammar, "vae") if plan.model == "cvae" else (base, plan.model)
    if plan.grammar_form == "compact":   # the sizes, data and protocols stay the base grammar's
        g = compact_grammar(base)
    ds, n, (tr, va, te), test_split = _rows(plan, g, base.name, out, test_split, progress, cache_dir)
    max_length = max(ds.max_length, MIN_STEPS.get(g.name, 0))
    start = load_run(init_from)[0] if init_from is not None and not plan.continuing else None
    if plan.continuing:
        config = GrammarAEConfig.from_dict(plan.meta["model"])
        _refuse_what_cannot_apply(out, config, plan.meta, model_overrides, init_from)
    elif start is not None:
        if start.grammar.sha256 != g.sha256:
            raise RunError(f"{init_from} was trained with another grammar than {g.name}; it cannot start this run")
        config = start.config
        own = config.to_dict()
        differ = [f"{k}={v!r} (it has {own.get(k)!r})" for k, v in plan.overrides.items()
                  if k in model_overrides and own.get(k) != v and k not in LOSS_SETTINGS]
        if differ:
            raise RunError(f"--init-from {init_from} starts from its own network; cannot apply {', '.join(differ)}")
        for k in LOSS_SETTINGS:   # how it is trained, not its shape: this run's own
            if k in model_overrides and model_overrides[k] is not None and own.get(k) != model_overrides[k]:
                log(f"{k} = {model_overrides[k]!r} (the starting run had {own.get(k)!r})")
                setattr(config, k, model_overrides[k])
        config.max_length = max(config.max_length, max_length)
    else:
        config = GrammarAEConfig.for_grammar(base.name, max_length, family, arch=arch, **plan.overrides)
    rank, _ = distributed()
    if rank == 0:
        write_run_files(out, g, tr, va, te, {
            "format": RUN_FORMAT, "label": plan.model, "grammar": g.name, "grammar_sha256": g.sha256,
            "base_grammar": base.name, "grammar_form": plan.grammar_form, "model": config.to_dict(), "train": asdict(plan.train),
            **({"init_from": str(init_from)} if start is not None else {}),
            **({"init_from": plan.meta["init_from"]} if plan.continuing and "init_from" in plan.meta else {}),
            "data": {"source": ds.source, "sha256": ds.source_sha256, "limit": plan.limit, "rows": n,
                     **({"train_rows": plan.train_rows} if plan.train_rows is not None else {}),
                     "train": len(tr), "val": len(va), "test": len(te), "test_split": test_split},
        })
    torch.manual_seed(plan.train.seed)
    net = GrammarAE(config, g)
    if start is not None:
        net.load_state_dict(start.state_dict())
        log(f"starting from the weights of {init_from}")
    log(f"{plan.model} ({config.arch} architecture) on {g.name}: {sum(p.numel() for p in net.parameters()):,} "
        f"parameters; {len(tr)} train / {len(va)} val / {len(te)} test rows; device {resolve_device(plan.train.device)}")
    train_rules = padded_rules(ds, max_length, tr)
    inputs = None
    if plan.train.randomized_inputs:
        if base.name != "smiles":
            raise ConfigError("--randomized-inputs rewrites SMILES: it applies to --grammar smiles only")
        from .data.augment import randomized_inputs

        inputs = torch.from_numpy(randomized_inputs(g, [ds.strings[i] for i in tr], train_rules.numpy(),
                                                    plan.train.randomized_inputs, plan.train.seed,
                                                    progress=progress, log=log))
    trainer = Trainer(net, train_rules, padded_rules(ds, max_length, va), plan.train, out, progress=progress, log=log,
                      train_inputs=inputs)
    trainer.fit(resume=resume)
    if rank != 0:
        return out
    plot_history(trainer.history, out / "loss.png")
    if trainer.stop_requested is not None:   # asked to stop: leave quickly; a resume fits them
        log(f"densities not fitted (stopped by {trainer.stop_requested}); `--resume` continues and fits them")
        return out
    fit_densities(load_run(out)[0], train_rules, out, device=trainer.device, log=log)
    return out


def _refuse_what_cannot_apply(out: Path, config: GrammarAEConfig, meta: dict, overrides: dict, init_from) -> None:
    """A resumed run keeps its network: a size flag or --init-from that differs from it is refused (the
    same values, as in "the same command with --resume", are fine)."""
    own = config.to_dict()
    differ = [f"{k}={v!r} (the run has {own.get(k)!r})" for k, v in overrides.items() if own.get(k) != v]
    if differ:
        raise RunError(f"{out} is resumed with its own network; cannot apply {', '.join(differ)}")
    if init_from is not None and str(init_from) != str(meta.get("init_from")):
        raise RunError(f"{out} is resumed from its own checkpoint; --init-from {init_from} cannot apply "
                       f"(it started from {meta.get('init_from', 'scratch')})")


def load_split(run_dir: Path, meta: dict):
    """(train, val, test) row indices of a run, checked against the sha256 run.json recorded."""
    return RunDir(run_dir, meta).split()


def padded_rules(ds, length: int, rows) -> torch.Tensor:
    """Rows of a parsed dataset as a compact uint8 tensor [len(rows), length], padding appended
    (the model makes one-hots per batch)."""
    rules = torch.from_numpy(np.ascontiguousarray(ds.rules[rows]))
    if rules.shape[1] < length:
        pad = torch.full((len(rules), length - rules.shape[1]), ds.grammar.padding_index, dtype=rules.dtype)
        rules = torch.cat([rules, pad], 1)
    return rules


def write_run_files(out: Path, g: Grammar, tr, va, te, meta: dict) -> None:
    """grammar.cfg, split.npz, then run.json (with the split's sha256): the commit."""
    from .checkpoint import file_sha256
    from .io import atomic_target, atomic_write_bytes

    atomic_write_bytes(out / "grammar.cfg", g.text.encode("utf-8"))
    with atomic_target(out / "split.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, train=tr, val=va, test=te)
    write_json(out / "run.json", {**meta, "split_sha256": file_sha256(out / "split.npz")})


@torch.no_grad()
def encode_rules(net: GrammarAE, rules: torch.Tensor, batch: int = 2000, device="cpu", progress: bool = False) -> np.ndarray:
    """Codes (encoder means) of padded rule sequences ``[n, T]``, in batches. When the encoder ignores
    padding (``net.cuts_padding``) the rows go in order of length and each batch is cut to its longest
    derivation: the same codes for about half the work on ZINC250k (mean 132 of 277 steps)."""
    from tqdm import tqdm

    net.eval().to(device)
    cut = net.cuts_padding
    lengths = net.sequence_lengths(rules)
    order = torch.argsort(lengths, stable=True) if cut else torch.arange(len(rules))
    out = torch.empty(len(rules), net.config.latent_dim)
    for i in tqdm(range(0, len(rules), batch), desc="encoding", unit="batch", disable=not progress):
        idx = order[i:i + batch]
        x = rules[idx, :max(int(lengths[idx].max()), 1)] if cut else rules[idx]
        out[idx] = net.encode(x.to(device)).float().cpu()
    return out.numpy()


def fit_densities(net: GrammarAE, train_rules: torch.Tensor, out: Path, device="cpu", k: int = 10,
                  gmm_codes: int = 50_000, log=print):
    """Gaussian and GMM(k) on the training codes (RAE paper's N and GMM columns), saved in density/.
    The Gaussian sees every code; the GMM a seeded sample of ``gmm_codes`` of them (EM on all 220k ZINC
    codes took over 25 minutes of CPU here, and 50,000 codes pin down ten 56-d components well)."""
    from .io import remove_stale_temporaries

    remove_stale_temporaries(out / "density")
    z = encode_rules(net, train_rules, device=device)
    make_density("gaussian").fit(z).save(out / "density" / "gaussian")
    if len(z) > gmm_codes:
        log(f"fitting the GMM on {gmm_codes:,} of the {len(z):,} training codes (seeded sample)")
        z = z[np.sort(np.random.default_rng(0).choice(len(z), gmm_codes, replace=False))]
    make_density("gmm", k=min(k, len(z))).fit(z).save(out / "density" / "gmm")


def load_run(run, which: str = "best", device="cpu") -> tuple[GrammarAE, dict]:
    """The trained model of a run directory, shipped pretrained NAME or :class:`RunDir`, with clear
    errors for anything damaged or foreign; ``meta`` is its run.json plus the checkpoint loaded."""
    run = RunDir.open(run, "grammar")
    try:
        net = GrammarAE(GrammarAEConfig.from_dict(run.meta["model"]), run.grammar())
    except RunError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"{run.path}: run description is incomplete or invalid ({e})") from e
    meta = {**run.meta, "checkpoint": run.load_weights(net, which)}   # the name loaded: best, or last
    return net.eval().to(device), meta


def loaded_model(run, device="auto") -> tuple[GrammarAE, dict, Path]:
    """(network, meta, run directory) of what evaluate and BO work on: a loaded ``grammar_rae.Model`` as it
    is (its weights, device and decoding options), or a run directory / shipped NAME loaded here."""
    from .pretrained import resolve_run

    if hasattr(run, "net") and hasattr(run, "meta") and hasattr(run, "run_dir"):
        return run.net, run.meta, Path(run.run_dir)
    run_dir = resolve_run(run)
    net, meta = load_run(run_dir, device=resolve_device(device))
    return net, meta, run_dir


def load_density(run, kind: str, dim: int) -> ExPostDensity:
    """The run's ex-post density ``kind`` (``prior``: N(0, I) of dimension ``dim``)."""
    return RunDir.open(run).density(kind, dim)


# codes decoded at once: the semantic layer's cost is mostly a fixed cost per step (small tensor operations),
# which larger batches share out, while the GRU's cost is per row (bench/semantics.py --batch: on zinc-grae's
# GMM codes, one thread, the masks' molecules/s rose from 132 at 1,000 codes a batch to 190 at 4,096, the
# grammar-only decoder's stayed level; BENCHMARKS.md); memory is about 40 KB a row under the semantic layer
DECODE_BATCH = 4096


def decode_strings(net: GrammarAE, z: np.ndarray, stochastic: bool = False, temperature: float = 1.0,
                   seed: int = 0, batch: int = DECODE_BATCH) -> list:
    """Strings decoded in batches from codes ``z [n, d]`` on the model's device (None: incomplete).
    Seeded: the same codes in the same batches give the same strings (a sampled or re-decoded row's draws
    depend on the other rows of its batch)."""
    dev = next(net.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    z = torch.as_tensor(np.asarray(z, dtype=np.float32))
    out = []
    for i in range(0, len(z), batch):
        out += net.decode(z[i:i + batch].to(dev), sample=stochastic, temperature=temperature, generator=gen).strings
    return out


def encode_strings(net: GrammarAE, strings, batch: int = 1000):
    """Deterministic codes (encoder means) of strings on a loaded model (on its device):
    ``(z [n_ok, d], kept indices, errors)`` where errors lists ``(index, ParseError or None)`` for strings
    outside the grammar or (None) longer than the decoder can produce; they get no code."""
    from .data.parsed import pack

    dev = next(net.parameters()).device
    g = net.grammar
    results, errors = g.parse_many(list(strings), workers=1, on_error="skip")
    keep = [i for i, r in enumerate(results) if r is not None and len(r) <= net.config.max_length]
    errors += [(i, None) for i, r in enumerate(results) if r is not None and len(r) > net.config.max_length]
    if not keep:
        return np.zeros((0, net.config.latent_dim), dtype=np.float32), keep, sorted(errors, key=lambda e: e[0])
    rules, _ = pack(g, [results[i] for i in keep], max_length=net.config.max_length)
    z = encode_rules(net, torch.from_numpy(rules.astype(np.int64)), batch=batch, device=dev)
    return z, keep, sorted(errors, key=lambda e: e[0])
