"""The default grammar architecture: a 1D-conv encoder over rule embeddings and a teacher-forced,
grammar-masked GRU decoder (REFERENCE.md §9; the decoder follows MHG-VAE and the MOSES VAE).

Encoder: embedding(rule) → 1D convolutions ("same" padding, ReLU), each output zeroed past the true
length so a sequence's code does not depend on how much padding its batch has → max- and mean-pool
over the true length → dense → μ (and log σ² for the VAE).

Decoder: a GRU whose input at step t is [embedding(rule t−1) + embedding(LHS of step t), z]; its
initial state is tanh(W z). The LHS of step t is the non-terminal on top of the decoding stack, a
function of the earlier rules (in training: the true rule's LHS; when decoding: the stack machine's
top), so the GRU is told which non-terminal it expands instead of having to track the stack. In
training the previous rules are the true ones (teacher forcing; with ``rule_dropout`` some are replaced
by the start token, word dropout); when decoding, the stack machine's own choices. Padding steps (after
the end of a derivation) cost nothing under the grammar mask, so a batch can be cut to its longest
derivation without changing the loss or its gradients.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


class ConvEncoder(nn.Module):
    reads_padding = False  # every conv output is zeroed past the end and pooled over the true length

    def __init__(self, c, g):
        super().__init__()
        vocab, padding_index = g.n_rules, g.padding_index
        self.padding_index = padding_index
        self.embedding = nn.Embedding(vocab, c.embedding_dim)
        self.convs = nn.ModuleList()
        ch = c.embedding_dim
        for out, k in zip(c.conv_channels, c.conv_kernels):
            if k % 2 == 0:
                raise ConfigError(f"the teacher-forced encoder needs odd kernels ('same' padding), got {k}")
            self.convs.append(nn.Conv1d(ch, out, k, padding=k // 2))
            ch = out
        self.dense = nn.Sequential(nn.Linear(2 * ch, c.encoder_hidden), nn.ReLU())
        self.mean = nn.Linear(c.encoder_hidden, c.latent_dim)
        self.log_var = nn.Linear(c.encoder_hidden, c.latent_dim) if c.variational else None

    def forward(self, rules: torch.Tensor):
        """(μ, log σ² or None) for rule sequences [B, T] (padded with the padding rule)."""
        keep = (rules != self.padding_index)                      # [B, T]
        lengths = keep.sum(1, keepdim=True).clamp(min=1)
        m = keep[:, None, :].to(self.embedding.weight.dtype)      # [B, 1, T]
        h = self.embedding(rules).transpose(1, 2) * m             # [B, E, T]
        for conv in self.convs:
            h = torch.relu(conv(h)) * m                           # zero past the end: padding-invariant
        pooled_max = h.masked_fill(m == 0, float("-inf")).amax(2)
        pooled_max = torch.where(torch.isfinite(pooled_max), pooled_max, torch.zeros_like(pooled_max))
        pooled_mean = h.sum(2) / lengths.to(h.dtype)
        e = self.dense(torch.cat([pooled_max, pooled_mean], 1))
        return self.mean(e), (self.log_var(e) if self.log_var is not None else None)


class BiGRUEncoder(nn.Module):
    """A bidirectional GRU over rule embeddings (MHG-VAE's encoder, Kajino 2019: 3 x 384 there; here
    ``encoder_layers`` x ``encoder_hidden`` per direction): each direction's state after the last true
    step → dense → μ (and log σ² for the VAE). The backward direction reads each row's own derivation
    reversed (its rules gathered back to front, padding after them), so neither direction's state at the
    end depends on the padding; both run as plain batched GRUs (a packed sequence is several times
    slower on a CPU)."""

    reads_padding = False  # each direction's state is taken at the row's last true step

    def __init__(self, c, g):
        super().__init__()
        self.padding_index = g.padding_index
        self.embedding = nn.Embedding(g.n_rules, c.embedding_dim)
        layers = int(c.extra.get("encoder_layers", 1))
        gru = dict(input_size=c.embedding_dim, hidden_size=c.encoder_hidden, num_layers=layers, batch_first=True,
                   dropout=c.dropout if layers > 1 else 0.0)
        self.forward_gru, self.backward_gru = nn.GRU(**gru), nn.GRU(**gru)
        self.dense = nn.Sequential(nn.Linear(2 * c.encoder_hidden, c.encoder_hidden), nn.ReLU())
        self.mean = nn.Linear(c.encoder_hidden, c.latent_dim)
        self.log_var = nn.Linear(c.encoder_hidden, c.latent_dim) if c.variational else None

    def forward(self, rules: torch.Tensor):
        B, T = rules.shape
        lengths = (rules != self.padding_index).sum(1).clamp(min=1)                  # [B]
        steps = torch.arange(T, device=rules.device)[None, :]
        # row b reversed: rules[b, L_b - 1 - t] for t < L_b, then padding
        back = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
        reversed_rules = rules.gather(1, back)
        last = (lengths - 1)[:, None, None]
        out_f, _ = self.forward_gru(self.embedding(rules))
        out_b, _ = self.backward_gru(self.embedding(reversed_rules))
        h = torch.cat([out_f.gather(1, last.expand(-1, 1, out_f.shape[2]))[:, 0],
                       out_b.gather(1, last.expand(-1, 1, out_b.shape[2]))[:, 0]], 1)
        e = self.dense(h)
        return self.mean(e), (self.log_var(e) if self.log_var is not None else None)


class TeacherForcedDecoder(nn.Module):
    autoregressive = True
    reads_padding = False  # padding steps cost nothing under the grammar mask and come after every real step

    def __init__(self, c, g):
        super().__init__()
        vocab, rule_lhs, n_lhs = g.n_rules, torch.as_tensor(g.rule_lhs), len(g.lhs_list)
        self.vocab, self.layers, self.hidden = vocab, c.decoder_layers, c.decoder_hidden
        self.rule_dropout = c.rule_dropout
        self.register_buffer("rule_lhs", rule_lhs.long(), persistent=False)
        self.prev_embedding = nn.Embedding(vocab + 1, c.embedding_dim)    # index `vocab` = start
        self.lhs_embedding = nn.Embedding(n_lhs, c.embedding_dim)
        self.initial = nn.Linear(c.latent_dim, c.decoder_layers * c.decoder_hidden)
        self.gru = nn.GRU(c.embedding_dim + c.latent_dim, c.decoder_hidden, num_layers=c.decoder_layers,
                          batch_first=True, dropout=c.dropout if c.decoder_layers > 1 else 0.0)
        self.out = nn.Linear(c.decoder_hidden, vocab)
        # RAE-GP differentiates ∇_z D(z) again: cuDNN's RNN has no double backward
        self.double_backward = c.decoder_reg == "gp"

    def initial_state(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.initial(z))                           # [B, L·H]
        return h.view(len(z), self.layers, self.hidden).transpose(0, 1).contiguous()

    def forward(self, z: torch.Tensor, rules: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits [B, T, vocab] for the rule sequences ``rules`` [B, T]."""
        if rules is None:
            raise ConfigError("the teacher-forced decoder needs the target rules in training; "
                             "use GrammarAE.decode() to generate")
        rules = rules.long()
        prev = torch.cat([torch.full_like(rules[:, :1], self.vocab), rules[:, :-1]], 1)
        if self.training and self.rule_dropout > 0:   # word dropout: the decoder must lean on z (and the LHS)
            dropped = torch.rand(prev.shape, device=prev.device) < self.rule_dropout
            prev = prev.masked_fill(dropped, self.vocab)
        x = self.prev_embedding(prev) + self.lhs_embedding(self.rule_lhs[rules])
        x = torch.cat([x, z[:, None, :].expand(-1, rules.shape[1], -1).to(x.dtype)], -1)
        h0 = self.initial_state(z)
        if self.double_backward and x.is_cuda and torch.is_grad_enabled():
            with torch.backends.cudnn.flags(enabled=False):
                out, _ = self.gru(x, h0)
        else:
            out, _ = self.gru(x, h0)
        return self.out(out)

    def step(self, z: torch.Tensor, prev: torch.Tensor, lhs: torch.Tensor, state: torch.Tensor):
        """One decoding step: logits [B, vocab] for the non-terminals ``lhs`` [B] after rules ``prev`` [B]."""
        x = torch.cat([self.prev_embedding(prev) + self.lhs_embedding(lhs), z], -1)[:, None, :]
        out, state = self.gru(x, state)
        return self.out(out[:, 0]), state
