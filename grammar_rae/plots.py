"""Figures of a run, kept out of the run code: the training curves (``loss.png``)."""
from __future__ import annotations

from pathlib import Path


def plot_history(history: list[dict], path: Path) -> None:
    """Every training loss term and the validation reconstruction loss against the epoch (symlog)."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
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
