"""The one checkpoint format, and run directories.

A run directory holds ``run.json`` (format tag, model and training configs, grammar hash), and
``checkpoints/{last,best}.safetensors`` (weights) with ``{last,best}.json`` (epoch, history) and
``last.state.pt`` (optimizer/scheduler/RNG state: tensors and numbers only, read with
``torch.load(weights_only=True)``). Every file is written atomically (temp file + rename), so a kill
at any moment leaves the previous checkpoint intact. Nothing is ever unpickled: a file that is not
ours, or was tampered with, fails with :class:`RunError`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .io import atomic_target, atomic_write_bytes

RUN_FORMAT = "grammar-rae-run/1"


class RunError(RuntimeError):
    """A run directory or checkpoint is missing, damaged, foreign, or unsafe to load."""


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1).encode("utf-8"))


def read_json(path: Path) -> dict:
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path} is not valid JSON ({e}); the file is damaged or not ours") from e
    if not isinstance(obj, dict):
        raise RunError(f"{path} does not hold a JSON object")
    return obj


def save_weights(path: Path, state_dict: dict, half: bool = False) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        if half and v.is_floating_point():
            v = v.half()
        tensors[k] = v.contiguous().clone()  # clone: safetensors refuses tensors sharing storage
    with atomic_target(path) as tmp:
        save_file(tensors, tmp)


def load_weights(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise RunError(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(f"{path} is not a safetensors weight file ({e}); refusing to load it") from e


def save_state(path: Path, state: dict) -> None:
    """Optimizer/scheduler/RNG state: plain containers of tensors and numbers."""
    with atomic_target(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path) -> dict:
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise RunError(f"{path} holds something other than plain tensors and numbers; refusing to "
                       f"unpickle it ({str(e).splitlines()[0]})") from e


def load_model_state(model: torch.nn.Module, path: Path) -> None:
    weights = load_weights(path)
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if missing or extra:
        raise RunError(f"{path} does not fit this model (missing {missing[:3]}, unexpected {extra[:3]})")
    for k, v in weights.items():
        if v.shape != own[k].shape:
            raise RunError(f"{path}: tensor {k} has shape {tuple(v.shape)}, the model wants {tuple(own[k].shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})
