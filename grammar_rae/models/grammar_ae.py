"""Grammar autoencoders: a rule-sequence encoder, a grammar-masked decoder and the RAE family's latent
term and decoder regulariser (Ghosh et al., ICLR 2020) -- one model, pluggable regulariser
(``family.py``), pluggable architecture:

  teacher-forced (default)  conv encoder over rule embeddings + teacher-forced GRU decoder
                            (``teacher_forced.py``; REFERENCE.md §9)
  gvae                      the GrammarVAE's one-hot conv encoder + z-repeated GRU decoder
                            (``gvae_arch.py``; Kusner et al., ICML 2017)

The encoder and decoder interfaces and the registry of architectures are in ``architectures.py``:
adding an encoder or a decoder is one class and one ``register(...)`` line there.
"""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field, fields, replace

import torch
from torch import nn

from ..errors import ConfigError
from ..grammar import Grammar, load_grammar
from . import regularisers as R
from .family import GRAMMAR_MODELS, family
from .architectures import architecture, cuts_padding
from .decoding import Decoded, StackMachine, _scores, finish
from .decoding import decode as masked_decode

MODELS = GRAMMAR_MODELS
# GrammarAE.decode: a flagged row is decoded again by sampling, at most REDECODES copies: REDECODE_ROUND at
# first (a round, for a non-autoregressive decoder), REDECODE_AGAIN more for each that fails (in the
# decoding loop: measured on zinc-grae, one at a time leaves a long tail of single rows, 3x the steps),
# with draws seeded by REDECODE_SEED
REDECODES, REDECODE_ROUND, REDECODE_AGAIN, REDECODE_SEED = 16, 2, 2, 0


def check_redecodes(n) -> int:
    """``n`` as an int, or a ConfigError unless it is a whole number >= 0."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ConfigError(f"retries must be a whole number >= 0 (0: no copies), got {n!r}")
    return int(n)


@dataclass(frozen=True)
class DecodeOptions:
    """How a grammar model decodes: given to :meth:`GrammarAE.decode` (or kept as the model's
    ``decoding``, its default), never a process-wide switch.

    ``semantics``: SMILES, decode under the semantic layer as well as the grammar (semantics.py; False: the
    context-free grammar alone, as the GrammarVAE decodes; no effect where a grammar has no layer).
    ``retries``: copies decoded again by sampling for each row the masks corner (0: the masks alone).
    ``retry_temperature``: the softmax temperature of those copies.
    ``rdkit``: SMILES, a finished molecule RDKit cannot read (chem.rdkit_accepts) is flagged like a cornered
    one and decoded again, with or without the semantic layer (issue 36: every returned sample valid)."""

    semantics: bool = True
    retries: int = REDECODES
    retry_temperature: float = 1.0
    rdkit: bool = False

    def __post_init__(self):
        object.__setattr__(self, "semantics", bool(self.semantics))
        object.__setattr__(self, "rdkit", bool(self.rdkit))
        object.__setattr__(self, "retries", check_redecodes(self.retries))
        if not self.retry_temperature > 0:
            raise ConfigError(f"retry_temperature must be > 0, got {self.retry_temperature!r}")

    def replace(self, **changes) -> "DecodeOptions":
        return replace(self, **changes)


# GrammarAE._decode_loop: steps between looks at which rows ended or were cornered (each a host sync: every
# 16th step on a GPU)
CHECK_EVERY = {"cpu": 1}
# GrammarAE._decode_once: finished rows leave the working set once 1 / COMPACT_AT of it has finished (0: never)
COMPACT_AT = 4


@dataclass
class GrammarAEConfig:
    grammar: str = "expr"           # shipped name or .cfg path
    max_length: int = 15            # longest derivation the decoder produces (steps T)
    model: str = "rae-l2"           # regulariser family, see family.py
    arch: str = "teacher-forced"    # a registered architecture (architectures.py)
    decoder: str = "gvae"           # gvae arch only: "gvae" | "autoregressive"
    latent_dim: int = 25
    embedding_dim: int = 64         # teacher-forced: rule / LHS embeddings
    conv_channels: tuple = (2, 3, 4)
    conv_kernels: tuple = (2, 3, 4)
    encoder_hidden: int = 100
    decoder_hidden: int = 100
    decoder_layers: int = 3
    dropout: float = 0.0            # between stacked GRU layers (teacher-forced)
    rule_dropout: float = 0.0       # teacher-forced, training only: each previous-rule input replaced by the
                                    # start token with this probability (word dropout, Bowman et al. 2016)
    latent_noise: float = 0.0       # deterministic models, training only: z = μ + this · sd_batch(μ) · ε, ε ~ N(0, I)
                                    # (a smoother decoder around the codes; CDDD, Winter et al. 2019, trains with
                                    # latent noise)
    batch_norm: bool = True         # gvae encoder
    beta: float | None = None       # weight of ½‖z‖² (RAE), KL (VAE), ½‖μ‖² (CV-VAE); None: default
    lam: float | None = None        # weight of the decoder regulariser (L2, GP); None: default
    vae_epsilon_std: float = 1.0    # GVAE's code samples with 0.01; the textbook VAE with 1.0
    cv_sigma: float = 0.7           # CV-VAE's constant posterior std
    extra: dict = field(default_factory=dict)

    @classmethod
    def for_grammar(cls, grammar: str, max_length: int, model: str = "rae-l2", arch: str = "teacher-forced",
                    **overrides) -> "GrammarAEConfig":
        sizes = architecture(arch).sizes_for(grammar)
        sizes.update(overrides)
        return cls(grammar=grammar, max_length=max_length, model=model, arch=arch, **sizes)

    @classmethod
    def from_dict(cls, d: dict) -> "GrammarAEConfig":
        """A config saved in a run.json; runs from before the teacher-forced architecture are gvae."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model settings {sorted(unknown)}")
        return cls(**{"arch": "gvae", **d})

    def __post_init__(self):
        f = family(self.model)
        if self.model not in MODELS:
            raise ConfigError(f"{self.model!r} is an image model; grammar models are {MODELS}")
        architecture(self.arch)   # a clear error for an unknown name
        if self.decoder not in ("gvae", "autoregressive"):
            raise ConfigError("decoder must be 'gvae' or 'autoregressive'")
        self.conv_channels, self.conv_kernels = tuple(self.conv_channels), tuple(self.conv_kernels)
        if not self.latent_noise >= 0:
            raise ConfigError(f"latent_noise must be >= 0, got {self.latent_noise}")
        if self.latent_noise and family(self.model).posterior is not None:
            raise ConfigError("latent_noise applies to deterministic models (RAE, AE): a VAE samples its own noise")
        if not 0 <= self.rule_dropout < 1:
            raise ConfigError(f"rule_dropout must be in [0, 1), got {self.rule_dropout}")
        if self.rule_dropout and self.arch == "gvae":
            raise ConfigError("rule_dropout applies to the teacher-forced decoder (the gvae decoder reads no previous rule)")
        beta, lam = f.grammar_weights
        self.beta = beta if self.beta is None else self.beta
        self.lam = lam if self.lam is None else self.lam

    @property
    def variational(self) -> bool:
        return family(self.model).variational

    @property
    def decoder_reg(self) -> str | None:
        return family(self.model).decoder_reg

    def to_dict(self) -> dict:
        return asdict(self)


class GrammarAE(nn.Module):
    """Encoder + decoder + the chosen regulariser. ``loss(rules)`` returns the total and its terms."""

    def __init__(self, config: GrammarAEConfig, grammar: Grammar | None = None):
        super().__init__()
        self.config = config
        self.grammar = grammar or load_grammar(config.grammar)
        self.encoder, self.decoder = architecture(config.arch).build(config, self.grammar)
        # lhs_mask rows of each rule's LHS: which rules compete with the true rule at a step (GVAE's mask)
        lhs_mask = torch.as_tensor(self.grammar.lhs_mask)
        self.register_buffer("rule_competitors", lhs_mask[torch.as_tensor(self.grammar.rule_lhs)], persistent=False)
        if config.decoder_reg == "sn":
            R.apply_spectral_norm(self.decoder)
        # how decode() decodes when it is given no options: under the grammar's semantic layer where it has
        # one (SMILES: ring bonds, valence; semantics.py), cornered rows decoded again (DecodeOptions)
        self.decoding = DecodeOptions()

    # the fields of ``decoding`` one at a time (the API's Model.semantics / Model.retries)
    @property
    def semantics(self) -> bool:
        return self.decoding.semantics

    @semantics.setter
    def semantics(self, on: bool) -> None:
        self.decoding = self.decoding.replace(semantics=on)

    @property
    def redecodes(self) -> int:
        return self.decoding.retries

    @redecodes.setter
    def redecodes(self, n: int) -> None:
        self.decoding = self.decoding.replace(retries=n)

    def semantic_layer_for(self, options: DecodeOptions | None = None):
        """The semantics object decoding under ``options`` (default: the model's own) uses (None: the
        CFG's masks only)."""
        from .semantics import semantics_for

        return semantics_for(self.grammar) if (options or self.decoding).semantics else None

    @property
    def semantic_layer(self):
        """The semantics object decoding uses by default (None: the CFG's masks only)."""
        return self.semantic_layer_for()

    def acceptor_for(self, options: DecodeOptions | None = None):
        """The test a finished string must pass to be kept under ``options`` (None: none): RDKit's, for a
        SMILES grammar with ``options.rdkit``."""
        if not (options or self.decoding).rdkit:
            return None
        if not self.grammar.name.startswith("smiles") and self.semantic_layer_for(DecodeOptions()) is None:
            raise ConfigError(f"RDKit acceptance reads SMILES; {self.grammar.name} is not a SMILES grammar")
        from ..chem import rdkit_accepts

        return rdkit_accepts

    def _rejected(self, rules: torch.Tensor, rows: torch.Tensor, accept) -> torch.Tensor:
        """[len(rows)] bool: the finished derivations ``rules[rows]`` whose strings ``accept`` refuses."""
        strings = [self.grammar.derive(r) for r in rules[rows].cpu().numpy()]
        return torch.as_tensor(~accept(strings), device=rules.device)

    def _with_rejections(self, out: Decoded, accept) -> Decoded:
        """``out`` with the rows that ``accept`` refuses, and those that did not finish, flagged as cornered
        (decoded again)."""
        if accept is None:
            return out
        cornered = (out.cornered.clone() if out.cornered is not None else torch.zeros_like(out.complete)) | ~out.complete
        idx = (out.complete & ~cornered).nonzero().flatten()
        if len(idx):
            cornered[idx[self._rejected(out.rules, idx, accept)]] = True
        return Decoded(out.rules, out.complete, out.strings, cornered)

    @property
    def cuts_padding(self) -> bool:
        """Whether a batch may be cut to its longest derivation (the trainer's bucketing): true when
        neither the encoder nor the decoder reads positions past the end (not the GVAE's dense encoder)."""
        return cuts_padding(self.encoder, self.decoder)

    def sequence_lengths(self, rules: torch.Tensor) -> torch.Tensor:
        """[B] derivation lengths (rules before the padding)."""
        return (rules != self.grammar.padding_index).sum(1)

    # ------------------------------------------------------------------ encode / decode
    def encode(self, rules: torch.Tensor) -> torch.Tensor:
        """Deterministic codes (the encoder mean) for rule sequences [B, T]."""
        return self.encoder(rules.long())[0]

    def latent(self, rules: torch.Tensor):
        """z used for reconstruction in training, plus (mean, log_var) for the latent term."""
        mean, log_var = self.encoder(rules.long())
        c = self.config
        posterior = family(c.model).posterior
        if posterior == "gaussian":  # reparameterisation (Kingma & Welling 2014, eq. 10)
            z = mean + c.vae_epsilon_std * torch.randn_like(mean) * torch.exp(0.5 * log_var)
        elif posterior == "constant":  # constant posterior variance (Ghosh et al. 2020, Sec. 2)
            z = mean + c.cv_sigma * torch.randn_like(mean)
        elif self.training and c.latent_noise > 0 and len(mean) > 1:   # noise scaled to the codes' own spread, per dimension
            z = mean + c.latent_noise * mean.detach().std(0, keepdim=True) * torch.randn_like(mean)
        else:
            z = mean
        return z, mean, log_var

    def logits(self, z: torch.Tensor, rules: torch.Tensor | None = None) -> torch.Tensor:
        """Per-step logits [B, T, R]; teacher-forced decoders read the target ``rules``."""
        return self.decoder(z, rules)

    # ------------------------------------------------------------------ the objective
    def forward(self, rules: torch.Tensor, inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """The training objective, so DistributedDataParallel's forward hooks see it."""
        return self.loss(rules) if inputs is None else self.loss(rules, inputs=inputs)

    def loss(self, rules: torch.Tensor, allowed: torch.Tensor | None = None,
             inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """L = L_REC + β·(latent term) + λ·L_REG  (Ghosh et al. 2020, eq. 11), averaged over the batch;
        ``allowed``: a further mask of L_REC's steps (R.masked_nll); ``inputs``: what the encoder reads
        instead of the target ``rules`` (another spelling of the same string: data/augment.py)."""
        rules = rules.long()
        c = self.config
        z, mean, log_var = self.latent(rules if inputs is None else inputs.long())
        logits = self.logits(z, rules)
        rec = R.masked_nll(logits, rules, self.rule_competitors, allowed).mean()
        # RAE-GP penalises D(z) on the derivation's own steps: padding steps carry no loss, and a
        # batch's padding must not change the penalty (so batches can be cut to their longest row)
        output = logits * (rules != self.grammar.padding_index)[..., None] if c.decoder_reg == "gp" else logits
        return R.objective(c.model, rec, mean, log_var, z, output, self.decoder, c.beta, c.lam)

    def reconstruction_loss(self, rules: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """Masked NLL per sequence from the deterministic code (the encoder mean): the validation criterion
        (``allowed``: a further mask, R.masked_nll)."""
        rules = rules.long()
        return R.masked_nll(self.logits(self.encode(rules), rules), rules, self.rule_competitors, allowed)

    @torch.no_grad()
    def exact_reconstructions(self, rules: torch.Tensor) -> torch.Tensor:
        """[B] bool: the argmax decode of each sequence's code is exactly its derivation (a cheap
        reconstruction rate the trainer logs every epoch; equal derivations give equal strings)."""
        rules = rules.long()
        out = self.decode(self.encode(rules), strings=False).rules
        T = max(out.shape[1], rules.shape[1])
        pad = self.grammar.padding_index
        a = torch.nn.functional.pad(out, (0, T - out.shape[1]), value=pad)
        b = torch.nn.functional.pad(rules, (0, T - rules.shape[1]), value=pad)
        return (a == b).all(1)

    @torch.no_grad()
    def decode_repeated(self, z: torch.Tensor, n: int, sample: bool = True, temperature: float = 1.0,
                        generator: torch.Generator | None = None, max_rows: int = 8192,
                        options: DecodeOptions | None = None):
        """``n`` decodes of the same codes (the GVAE protocol's many decodes per point). The GrammarVAE
        decoder's logits depend only on z, so they are computed once and only the masked choice
        repeats; an autoregressive decoder runs several repeats as one batch. ``options``: as
        :meth:`decode` (its retries unused: many decodes per point already)."""
        layer = self.semantic_layer_for(options)
        if self.decoder.autoregressive:
            per_call = max(1, min(n, max_rows // max(len(z), 1)))
            done = 0
            while done < n:
                k = min(per_call, n - done)
                # many decodes per point already: a cornered one is not decoded again (GrammarAE.decode)
                out = self._decode_once(z.repeat(k, 1), sample, temperature, generator, True, layer)
                B = len(z)
                for j in range(k):
                    rows = slice(j * B, (j + 1) * B)
                    yield Decoded(out.rules[rows], out.complete[rows], out.strings[rows])
                done += k
            return
        was = self.training
        self.eval()
        logits = self.logits(z)
        self.train(was)
        for _ in range(n):
            yield masked_decode(self.grammar, logits, sample, temperature, generator, semantics=layer)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, sample: bool = False, temperature: float = 1.0,
               generator: torch.Generator | None = None, strings: bool = True,
               options: DecodeOptions | None = None) -> Decoded:
        """Rule sequences and strings from codes, under the grammar's masks (batched): the stack
        machine steps together with the decoder for the whole batch, on CPU or GPU.

        Under a semantic layer, a row that the masks cornered (at some step every rule its strongest tier
        allowed was ruled out, so that tier was dropped), or whose finished molecule the layer finds broken
        as a whole (an aromatic atom on no ring: SemanticState.broken), is decoded again from the same code
        by sampling (at ``options.retry_temperature``), at most ``options.retries`` times, keeping the first
        copy that no mask had to give way in; after that many bad copies it keeps its first decode. An
        autoregressive decoder does this inside its decoding loop (_decode_loop): a row's copies join the
        working set as soon as a mask corners its first decode (or when it ends flagged) while the others
        go on, and a copy that gets cornered is abandoned at that step (it could not be kept). A
        non-autoregressive decoder decodes again in rounds of ``REDECODE_ROUND`` copies. (On zinc-grae's
        GMM samples 62% of copies are good and every cornered row got one within 5.) A true derivation is
        never cornered (the masks admit every real molecule), so this changes only decodes that were
        already wrong. Seeded: the same batch of codes gives the same strings (a re-decoded row's draws
        depend on the other rows decoded with it). ``options``: semantics, retries and their temperature
        (:class:`DecodeOptions`; default: the model's ``decoding``)."""
        options = options or self.decoding
        layer, accept = self.semantic_layer_for(options), self.acceptor_for(options)
        retries = options.retries if layer is not None or accept is not None else 0
        if self.decoder.autoregressive:
            return self._decode_once(z, sample, temperature, generator, strings, layer, retries,
                                     options.retry_temperature, accept)
        out = self._with_rejections(self._decode_once(z, sample, temperature, generator, strings, layer), accept)
        if out.cornered is not None:
            out.retried = out.cornered.clone()
        if out.cornered is None or not retries or not bool(out.cornered.any()):
            return out
        gen = torch.Generator(device=z.device).manual_seed(REDECODE_SEED)
        rules, complete, cornered = out.rules.clone(), out.complete.clone(), out.cornered.clone()
        texts = list(out.strings) if out.strings is not None else None
        todo, tries = out.cornered.nonzero().flatten(), 0
        while len(todo) and tries < retries:
            k = min(REDECODE_ROUND, retries - tries)
            again = self._with_rejections(self._decode_once(z[todo].repeat_interleave(k, 0), True,
                                                            options.retry_temperature, gen, strings, layer), accept)
            good = (again.complete & ~again.cornered).view(len(todo), k)
            got = good.any(1)
            first = good.long().argmax(1)                               # the first good copy of each row
            dst = todo[got]
            src = torch.arange(len(todo), device=z.device)[got] * k + first[got]
            T = min(rules.shape[1], again.rules.shape[1])
            rules[dst] = self.grammar.padding_index
            rules[dst, :T] = again.rules[src, :T]
            complete[dst], cornered[dst] = True, False
            if texts is not None:
                for i, j in zip(dst.tolist(), src.tolist()):
                    texts[i] = again.strings[j]
            todo, tries = todo[~got], tries + k
        return Decoded(rules, complete, texts, cornered, out.retried)

    def _select_state(self, state, keep):
        """The decoder's recurrent state for the rows ``keep`` (batch in dim 1; Decoder.initial_state)."""
        if hasattr(self.decoder, "select_state"):
            return self.decoder.select_state(state, keep)
        if state is None:
            return None
        if isinstance(state, tuple):
            return tuple(s[:, keep] for s in state)
        return state[:, keep]

    def _decode_once(self, z, sample, temperature, generator, strings, layer, retries: int = 0,
                     retry_temperature: float = 1.0, accept=None) -> Decoded:
        """One decode of each code under the semantic layer ``layer`` (None: the grammar alone); an
        autoregressive decoder with ``retries`` > 0 starts a flagged row again in the same loop, sampling at
        ``retry_temperature``, up to ``retries`` times (decode); ``accept``: the test a finished string must
        pass not to be flagged (decode's RDKit acceptance; autoregressive decoders only, decode applies it
        to the others)."""
        was = self.training
        self.eval()
        try:
            if not self.decoder.autoregressive:
                return masked_decode(self.grammar, self.logits(z), sample, temperature, generator, strings,
                                     semantics=layer)
            return self._decode_loop(z, sample, temperature, generator, strings, layer, retries, retry_temperature,
                                     accept)
        finally:
            self.train(was)

    def _decode_loop(self, z, sample, temperature, generator, strings, layer, retries, retry_temperature,
                     accept=None) -> Decoded:
        """The autoregressive decoding loop. A first decode that a mask corners (or, at its end, that
        StackMachine.flagged flags) gets ``REDECODE_ROUND`` sampled copies added to the working set at once,
        and each copy that fails (flagged, cornered on the way, or unable to finish in T steps) gets
        ``REDECODE_AGAIN`` more while the row has copies left (``retries`` in all); the first good copy is
        kept and the row's other copies (and its first decode) stop."""
        g, dev = self.grammar, z.device
        B, T, pad = len(z), self.config.max_length, g.padding_index
        machine = StackMachine(g, B, T, dev, semantics=layer)
        start = g.n_rules                                               # the decoder's start token
        prev, state, codes = torch.full((B,), start, dtype=torch.long, device=dev), self.decoder.initial_state(z), z
        # the result of each row: its first decode, replaced by its first good copy
        rules = torch.full((B, T), pad, dtype=torch.long, device=dev)
        complete, flagged, resolved, retried = (torch.zeros(B, dtype=torch.bool, device=dev) for _ in range(4))
        made = torch.zeros(B, dtype=torch.long, device=dev)             # copies started per row
        # the working set: the batch row each entry decodes, its derivation so far and length, whether it is
        # a copy, and whether it has left (entries that left are dropped once a quarter of the set has,
        # COMPACT_AT, so the long tail of a batch costs only its own rows)
        live = torch.arange(B, device=dev)
        work, pos = torch.full((B, T), pad, dtype=torch.long, device=dev), torch.zeros(B, dtype=torch.long, device=dev)
        copy, gone = torch.zeros(B, dtype=torch.bool, device=dev), torch.zeros(B, dtype=torch.bool, device=dev)
        retry_gen = torch.Generator(device=dev).manual_seed(REDECODE_SEED) if retries else None
        check = CHECK_EVERY.get(dev.type, 16)  # a host sync per check on a GPU
        steps = T * (1 + retries)
        for step in range(steps):
            logits, state = self.decoder.step(z, prev, machine.top(), state)
            scores = _scores(logits, sample, temperature, generator)
            if retries and bool(copy.any()):   # copies sample; first decodes as asked
                scores = torch.where(copy[:, None], _scores(logits, True, retry_temperature, retry_gen), scores)
            prev = machine.choose(scores)
            at, here = pos.clamp(max=T - 1), torch.arange(len(live), device=dev)
            work[here, at] = torch.where(pos < T, prev, work[here, at])
            pos = pos + 1
            if step % check != check - 1 and step != steps - 1:
                continue
            # a derivation ends when its stack empties, or when it can no longer finish in T steps
            ended = ~gone & (machine.done | machine.cannot_finish(T - pos) | (step == steps - 1))
            # a first decode a mask cornered gets its copies at once (it goes on, to be kept if none is good)
            early = ~gone & ~copy & machine.cornered & (made[live] == 0) if retries else None
            if retries:   # a copy a mask cornered is lost already
                ended |= ~gone & copy & machine.cornered
            if not bool(ended.any()) and not (retries and bool(early.any())):
                continue
            flag = machine.flagged(ended)
            if accept is not None:   # a string the acceptance test refuses is flagged too, and no string at all
                flag = flag | (ended & ~machine.done)
                judge = (ended & machine.done & ~flag).nonzero().flatten()
                if len(judge):
                    flag[judge[self._rejected(work, judge, accept)]] = True
            first = ended & ~copy & ~resolved[live]                    # (a row with a good copy keeps it)
            retried[live[first & flag]] = True
            if retries:
                retried[live[early]] = True
            good = ended & copy & machine.done & ~flag & ~resolved[live]
            if bool(good.any()):   # the first good copy of each row (the lowest entry among simultaneous ones)
                idx = good.nonzero().flatten()
                best = torch.full((B,), len(live), dtype=torch.long, device=dev).scatter_reduce(0, live[idx], idx, "amin")
                good = torch.zeros_like(good).scatter_(0, best[best < len(live)], True)
            keep = first | good
            rows_out = live[keep]
            rules[rows_out], complete[rows_out] = work[keep], machine.done[keep]
            flagged[rows_out] = flag[keep] & ~good[keep]
            resolved[live[good]] = True
            gone |= ended | resolved[live]                 # a resolved row's other copies (and first decode) stop
            if retries:   # new copies: REDECODE_ROUND for a flagged first decode, and for each failed copy
                wanted = torch.zeros(B, dtype=torch.long, device=dev)
                starts = (first & flag | early) & (made[live] == 0)
                wanted.index_add_(0, live[starts], torch.full_like(live[starts], REDECODE_ROUND))
                failed = ended & copy & ~good
                wanted.index_add_(0, live[failed], torch.full_like(live[failed], REDECODE_AGAIN))
                granted = torch.minimum(wanted, (retries - made).clamp(min=0)) * ~resolved
                if bool(granted.any()):
                    src = torch.arange(B, device=dev).repeat_interleave(granted)
                    made += granted
                    k = len(src)
                    machine.extend(k)
                    state = self._extend_state(state, self.decoder.initial_state(codes[src]))
                    live, z = torch.cat([live, src]), torch.cat([z, codes[src]])
                    prev = torch.cat([prev, torch.full((k,), start, dtype=torch.long, device=dev)])
                    work = torch.cat([work, torch.full((k, T), pad, dtype=torch.long, device=dev)])
                    pos = torch.cat([pos, torch.zeros(k, dtype=torch.long, device=dev)])
                    copy = torch.cat([copy, torch.ones(k, dtype=torch.bool, device=dev)])
                    gone = torch.cat([gone, torch.zeros(k, dtype=torch.bool, device=dev)])
            n = int(gone.sum())
            if n == len(live):
                break
            if COMPACT_AT and n * COMPACT_AT >= len(live):
                stay = ~gone
                machine.select(stay)
                live, z, prev, work, pos, copy, gone = (v[stay] for v in (live, z, prev, work, pos, copy, gone))
                state = self._select_state(state, stay)
        out = finish(g, rules, complete, strings, flagged)
        out.retried = retried
        return out

    @staticmethod
    def _extend_state(state, fresh):
        """The decoder's recurrent state with the rows of ``fresh`` appended (batch in dim 1)."""
        if state is None:
            return None
        if isinstance(state, tuple):
            return tuple(torch.cat([s, f], 1) for s, f in zip(state, fresh))
        return torch.cat([state, fresh], 1)
