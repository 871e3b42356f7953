"""The encoder and decoder interfaces of a grammar autoencoder, and the registry of architectures that
pair one encoder with one decoder.

An encoder maps rule sequences [B, T] (padded with the grammar's padding rule) to codes; a decoder maps
codes back to per-step rule logits. ``GrammarAE`` (grammar_ae.py) adds the grammar's masks, the
regulariser and decoding; the trainer, the CLI (``--arch``) and the recipes read this registry, so
adding an encoder or a decoder is one class and one ``register(...)`` line::

    class MyEncoder(nn.Module):
        reads_padding = False
        def __init__(self, c, g): ...                      # c: GrammarAEConfig, g: Grammar
        def forward(self, rules): return mean, None        # (μ [B, d], log σ² [B, d] or None)

    register(Architecture("my-arch", MyEncoder, TeacherForcedDecoder, summary="..."))

What an architecture needs is read from its classes, never from its name:
  cuts_padding     a batch may be cut to its longest derivation (the trainer's length buckets) when
                   neither network reads positions past the end (``reads_padding`` false on both)
  autoregressive   the decoder steps (``initial_state``/``step``) with the stack machine when decoding;
                   otherwise its ``forward(z)`` gives every step's logits at once from z alone
  double_backward  the decoder is differentiated twice (RAE-GP's ∇_z D(z) penalty): it must avoid
                   kernels with no double backward (cuDNN's RNN)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch


@runtime_checkable
class Encoder(Protocol):
    """Rule sequences → codes. ``reads_padding``: whether the code of a sequence depends on the padding
    after it (then batches are not cut to their longest row)."""

    reads_padding: bool

    def __call__(self, rules: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(μ [B, latent_dim], log σ² [B, latent_dim] for a variational model, else None)."""
        ...


@runtime_checkable
class Decoder(Protocol):
    """Codes → rule logits. Teacher-forced in training (``forward(z, rules)`` reads the target rules
    when ``autoregressive``); when decoding, an autoregressive decoder is stepped with the grammar's
    stack machine, which supplies the previous rule and the non-terminal to expand."""

    autoregressive: bool
    reads_padding: bool
    double_backward: bool

    def __call__(self, z: torch.Tensor, rules: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, n_rules] (T: the targets' length, else the config's max_length)."""
        ...

    def initial_state(self, z: torch.Tensor) -> Any:
        """The recurrent state before the first step (autoregressive decoders): None, an RNN's tensor
        [layers, B, H] or a tuple of them (batch in dim 1, as decoding drops finished rows from it), or
        anything the decoder's own ``select_state(state, keep)`` can cut to the rows ``keep``."""
        ...

    def step(self, z: torch.Tensor, prev: torch.Tensor, lhs: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """One decoding step: logits [B, n_rules] after the rules ``prev`` [B] (index n_rules = start),
        for the non-terminals ``lhs`` [B] on top of the stack, and the new state."""
        ...


@dataclass(frozen=True)
class Architecture:
    """One encoder paired with one decoder. ``encoder`` and ``decoder`` are classes (or factories)
    called as ``cls(config, grammar)``, or ``"module:Class"`` names imported when a model is built (so
    listing the architectures does not import torch); ``sizes`` are the network sizes per shipped grammar (others take
    the ``smiles`` sizes); ``recipe_from``: the architecture whose training recipes it uses when it has
    none of its own (recipes.py)."""

    name: str
    encoder: Callable[..., Encoder] | str
    decoder: Callable[..., Decoder] | str
    sizes: dict = field(default_factory=dict)
    summary: str = ""
    recipe_from: str = "teacher-forced"

    def build(self, config, grammar) -> tuple[torch.nn.Module, torch.nn.Module]:
        enc, dec = _resolve(self.encoder)(config, grammar), _resolve(self.decoder)(config, grammar)
        for part, net, proto in (("encoder", enc, Encoder), ("decoder", dec, Decoder)):
            missing = [a for a in _MEMBERS[proto] if not hasattr(net, a)]
            if missing or not isinstance(net, proto):
                raise ConfigError(f"the {self.name!r} architecture's {part} {type(net).__name__} does not implement "
                                  f"the {proto.__name__} interface (missing: {', '.join(missing) or '__call__'}; "
                                  "models/architectures.py)")
        return enc, dec

    def sizes_for(self, grammar: str) -> dict:
        return dict(self.sizes.get(grammar, self.sizes.get("smiles", {})))


_MEMBERS = {Encoder: ("reads_padding", "__call__"),
            Decoder: ("autoregressive", "reads_padding", "double_backward", "__call__", "initial_state", "step")}
ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Add an architecture: its name becomes an ``arch`` for ``GrammarAEConfig``, ``grammar_rae.train`` and
    run directories (and a ``--arch`` choice when registered before the CLI is imported); re-registering a
    name replaces it."""
    ARCHITECTURES[arch.name] = arch
    return arch


def architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ConfigError(f"unknown architecture {name!r}; choose from {', '.join(ARCHITECTURES)}") from None


def _resolve(factory):
    if isinstance(factory, str):
        module, _, name = factory.partition(":")
        return getattr(import_module(module), name)
    return factory


def cuts_padding(encoder, decoder) -> bool:
    """Whether batches may be cut to their longest derivation: neither network reads the padding."""
    return not (encoder.reads_padding or decoder.reads_padding)


def _register_shipped():
    # teacher-forced: the CPU recipe's sizes (BENCHMARKS.md, "Choosing the defaults"; the GPU recipe widens
    # them, recipes.py). gvae: the GrammarVAE's networks (REFERENCE.md §4), kept for its Table 3.
    register(Architecture(
        "teacher-forced", f"{__package__}.teacher_forced:ConvEncoder", f"{__package__}.teacher_forced:TeacherForcedDecoder",
        sizes={"smiles": dict(latent_dim=56, embedding_dim=64, conv_channels=(128, 128, 128), conv_kernels=(5, 5, 5),
                              encoder_hidden=256, decoder_hidden=384, decoder_layers=1),
               "expr": dict(latent_dim=25, embedding_dim=64, conv_channels=(128, 128, 128), conv_kernels=(5, 5, 5),
                            encoder_hidden=128, decoder_hidden=128, decoder_layers=1)},
        summary="conv encoder over rule embeddings + a GRU decoder that reads the previous rule and z at every "
                "step (learns hundreds of times faster)"))
    register(Architecture(
        "bigru", f"{__package__}.teacher_forced:BiGRUEncoder", f"{__package__}.teacher_forced:TeacherForcedDecoder",
        sizes={"smiles": dict(latent_dim=56, embedding_dim=64, encoder_hidden=256, decoder_hidden=384, decoder_layers=1),
               "expr": dict(latent_dim=25, embedding_dim=64, encoder_hidden=128, decoder_hidden=128, decoder_layers=1)},
        summary="a bidirectional GRU encoder over rule embeddings (MHG-VAE's) + the teacher-forced GRU decoder"))
    register(Architecture(
        "gvae", f"{__package__}.gvae_arch:GVAEEncoder", f"{__package__}.gvae_arch:GVAEDecoder",
        sizes={"smiles": dict(latent_dim=56, conv_channels=(9, 9, 10), conv_kernels=(9, 9, 11), encoder_hidden=435,
                              decoder_hidden=501, decoder_layers=3, batch_norm=False),
               "expr": dict(latent_dim=25, conv_channels=(2, 3, 4), conv_kernels=(2, 3, 4), encoder_hidden=100,
                            decoder_hidden=100, decoder_layers=3, batch_norm=True)},
        summary="the GrammarVAE's networks (one-hot conv encoder, z-repeated GRU decoder), to reproduce the papers",
        recipe_from="gvae"))


_register_shipped()
