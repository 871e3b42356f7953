"""Pretrained run directories shipped inside the package (``zinc-grae``, ``expr-grae``).

Each is an ordinary run directory (run.json, grammar.cfg, split.npz, fp16 safetensors weights,
fitted densities), small enough to ship (every file < 16 MB). Wherever a command takes ``--run``,
a shipped NAME works too; a run directory (holding run.json) of the same name wins. BENCHMARKS.md records how
each was trained and what it reaches.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import RunError

ROOT = Path(__file__).parent


def available() -> list[str]:
    """Names of the shipped pretrained runs."""
    return sorted(p.name for p in ROOT.iterdir() if (p / "run.json").is_file())


def path(name: str) -> Path:
    """The directory of a shipped pretrained run."""
    if name not in available():
        raise RunError(f"no shipped pretrained model {name!r}; shipped: {', '.join(available()) or 'none'}")
    return ROOT / name


def resolve_run(run: str | Path) -> Path:
    """A run directory from what a user typed: a directory holding run.json, else a shipped NAME, else
    an existing directory (whose missing run.json the caller reports). A folder that merely shares a
    shipped model's name (``--out expr-grae`` of a BO run) does not hide the model."""
    p = Path(run)
    if (p / "run.json").is_file():
        return p
    if str(run) in available():
        return ROOT / str(run)
    if p.is_dir():
        return p
    shipped = ", ".join(available()) or "none"
    raise RunError(f"{run} is neither a run directory nor a shipped pretrained model (shipped: {shipped})")


def is_shipped(run: str | Path) -> bool:
    try:
        return Path(run).resolve().parent == ROOT.resolve()
    except OSError:
        return False
