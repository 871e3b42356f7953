"""The GrammarVAE architecture (Kusner et al., ICML 2017; REFERENCE.md §4), kept to reproduce the
papers (``--arch gvae``).

Encoder: one-hot rule sequence (padded to the full length T) → three 1D convolutions → flatten →
dense → z (and log σ² for the VAE). Decoder ``gvae``: dense(z) repeated T times → 3-layer GRU → rule
logits at every step, with no view of the earlier rules; ``autoregressive``: the GRU also reads the
previous rule (teacher forcing in training).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


class GVAEEncoder(nn.Module):
    reads_padding = True   # the dense layer sees all T positions: batches are padded to T, never cut

    def __init__(self, c, g):
        super().__init__()
        vocab, padding_index = g.n_rules, g.padding_index
        self.vocab, self.max_length, self.padding_index = vocab, c.max_length, padding_index
        layers, ch, length = [], vocab, c.max_length
        for out, k in zip(c.conv_channels, c.conv_kernels):
            layers += [nn.Conv1d(ch, out, k)] + ([nn.BatchNorm1d(out)] if c.batch_norm else []) + [nn.ReLU()]
            ch, length = out, length - k + 1
        if length < 1:
            raise ConfigError(f"max_length {c.max_length} is too short for kernels {c.conv_kernels}")
        self.conv = nn.Sequential(*layers)
        self.dense = nn.Sequential(nn.Linear(ch * length, c.encoder_hidden), nn.ReLU())
        self.mean = nn.Linear(c.encoder_hidden, c.latent_dim)
        self.log_var = nn.Linear(c.encoder_hidden, c.latent_dim) if c.variational else None

    def forward(self, rules: torch.Tensor):
        if rules.shape[1] < self.max_length:  # the dense layer sees every position: pad to T
            rules = F.pad(rules, (0, self.max_length - rules.shape[1]), value=self.padding_index)
        one_hot = F.one_hot(rules.long(), self.vocab).to(self.dense[0].weight.dtype)
        h = self.dense(self.conv(one_hot.transpose(1, 2)).flatten(1))
        return self.mean(h), (self.log_var(h) if self.log_var is not None else None)


class GVAEDecoder(nn.Module):
    reads_padding = False

    def __init__(self, c, g):
        super().__init__()
        vocab = g.n_rules
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
        self.double_backward = c.decoder_reg == "gp"

    def forward(self, z: torch.Tensor, rules: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, vocab] (T = the targets' length, else max_length)."""
        steps = self.max_length if rules is None else rules.shape[1]
        h = self.latent_in(z)[:, None, :].expand(-1, steps, -1)
        if self.autoregressive:
            if rules is None:
                raise ConfigError("the autoregressive decoder needs targets in training; use decode() to generate")
            rules = rules.long()
            prev = torch.cat([torch.full_like(rules[:, :1], self.vocab), rules[:, :-1]], 1)
            h = torch.cat([h, self.prev_embedding(prev)], -1)
        if self.double_backward and h.is_cuda and torch.is_grad_enabled():
            with torch.backends.cudnn.flags(enabled=False):
                out, _ = self.gru(h)
        else:
            out, _ = self.gru(h)
        return self.out(out)

    def initial_state(self, z: torch.Tensor):
        return None

    def step(self, z: torch.Tensor, prev: torch.Tensor, lhs: torch.Tensor, state):
        """One autoregressive step: logits [B, vocab] and the new GRU state (``lhs`` is unused)."""
        x = torch.cat([self.latent_in(z), self.prev_embedding(prev)], -1)[:, None, :]
        out, state = self.gru(x, state)
        return self.out(out[:, 0]), state
