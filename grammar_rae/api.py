"""One object a chemist can hold: a trained grammar model, loaded (and checksum-verified) once.

Example::

    import grammar_rae
    m = grammar_rae.load("expr-grae")
    z = m.encode(["sin( x ) + 1", "x * exp( x )"])    # [2, 25] codes (encoder means)
    m.decode(z)                                       # the strings back (None: not decodable)
    m.sample(100).validity                            # 100 decodes of codes drawn from the ex-post GMM

:func:`load` gives a :class:`Model`; :func:`train` trains one into a run directory and gives it back.
Everything here delegates to the library's functions (run.py, evaluate.py, optimize/bo.py), so the
Python object and the command line compute the same numbers.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from .errors import ConfigError, UserError
from .run import DECODE_BATCH, decode_strings, encode_strings, load_run
from .rundir import RunDir
from .trainer import resolve_device


def _quiet(*_):
    pass


class BadString(NamedTuple):
    """A string :meth:`Model.encode` could not encode: its index in the input, and why."""
    index: int
    string: object
    reason: str


def _listing(bad: Sequence[BadString], shown: int = 5) -> str:
    more = f"; … {len(bad) - shown} more" if len(bad) > shown else ""
    return "; ".join(f"[{b.index}] {b.reason}" for b in bad[:shown]) + more


class EncodeWarning(UserWarning):
    """Some strings got no code (their rows are NaN); ``errors`` lists them as :class:`BadString`."""

    def __init__(self, errors: list[BadString], n: int):
        self.errors = errors
        super().__init__(f"{len(errors)} of {n} strings could not be encoded (their rows are NaN, and decode "
                         f"to None): {_listing(errors)}")


class EncodeError(ValueError, UserError):
    """``encode(..., errors="raise")`` met strings it cannot encode; ``errors`` lists them."""

    def __init__(self, errors: list[BadString], n: int):
        self.errors = errors
        super().__init__(f"{len(errors)} of {n} strings cannot be encoded: {_listing(errors)}")


class Decodes(list):
    """Strings decoded from codes, in order (None where the derivation did not complete), with the
    codes themselves (``z``) and their :attr:`metrics`. A plain list otherwise.

    Example::

        s = grammar_rae.load("zinc-grae").sample(100)
        s[0], s.z.shape, s.validity, s.metrics
    """

    def __init__(self, strings, z: np.ndarray, model: "Model"):
        super().__init__(strings)
        self.z = z
        self._grammar, self._molecules, self._base = model.grammar, model.molecules, model._base_grammar

    @property
    def metrics(self) -> dict:
        """n, grammar_complete, validity (molecules: RDKit sanitises them; expressions: the grammar
        derives them) and uniqueness, as :func:`grammar_rae.metrics.generation_metrics` counts them;
        novelty against the training set is :meth:`Model.evaluate`'s."""
        from .evaluate import in_language
        from .metrics import generation_metrics

        return generation_metrics(in_language(self, self._base), self._molecules, grammar=self._grammar)

    @property
    def validity(self) -> float:
        return self.metrics["validity"]

    @property
    def uniqueness(self) -> float:
        return self.metrics["uniqueness"]


@dataclass
class Reconstructed:
    """One input of :meth:`Model.reconstruct`: its argmax decode, whether that is the same string
    (canonical forms compared), or why it was not encoded (``error``; then ``output`` is None)."""
    index: int
    input: object
    output: str | None
    match: bool
    error: str | None = None


@dataclass
class Reconstruction:
    """:meth:`Model.reconstruct`'s result: one row per input, in order."""
    rows: list[Reconstructed]

    @property
    def rate(self) -> float:
        """The fraction of the encoded strings that came back (strings not encoded are not counted)."""
        encoded = [r for r in self.rows if r.error is None]
        return sum(r.match for r in encoded) / len(encoded) if encoded else float("nan")

    @property
    def errors(self) -> list[tuple[int, str]]:
        """(index, reason) of each input that was not encoded."""
        return [(r.index, r.error) for r in self.rows if r.error is not None]

    def __repr__(self) -> str:
        encoded = sum(r.error is None for r in self.rows)
        return (f"Reconstruction(rate={self.rate:.3f}: {sum(r.match for r in self.rows)} of {encoded} encoded "
                f"strings; {len(self.rows) - encoded} not encoded)")


class Model:
    """A trained grammar autoencoder with its run directory; made by :func:`load` and :func:`train`.

    ``net`` is the :class:`~grammar_rae.models.grammar_ae.GrammarAE`, ``meta`` its run.json (plus the
    checkpoint loaded), ``run`` its :class:`~grammar_rae.rundir.RunDir` (``run_dir``: where it lives).
    Densities are read on first use and kept.

    Example::

        m = grammar_rae.load("expr-grae")
        m, m.densities                                  # what it is; prior, gaussian, gmm
        m.decode(m.encode(["sin( x ) + 1"]))            # ['sin( x ) + 1'] back
    """

    def __init__(self, net, meta: dict, run: RunDir | Path, semantics: bool = True, retries: int | None = None):
        from .grammar import load_grammar

        self.run = run if isinstance(run, RunDir) else RunDir(run, meta)
        self.net, self.meta, self.run_dir = net, meta, self.run.path
        self.net.semantics = bool(semantics)
        if retries is not None:
            self.retries = retries
        base = meta.get("base_grammar", net.grammar.name)
        # the character baseline decodes in its token-level grammar; only the real one's strings are valid
        self._base_grammar = None if base == net.grammar.name else load_grammar(base)
        self.molecules = base == "smiles"

    # ------------------------------------------------------------------ what it is
    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def grammar(self):
        return self.net.grammar

    @property
    def config(self):
        return self.net.config

    @property
    def latent_dim(self) -> int:
        return self.net.config.latent_dim

    @property
    def device(self):
        return next(self.net.parameters()).device

    @property
    def semantics(self) -> bool:
        """SMILES: decode under the semantic layer as well as the grammar (rings closed, valences kept;
        models/semantics.py). False: the context-free grammar alone, as the GrammarVAE decodes. No
        effect on expressions.

        Example::

            m = grammar_rae.load("zinc-grae")
            z = m.density("gmm").sample(20, seed=0)
            m.semantics = False
            m.decode(z)                                 # the GrammarVAE's decodes of the same codes
        """
        return self.net.semantics

    @semantics.setter
    def semantics(self, on: bool) -> None:
        self.net.semantics = bool(on)

    @property
    def retries(self) -> int:
        """SMILES, under the semantic layer: copies decoded again by sampling for each molecule the masks
        corner, the first good one kept (default 16). 0: none -- the masks alone, the most valid molecules
        per second (on zinc-grae 68% valid against 83%, at 1.7x the valid molecules per second;
        BENCHMARKS.md).

        Example::

            m = grammar_rae.load("zinc-grae", retries=0)
            s = m.sample(2000, seed=0)
            s.validity                                  # about 0.68 (0.83 with retries=16), in about half the time
        """
        return self.net.redecodes

    @retries.setter
    def retries(self, n: int) -> None:
        from .models.grammar_ae import check_redecodes

        self.net.redecodes = check_redecodes(n)

    @property
    def decoding(self):
        """Both at once, as the :class:`~grammar_rae.models.grammar_ae.DecodeOptions` the model decodes with
        (also given to :meth:`evaluate` and :meth:`optimize`, which decode with this model)."""
        return self.net.decoding

    @decoding.setter
    def decoding(self, options) -> None:
        from .models.grammar_ae import DecodeOptions

        if not isinstance(options, DecodeOptions):
            raise ConfigError(f"decoding must be a DecodeOptions, not {type(options).__name__}")
        self.net.decoding = options

    def __repr__(self) -> str:
        c = self.config
        return (f"Model({self.name!r}: {self.meta.get('label', c.model)} on {self.grammar.name}, {c.arch}, "
                f"latent {c.latent_dim}, {self.device}, semantics {'on' if self.semantics else 'off'})")

    # ------------------------------------------------------------------ codes and strings
    def encode_checked(self, strings, batch: int = 1000) -> tuple[np.ndarray, list[BadString]]:
        """:meth:`encode` for callers that report bad strings themselves (the CLI names their lines):
        the codes ``[len(strings), latent_dim]`` with NaN rows, and the :class:`BadString` of each of
        those rows, in order; nothing is warned or raised.

        Example::

            m = grammar_rae.load("expr-grae")
            z, bad = m.encode_checked(["x + 1", "sin( x"])
            bad[0].index, bad[0].reason                     # 1, "cannot parse ..."
        """
        strings = list(strings)
        texts = [i for i, s in enumerate(strings) if isinstance(s, str)]
        bad = [BadString(i, s, f"not a string ({type(s).__name__})") for i, s in enumerate(strings)
               if not isinstance(s, str)]
        z_ok, kept, errors = encode_strings(self.net, [strings[i] for i in texts], batch)
        z = np.full((len(strings), self.latent_dim), np.nan, dtype=np.float32)
        z[[texts[k] for k in kept]] = z_ok
        too_long = "longer than the decoder can produce"   # (config.max_length steps; the CLI prints this)
        bad += [BadString(texts[k], strings[texts[k]], str(e) if e is not None else too_long) for k, e in errors]
        return z, sorted(bad)

    def encode(self, strings, errors: str = "warn", batch: int = 1000) -> np.ndarray:
        """Codes (encoder means) of strings: float32 ``[len(strings), latent_dim]``, row i for
        ``strings[i]``. A string outside the grammar (or longer than the decoder can produce) gets a
        row of NaN, and ``errors`` says how it is reported: ``"warn"`` (default) an
        :class:`EncodeWarning` naming each by index and reason (its ``errors`` lists them as
        :class:`BadString`); ``"raise"`` an :class:`EncodeError`; ``"ignore"`` nothing. One string
        in gives one code ``[latent_dim]`` out.

        Example::

            m = grammar_rae.load("expr-grae")
            z = m.encode(["sin( x ) + 1", "sin( x", "x"])   # warns: [1] cannot parse 'sin( x' ...
            np.isnan(z).all(1)                              # array([False,  True, False])
            m.encode(["sin( x"], errors="ignore")           # the same NaN row, no warning
        """
        if errors not in ("warn", "raise", "ignore"):
            raise ConfigError(f"errors must be 'warn', 'raise' or 'ignore', not {errors!r}")
        single = isinstance(strings, str)
        strings = [strings] if single else list(strings)
        z, bad = self.encode_checked(strings, batch)
        if bad and errors == "raise":
            raise EncodeError(bad, len(strings))
        if bad and errors == "warn":
            warnings.warn(EncodeWarning(bad, len(strings)), stacklevel=2)
        return z[0] if single else z

    def decode(self, z, sample: bool = False, temperature: float = 1.0, seed: int = 0,
               batch: int = DECODE_BATCH) -> Decodes | str | None:
        """Strings from codes ``z [n, latent_dim]``, under the grammar's masks: the most likely rule at
        each step, or (``sample``) rules drawn at ``temperature``, seeded. None where the derivation
        does not complete, and for the NaN rows :meth:`encode` gives strings it could not encode. One
        code ``[latent_dim]`` in gives one string out.

        Example::

            m = grammar_rae.load("expr-grae")
            z = m.encode(["sin( x ) + 1", "x"])
            m.decode(z)                                     # the two expressions back
            m.decode(z, sample=True, temperature=0.5, seed=1)
        """
        from .io import check_codes

        z = np.asarray(z, dtype=np.float32)
        single = z.ndim == 1
        z = z.reshape(1, -1) if single else z
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            check_codes(z, self.latent_dim)   # refuses it, naming the shape it wants
        missing = np.isnan(z).all(1)          # the rows encode gives strings it could not encode
        codes = check_codes(np.where(missing[:, None], 0.0, z), self.latent_dim)[~missing]
        strings = iter(decode_strings(self.net, codes, sample, temperature, seed, batch))
        out = [None if gone else next(strings) for gone in missing]
        return out[0] if single else Decodes(out, z, self)

    def sample(self, n: int, density="gmm", seed: int = 0, stochastic: bool = False,
               temperature: float = 1.0) -> Decodes:
        """``n`` strings decoded from codes drawn from a density: a name (``"gmm"``: the ex-post GMM
        fitted on the training codes, ``"gaussian"``, ``"prior"``: N(0, I); see :attr:`densities`) or
        any fitted density object (:func:`grammar_rae.density.make_density`). The same ``seed`` gives
        the same strings; ``stochastic``: rules drawn at ``temperature`` instead of the most likely.

        Example::

            m = grammar_rae.load("expr-grae")
            s = m.sample(100, seed=1)
            len(s), s.validity, s.z.shape                   # 100, its valid fraction, (100, 25)
            m.sample(100, density="prior", seed=1)          # from N(0, I) instead
        """
        q = self.density(density) if isinstance(density, str) else density
        return self.decode(q.sample(n, seed=seed), stochastic, temperature, seed)

    def reconstruct(self, strings, batch: int = DECODE_BATCH) -> Reconstruction:
        """Encode each string and decode it by argmax: ``.rate`` (the fraction of encoded strings that
        come back, canonical forms compared as the metrics do: the same molecule, or the same
        derivation) and ``.rows`` (one :class:`Reconstructed` per input; bad strings have ``error``).

        Example::

            m = grammar_rae.load("expr-grae")
            r = m.reconstruct(["sin( x ) + 1", "x * x", "sin("])
            r.rate, r.rows[0], r.errors                     # over the 2 encoded; [(2, "cannot parse ...")]
        """
        from .metrics import canonical

        strings = list(strings)
        z, bad = self.encode_checked(strings)
        back = self.decode(z, batch=batch)          # (batch: codes decoded at once; encoding keeps its own)
        why = {b.index: b.reason for b in bad}
        ok = [i for i in range(len(strings)) if i not in why]
        want = canonical([strings[i] for i in ok], self.molecules, self.grammar)
        got = canonical([back[i] for i in ok], self.molecules, self.grammar)
        match = {i: w is not None and w == g for i, w, g in zip(ok, want, got)}
        return Reconstruction([Reconstructed(i, s, back[i], match.get(i, False), why.get(i))
                               for i, s in enumerate(strings)])

    def interpolate(self, a, b, steps: int = 8) -> Decodes:
        """Argmax decodes of ``steps`` codes evenly spaced on the straight line from ``a`` to ``b``
        (each a string, encoded, or a code), ends included.

        Example::

            m = grammar_rae.load("expr-grae")
            m.interpolate("sin( x )", "x * exp( x )", steps=5)
        """
        if steps < 2:
            raise ConfigError(f"an interpolation needs at least 2 steps (its two ends), got {steps}")
        ends = [self.encode(x, errors="raise") if isinstance(x, str) else np.asarray(x, dtype=np.float32).reshape(-1)
                for x in (a, b)]
        t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
        return self.decode((1 - t) * ends[0] + t * ends[1])

    # ------------------------------------------------------------------ densities
    @property
    def densities(self) -> list[str]:
        """The densities :meth:`density` can give: ``prior`` and those fitted in the run's density/."""
        return self.run.densities

    def density(self, kind: str = "gmm"):
        """The ex-post density ``kind`` of the run (read once, checksums verified, then kept): an
        object with ``sample(n, seed=...)`` and ``log_prob(z)``.

        Example::

            m = grammar_rae.load("expr-grae")
            q = m.density("gmm")
            z = q.sample(10, seed=0)
            q.log_prob(z), m.decode(z)
        """
        return self.run.density(kind, self.latent_dim)

    # ------------------------------------------------------------------ the library's long jobs
    def evaluate(self, n_samples: int = 1000, n_recon: int = 1000, gvae_protocol: bool = False, seed: int = 0,
                 out: str | Path | None = None, cache_dir=None, log=print) -> dict:
        """``grammar-rae evaluate``: reconstruction of held-out test and validation rows, and validity /
        uniqueness / novelty (molecules: MOSES-style metrics and FCD too) of prior, Gaussian and GMM
        samples; written to ``out`` (default RUN/eval, or eval/NAME for a shipped model) and returned.

        Example::

            m = grammar_rae.load("expr-grae")
            report = m.evaluate(n_samples=200, n_recon=200, log=None)
            report["reconstruction"]["argmax"], report["samples"]["gmm"]["validity"]
        """
        from .evaluate import evaluate_run

        return evaluate_run(self, n_samples, n_recon, gvae_protocol, seed, cache_dir=cache_dir, log=log or _quiet,
                            out=out)

    def optimize(self, objective: str, out: str | Path | None = None, *, target: str | None = None,
                 protocol: str = "default", iterations: int = 5, batch: int = 50, seeds=(1,),
                 n_decode: int | None = None, inducing: int | None = None, gp_epochs: int | None = None,
                 gp_lr: float | None = None, gp_refit_epochs: int | None = None, gp_rows: int | None = None,
                 gp: str | None = None, incumbent: str | None = None, ei_search: str | None = None,
                 search_region: str | None = None, region_quantile: float | None = None,
                 local_share: float | None = None, new_only: bool | None = None, scoring: str = "ours",
                 data_rows: int | None = None, progress: bool = True, log=print, cache_dir=None) -> dict:
        """``grammar-rae optimize``: Bayesian optimisation in the latent space. ``protocol``: the preset
        the settings start from (``default``, chosen on bench/bo_targets.py's development targets, or
        ``gvae``, the GrammarVAE/RAE protocol of Table 3; :data:`grammar_rae.optimize.config.PRESETS`);
        every other keyword is the command's flag of that name (None: the preset's value).
        ``objective``: ``logp``, ``qed``, ``expr`` (with ``target``) or ``package.module:function``.
        Writes ``out`` (default bo/NAME-OBJECTIVE; the same call again resumes it) and returns the
        report: ``report["summary"]["top3"]``, ``["fraction_valid"]``, every evaluation.

        Example::

            m = grammar_rae.load("expr-grae")
            bo = m.optimize("expr", target="x * 3", iterations=1, batch=5, data_rows=500, inducing=50, gp_epochs=5)
            bo["summary"]["top3"]
        """
        from .optimize.bo import run_bo
        from .optimize.config import make_config

        if out is None:
            out = Path("bo") / "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{self.name}-{objective}")
        gp_kw = dict(n_inducing=inducing, epochs=gp_epochs, lr=gp_lr, refit_epochs=gp_refit_epochs, rows=gp_rows,
                     backend=gp, incumbent=incumbent, ei_search=ei_search, region=search_region,
                     region_quantile=region_quantile, local=local_share)
        config = make_config(protocol, gp_kw, objective=objective, target=target, scoring=scoring,
                             iterations=iterations, batch=batch,
                             seeds=(seeds,) if isinstance(seeds, int) else tuple(seeds), n_decode=n_decode,
                             data_rows=data_rows, new_only=new_only)
        return run_bo(self, config, out, progress=progress, log=log or _quiet, cache_dir=cache_dir)


def load(name_or_dir: str | Path, device: str = "auto", semantics: bool = True, retries: int | None = None,
         decoding=None) -> Model:
    """The model of a run directory or a shipped NAME (``zinc-grae``, ``expr-grae``), its files
    verified against their checksums once. ``device``: ``auto`` (CUDA when present), ``cpu``,
    ``cuda:1``, …; ``semantics``, ``retries``: see :attr:`Model.semantics`, :attr:`Model.retries` (None:
    16); ``decoding``: all decoding options at once (a DecodeOptions; it wins over the two).

    Example::

        m = grammar_rae.load("zinc-grae")
        m.decode(m.encode(["CC(=O)Nc1ccc(O)cc1"]))
    """
    run = RunDir.open(name_or_dir, "grammar")
    net, meta = load_run(run, device=resolve_device(device))
    if decoding is None:
        return Model(net, meta, run, semantics, retries)
    model = Model(net, meta, run)
    model.decoding = decoding
    return model


def train(out: str | Path, grammar: str = "expr", model: str = "rae-l2", data=None, *, limit: int | None = None,
          arch: str = "teacher-forced", device: str = "auto", resume: bool = False, init_from=None,
          test_split: str | None = None, cache_dir=None, progress: bool = True, log=print, semantics: bool = True,
          grammar_form: str = "original", train_rows: int | None = None, **settings) -> Model:
    """``grammar-rae train``: train a grammar model into the run directory ``out`` (or continue it with
    ``resume``), fit its densities, and return it loaded. ``data``: a .smi/.txt/.csv file (default:
    the grammar's shipped data set). ``grammar_form``: ``original`` or ``compact`` (unit productions
    folded: about half the decoder steps; grammar/compact.py). ``train_rows``: train on a seeded sample of
    this many training rows, the standard test rows kept. ``settings``: training settings (``epochs``, ``lr``,
    ``batch_size``, … of :class:`~grammar_rae.trainer.TrainConfig`) over the recipe for the grammar and
    device, and network sizes (``latent_dim``, ``decoder_hidden``, … of
    :class:`~grammar_rae.models.grammar_ae.GrammarAEConfig`).

    Example::

        m = grammar_rae.train("runs/expr", "expr", limit=2000, epochs=1, progress=False)
        m.sample(5)
    """
    from dataclasses import fields

    from .models.grammar_ae import GrammarAEConfig
    from .recipes import train_config
    from .run import train_run
    from .trainer import TrainConfig

    schedule_keys = {f.name for f in fields(TrainConfig)} - {"device"}
    network_keys = {f.name for f in fields(GrammarAEConfig)} - {"grammar", "model", "arch", "max_length"}
    unknown = sorted(set(settings) - schedule_keys - network_keys)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}: training settings are "
                          f"{', '.join(sorted(schedule_keys))}; network settings {', '.join(sorted(network_keys))}")
    schedule = {k: v for k, v in settings.items() if k in schedule_keys and v is not None}
    network = {k: v for k, v in settings.items() if k in network_keys and v is not None}
    run = train_run(out, grammar, model, data=data, limit=limit, train=train_config(grammar, arch, device, **schedule),
                    resume=resume, progress=progress, log=log or _quiet, cache_dir=cache_dir, test_split=test_split,
                    arch=arch, init_from=init_from, given=schedule, grammar_form=grammar_form, train_rows=train_rows,
                    **network)
    return load(run, device=device, semantics=semantics)
