"""Training recipes: the settings `grammar-rae train` uses when none are given, per grammar,
architecture and device kind. Each teacher-forced recipe was chosen by measurement (BENCHMARKS.md,
"Choosing the defaults"); the gvae recipes are the GrammarVAE's own (REFERENCE.md §4).

  cpu   small batches: on a CPU a batch of 64 costs the same per molecule as a batch of 256 and
        learns far more per molecule (REFERENCE.md §9)
  cuda  large batches and a wider decoder: a GPU's throughput comes from the batch
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from .errors import ConfigError
from .trainer import TrainConfig


@dataclass(frozen=True)
class Recipe:
    model: dict = field(default_factory=dict)   # GrammarAEConfig overrides (sizes)
    train: dict = field(default_factory=dict)   # TrainConfig fields
    note: str = ""


RECIPES: dict[tuple[str, str, str], Recipe] = {
    # teacher-forced, CPU
    ("expr", "teacher-forced", "cpu"): Recipe(
        train=dict(epochs=12, batch_size=64, lr=2e-3, lr_factor=0.5, lr_patience=1, min_lr=1e-5, grad_clip=5.0),
        note="≥ 99% held-out reconstruction on the GVAE expression set within 15 minutes of this 2-core CPU"),
    ("smiles", "teacher-forced", "cpu"): Recipe(
        train=dict(epochs=100, batch_size=64, lr=1e-3, lr_factor=0.5, lr_patience=2, min_lr=1e-5, grad_clip=5.0),
        note="ZINC250k on a 2-core CPU: hours per useful model; run with --max-minutes and --resume"),
    # teacher-forced, GPU
    ("expr", "teacher-forced", "cuda"): Recipe(
        train=dict(epochs=30, batch_size=256, lr=3e-3, lr_factor=0.5, lr_patience=2, min_lr=1e-5, grad_clip=5.0,
                   warmup_steps=100),
        note="GPU: expressions in a few minutes"),
    ("smiles", "teacher-forced", "cuda"): Recipe(
        model=dict(conv_channels=(256, 256, 256), encoder_hidden=512, decoder_hidden=512, decoder_layers=2),
        train=dict(epochs=30, batch_size=256, lr=2e-3, lr_factor=0.5, lr_patience=2, min_lr=1e-5, grad_clip=5.0,
                   warmup_steps=200),
        note="GPU: ZINC250k on one H100 (not yet measured on a GPU: see BENCHMARKS.md)"),
    # the GrammarVAE's recipes, on any device
    ("expr", "gvae", "any"): Recipe(
        train=dict(epochs=50, batch_size=600, lr=1e-3, lr_factor=0.2, lr_patience=1, min_lr=1e-4, grad_clip=0.0),
        note="GrammarVAE: 50 epochs, batch 600"),
    ("smiles", "gvae", "any"): Recipe(
        train=dict(epochs=100, batch_size=500, lr=1e-3, lr_factor=0.2, lr_patience=3, min_lr=1e-4, grad_clip=0.0),
        note="GrammarVAE: 100 epochs, batch 500"),
}


def recipe(grammar: str, arch: str = "teacher-forced", device: str = "cpu") -> Recipe:
    """The recipe for a grammar (shipped name; others use the SMILES sizes), a registered architecture
    (models/architectures.py; one without recipes of its own uses those of its ``recipe_from``) and a
    device kind ("cpu", "cuda"; anything else is treated as cpu)."""
    from .models.architectures import architecture

    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    base = grammar if grammar in ("expr", "smiles") else "smiles"
    for name in dict.fromkeys((arch, architecture(arch).recipe_from)):
        for key in ((base, name, kind), (base, name, "any")):
            if key in RECIPES:
                return RECIPES[key]
    raise ConfigError(f"no recipe for the {arch!r} architecture")


def train_config(grammar: str, arch: str = "teacher-forced", device: str = "auto", **given) -> TrainConfig:
    """The recipe's TrainConfig for ``device`` ("auto", "cpu", "cuda:1", ...) with the caller's
    settings (those not None) on top."""
    from .trainer import resolve_device

    r = recipe(grammar, arch, resolve_device(device).type)
    cfg = TrainConfig(**{**r.train, "device": device})
    return replace(cfg, **{k: v for k, v in given.items() if v is not None})
