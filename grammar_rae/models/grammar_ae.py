"""The GrammarVAE sequence autoencoder (Kusner et al., ICML 2017) with the RAE family's latent terms
and decoder regularisers (Ghosh et al., ICLR 2020) -- one model, pluggable regulariser.

Encoder: one-hot rule sequence -> three 1D convolutions -> dense -> z (and log-variance for the VAE).
Decoder: ``gvae`` -- dense(z), repeated T times -> 3-layer GRU -> rule logits at every step (the
reference architecture); ``autoregressive`` -- the GRU also reads the previous rule (teacher forcing
in training; the stack machine's own choices when decoding).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..grammar import Grammar, load_grammar
from . import regularisers as R

MODELS = ("rae-l2", "rae-gp", "rae-sn", "rae", "ae", "vae", "cv-vae")

# GrammarVAE architectures (REFERENCE.md §4); the RAE paper keeps them for its Table 3.
ARCHITECTURES = {
    "smiles": dict(latent_dim=56, conv_channels=(9, 9, 10), conv_kernels=(9, 9, 11), encoder_hidden=435,
                   decoder_hidden=501, batch_norm=False),
    "expr": dict(latent_dim=25, conv_channels=(2, 3, 4), conv_kernels=(2, 3, 4), encoder_hidden=100,
                 decoder_hidden=100, batch_norm=True),
}


@dataclass
class GrammarAEConfig:
    grammar: str = "expr"           # shipped name or .cfg path
    max_length: int = 15            # decoder steps T
    model: str = "rae-l2"           # regulariser family, see MODELS
    decoder: str = "gvae"           # "gvae" | "autoregressive"
    latent_dim: int = 25
    conv_channels: tuple = (2, 3, 4)
    conv_kernels: tuple = (2, 3, 4)
    encoder_hidden: int = 100
    decoder_hidden: int = 100
    decoder_layers: int = 3
    batch_norm: bool = True
    beta: float | None = None       # weight of ½‖z‖² (RAE), KL (VAE), ½‖μ‖² (CV-VAE); None: default
    lam: float | None = None        # weight of the decoder regulariser (L2, GP); None: default
    vae_epsilon_std: float = 1.0    # GVAE's code samples with 0.01; the textbook VAE with 1.0
    cv_sigma: float = 0.7           # CV-VAE's constant posterior std
    extra: dict = field(default_factory=dict)

    @classmethod
    def for_grammar(cls, grammar: str, max_length: int, model: str = "rae-l2", **overrides) -> "GrammarAEConfig":
        arch = dict(ARCHITECTURES.get(grammar, ARCHITECTURES["smiles"]))
        arch.update(overrides)
        return cls(grammar=grammar, max_length=max_length, model=model, **arch)

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose from {MODELS}")
        if self.decoder not in ("gvae", "autoregressive"):
            raise ValueError("decoder must be 'gvae' or 'autoregressive'")
        self.conv_channels, self.conv_kernels = tuple(self.conv_channels), tuple(self.conv_kernels)
        beta, lam = R.DEFAULT_WEIGHTS[self.model]
        self.beta = beta if self.beta is None else self.beta
        self.lam = lam if self.lam is None else self.lam

    def to_dict(self) -> dict:
        return asdict(self)


class Encoder(nn.Module):
    def __init__(self, c: GrammarAEConfig, vocab: int):
        super().__init__()
        layers, ch, length = [], vocab, c.max_length
        for out, k in zip(c.conv_channels, c.conv_kernels):
            layers += [nn.Conv1d(ch, out, k)] + ([nn.BatchNorm1d(out)] if c.batch_norm else []) + [nn.ReLU()]
            ch, length = out, length - k + 1
        if length < 1:
            raise ValueError(f"max_length {c.max_length} is too short for kernels {c.conv_kernels}")
        self.conv = nn.Sequential(*layers)
        self.dense = nn.Sequential(nn.Linear(ch * length, c.encoder_hidden), nn.ReLU())
        self.mean = nn.Linear(c.encoder_hidden, c.latent_dim)
        self.log_var = nn.Linear(c.encoder_hidden, c.latent_dim) if c.model == "vae" else None

    def forward(self, one_hot: torch.Tensor):
        h = self.dense(self.conv(one_hot.transpose(1, 2)).flatten(1))
        return self.mean(h), (self.log_var(h) if self.log_var is not None else None)


class Decoder(nn.Module):
    def __init__(self, c: GrammarAEConfig, vocab: int):
        super().__init__()
        self.autoregressive = c.decoder == "autoregressive"
        self.max_length, self.vocab = c.max_length, vocab
        self.latent_in = nn.Sequential(nn.Linear(c.latent_dim, c.latent_dim), nn.ReLU())
        extra = 0
        if self.autoregressive:
            self.prev_embedding = nn.Embedding(vocab + 1, 32)  # index `vocab` = start of sequence
            extra = 32
        self.gru = nn.GRU(c.latent_dim + extra, c.decoder_hidden, num_layers=c.decoder_layers, batch_first=True)
        self.out = nn.Linear(c.decoder_hidden, vocab)
        # RAE-GP differentiates ∇_z D(z) again: cuDNN's RNN has no double backward, PyTorch's native
        # CUDA GRU has (its fused cell switches to a differentiable backward under create_graph).
        self.double_backward = c.model == "rae-gp"

    def forward(self, z: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, vocab]. The autoregressive decoder needs the target sequence (teacher forcing)."""
        h = self.latent_in(z)[:, None, :].expand(-1, self.max_length, -1)
        if self.autoregressive:
            if targets is None:
                raise ValueError("the autoregressive decoder needs targets in training; use decode() to generate")
            prev = torch.cat([torch.full_like(targets[:, :1], self.vocab), targets[:, :-1]], 1)
            h = torch.cat([h, self.prev_embedding(prev)], -1)
        if self.double_backward and h.is_cuda and torch.is_grad_enabled():
            with torch.backends.cudnn.flags(enabled=False):
                out, _ = self.gru(h)
        else:
            out, _ = self.gru(h)
        return self.out(out)

    def step(self, z_in: torch.Tensor, prev: torch.Tensor, state):
        """One autoregressive step: logits [B, vocab] and the new GRU state."""
        x = torch.cat([z_in, self.prev_embedding(prev)], -1)[:, None, :]
        out, state = self.gru(x, state)
        return self.out(out[:, 0]), state


class GrammarAE(nn.Module):
    """Encoder + decoder + the chosen regulariser. ``loss(rules)`` returns the total and its terms."""

    def __init__(self, config: GrammarAEConfig, grammar: Grammar | None = None):
        super().__init__()
        self.config = config
        self.grammar = grammar or load_grammar(config.grammar)
        vocab = self.grammar.n_rules
        self.encoder = Encoder(config, vocab)
        self.decoder = Decoder(config, vocab)
        # lhs_mask rows of each rule's LHS: which rules compete with the true rule at a step (GVAE's mask)
        lhs_mask = torch.as_tensor(self.grammar.lhs_mask)
        self.register_buffer("rule_competitors", lhs_mask[torch.as_tensor(self.grammar.rule_lhs)], persistent=False)
        if config.model == "rae-sn":
            R.apply_spectral_norm(self.decoder)

    # ------------------------------------------------------------------ encode / decode
    def one_hot(self, rules: torch.Tensor) -> torch.Tensor:
        return F.one_hot(rules.long(), self.grammar.n_rules).float()

    def encode(self, rules: torch.Tensor) -> torch.Tensor:
        """Deterministic codes (the encoder mean) for rule sequences [B, T]."""
        return self.encoder(self.one_hot(rules))[0]

    def latent(self, rules: torch.Tensor):
        """z used for reconstruction in training, plus (mean, log_var) for the latent term."""
        mean, log_var = self.encoder(self.one_hot(rules))
        c = self.config
        if c.model == "vae":  # reparameterisation (Kingma & Welling 2014, eq. 10)
            z = mean + c.vae_epsilon_std * torch.randn_like(mean) * torch.exp(0.5 * log_var)
        elif c.model == "cv-vae":  # constant posterior variance (Ghosh et al. 2020, Sec. 2)
            z = mean + c.cv_sigma * torch.randn_like(mean)
        else:
            z = mean
        return z, mean, log_var

    def logits(self, z: torch.Tensor, rules: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(z, rules)

    # ------------------------------------------------------------------ the objective
    def forward(self, rules: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The training objective, so DistributedDataParallel's forward hooks see it."""
        return self.loss(rules)

    def loss(self, rules: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """L = L_REC + β·(latent term) + λ·L_REG  (Ghosh et al. 2020, eq. 11), averaged over the batch."""
        rules = rules.long()
        c = self.config
        z, mean, log_var = self.latent(rules)
        logits = self.logits(z, rules)
        rec = R.masked_nll(logits, rules, self.rule_competitors).mean()
        return R.objective(c.model, rec, mean, log_var, z, logits, self.decoder, c.beta, c.lam)

    def reconstruction_loss(self, rules: torch.Tensor) -> torch.Tensor:
        """Masked NLL per sequence from the deterministic code (the encoder mean): the validation criterion."""
        rules = rules.long()
        return R.masked_nll(self.logits(self.encode(rules), rules), rules, self.rule_competitors)

    @torch.no_grad()
    def decode_repeated(self, z: torch.Tensor, n: int, sample: bool = True, temperature: float = 1.0,
                        generator: torch.Generator | None = None):
        """``n`` decodes of the same codes (the GVAE protocol's many decodes per point). The GrammarVAE
        decoder's logits depend only on z, so they are computed once and only the masked choice repeats."""
        if self.decoder.autoregressive:
            for _ in range(n):
                yield self.decode(z, sample, temperature, generator)
            return
        from .decoding import decode as masked_decode

        was = self.training
        self.eval()
        logits = self.logits(z)
        self.train(was)
        for _ in range(n):
            yield masked_decode(self.grammar, logits, sample, temperature, generator)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, sample: bool = False, temperature: float = 1.0,
               generator: torch.Generator | None = None):
        """Rule sequences and strings from codes, under the grammar's masks (batched)."""
        from .decoding import StackMachine, _finish, decode as masked_decode

        was = self.training
        self.eval()
        try:
            if not self.decoder.autoregressive:
                return masked_decode(self.grammar, self.logits(z), sample, temperature, generator)
            B, T = len(z), self.config.max_length
            machine = StackMachine(self.grammar, B, T, z.device)
            rules = torch.full((B, T), self.grammar.padding_index, dtype=torch.long, device=z.device)
            z_in = self.decoder.latent_in(z)
            prev = torch.full((B,), self.grammar.n_rules, dtype=torch.long, device=z.device)
            state = None
            for t in range(T):
                logits, state = self.decoder.step(z_in, prev, state)
                prev = machine.step(logits, sample, temperature, generator)
                rules[:, t] = prev
            return _finish(self.grammar, rules, machine.done, True)
        finally:
            self.train(was)
