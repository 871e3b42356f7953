"""The one checkpoint format (the run directory around it: rundir.py).

A run directory holds ``run.json`` (format tag, model and training configs, grammar hash), and in
``checkpoints/`` two commits, ``last.json`` and ``best.json``. Each names the files of its version --
``last-TAG.safetensors`` (weights) and ``last-TAG.state.{safetensors,json}`` (optimizer/scheduler/RNG
state: its tensors, and the structure around them as JSON), ``best-TAG.safetensors`` -- with their
sha256. A save writes a new version's files under fresh names, then rewrites the JSON (one atomic
rename: the commit), then removes the files no JSON names any more (:func:`prune_checkpoints`). A kill
at any moment therefore leaves a JSON whose files are all present and unchanged: the old version or the
new one, never a mix. Runs written before versioned names (``last.safetensors``, ``best.safetensors``)
load as before. Nothing is ever unpickled: a file that is not ours, or was tampered with, fails with
:class:`RunError`.

Every tensor file's sha256 is recorded in the JSON written after it (``best.json`` for
``best.safetensors``, ``last.json`` for the last weights and state, ``density/KIND.json`` for a
density): the checksum is part of the atomic commit, and loading refuses a file whose bytes changed
since (:func:`verify_files`). Runs written before checksums existed load without the check.

Files stay practical to move: a tensor file larger than ``MAX_FILE_BYTES`` (15 MiB) is written as
shards ``NAME.<tag>-00001-of-0000N.safetensors`` first, then ``NAME.safetensors`` as a small index
naming them (the commit); the old shards are removed afterwards, so a kill never leaves an index
pointing at half-written shards. ``load_weights`` reads either form.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .errors import RunError, UserError  # noqa: F401  (RunError: also importable from here)
from .io import atomic_target, atomic_write_bytes

RUN_FORMAT = "grammar-rae-run/1"
MAX_FILE_BYTES = 15 * 2 ** 20
_SHARDS = "grammar_rae_shards"


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


def file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def digests(path: Path) -> dict:
    """{file name: sha256} of a tensor file and the shards its index names (names relative to its folder)."""
    path = Path(path)
    return {name: file_sha256(path.parent / name) for name in [path.name, *_shard_names(path)]}


def verify_files(folder: Path, expected: dict | None, what: str = "") -> None:
    """Refuse files whose sha256 differs from the one recorded when they were written."""
    for name, sha in (expected or {}).items():
        if "/" in name or "\\" in name or name.startswith("."):
            raise RunError(f"{folder}: a checksum names {name!r}, which is not a file of this folder")
        f = Path(folder) / name
        if not f.is_file():
            raise RunError(f"{f} is missing{what}")
        got = file_sha256(f)
        if got != sha:
            raise RunError(f"{f} has changed since it was written (sha256 {got[:12]}…, recorded {sha[:12]}…): "
                           f"the file is damaged or was replaced{what}; refusing to load it")


def save_weights(path: Path, state_dict: dict, half: bool = False, max_bytes: int | None = None) -> dict:
    """Tensors to ``path`` (safetensors), sharded when larger than ``max_bytes`` (see module doc).
    Returns the sha256 of each file written (for the JSON that commits them)."""
    from safetensors.torch import save_file

    path = Path(path)
    max_bytes = MAX_FILE_BYTES if max_bytes is None else max_bytes
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        if half and v.is_floating_point():
            v = v.half()
        tensors[k] = v.contiguous().clone()  # clone: safetensors refuses tensors sharing storage
    old = _shard_names(path)
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    if size <= max_bytes:
        with atomic_target(path) as tmp:
            save_file(tensors, tmp)
    else:
        groups, current, used = [], {}, 0
        for k, t in tensors.items():
            nbytes = t.numel() * t.element_size()
            if current and used + nbytes > max_bytes:
                groups.append(current)
                current, used = {}, 0
            current[k], used = t, used + nbytes
        groups.append(current)
        tag = os.urandom(4).hex()
        names = [f"{path.stem}.{tag}-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
        for name, group in zip(names, groups):
            with atomic_target(path.parent / name) as tmp:
                save_file(group, tmp)
        with atomic_target(path) as tmp:  # the index: the commit
            save_file({}, tmp, metadata={_SHARDS: json.dumps(names)})
        old = [n for n in old if n not in names]
    for name in old:  # shards of the previous version, no longer referenced
        (path.parent / name).unlink(missing_ok=True)
    return digests(path)


def _shard_names(path: Path) -> list[str]:
    """The shards an existing index at ``path`` names (none for a single file or no file)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return []
    try:
        names = json.loads(meta.get(_SHARDS, "[]"))
    except json.JSONDecodeError:
        return []
    return [n for n in names if isinstance(n, str) and "/" not in n and "\\" not in n and not n.startswith(".")]


def load_weights(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path} is missing")
    try:
        tensors = load_file(str(path))
        for name in _shard_names(path):
            if not (path.parent / name).is_file():
                raise RunError(f"{path} names the shard {name}, which is missing")
            tensors.update(load_file(str(path.parent / name)))
        return tensors
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(f"{path} is not a safetensors weight file ({e}); refusing to load it") from e


def _flatten(obj, tensors: dict):
    """A JSON skeleton of ``obj`` with its tensors moved into ``tensors`` (dict keys keep their type)."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_flatten(k, tensors), _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__" if isinstance(obj, list) else "__tuple__": [_flatten(v, tensors) for v in obj]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint state")


def _unflatten(obj, tensors: dict):
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [_unflatten(v, tensors) for v in obj["__list__"]]
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
    if isinstance(obj, (dict, list)):
        raise ValueError("unexpected structure in a checkpoint state")
    return obj


def save_state(stem: Path, state: dict) -> dict:
    """Optimizer/scheduler/RNG state as ``stem.safetensors`` (tensors, sharded if large) and
    ``stem.json`` (the structure around them and the tensors' checksums; written last, so it is the
    commit). Returns the sha256 of every file written."""
    stem = Path(stem)
    tensors: dict = {}
    skeleton = _flatten(state, tensors)
    sums = save_weights(stem.with_name(stem.name + ".safetensors"), tensors)
    js = stem.with_name(stem.name + ".json")
    write_json(js, {"format": "grammar-rae-state/1", "state": skeleton, "sha256": sums})
    return {**sums, js.name: file_sha256(js)}


def load_state(stem: Path) -> dict:
    stem = Path(stem)
    meta = read_json(stem.with_name(stem.name + ".json"))
    if meta.get("format") != "grammar-rae-state/1":
        raise RunError(f"{stem}.json is not a grammar-rae training state")
    verify_files(stem.parent, meta.get("sha256"))
    tensors = load_weights(stem.with_name(stem.name + ".safetensors"))
    try:
        return _unflatten(meta["state"], tensors)
    except (KeyError, ValueError, TypeError) as e:
        raise RunError(f"{stem}.json does not match its tensors ({e}); the checkpoint is damaged") from e


def load_legacy_state(path: Path) -> dict:
    """``last.state.pt`` of runs written before the JSON state: plain tensors and numbers only."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise RunError(f"{path} holds something other than plain tensors and numbers; refusing to "
                       f"unpickle it ({str(e).splitlines()[0]})") from e


def load_model_state(model: torch.nn.Module, path: Path, sha256: dict | None = None) -> None:
    """Weights into ``model``, after checking them against the checksums recorded with them."""
    verify_files(Path(path).parent, sha256)
    weights = load_weights(path)
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if missing or extra:
        raise RunError(f"{path} does not fit this model (missing {missing[:3]}, unexpected {extra[:3]})")
    for k, v in weights.items():
        if v.shape != own[k].shape:
            raise RunError(f"{path}: tensor {k} has shape {tuple(v.shape)}, the model wants {tuple(own[k].shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})


# ---------------------------------------------------------------------------------------- checkpoint folders
# (run directories as a whole: rundir.py)
def checkpoint_weights(ckpt: Path, which: str) -> tuple[Path, dict]:
    """(weights file, commit JSON) of checkpoint ``which`` ("last" or "best") in a checkpoints folder:
    the file the JSON names (versioned), or ``WHICH.safetensors`` for runs written before that."""
    meta = read_json(Path(ckpt) / f"{which}.json")
    name = meta.get("weights", f"{which}.safetensors")
    if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
        raise RunError(f"{ckpt}/{which}.json names {name!r}, which is not a file of its folder")
    return Path(ckpt) / name, meta


def prune_checkpoints(ckpt: Path) -> list[str]:
    """Remove checkpoint files that neither ``last.json`` nor ``best.json`` names (an older version, or
    a newer one a kill left uncommitted); returns the names removed. A JSON without checksums (runs
    from before them) keeps its fixed-name files."""
    ckpt = Path(ckpt)
    keep = {"last.json", "best.json"}
    for which in ("last", "best"):
        if not (ckpt / f"{which}.json").is_file():
            continue
        meta = read_json(ckpt / f"{which}.json")
        if meta.get("sha256"):
            keep |= set(meta["sha256"])
        else:
            keep |= {f"{which}.safetensors", f"{which}.state.json", f"{which}.state.safetensors",
                     f"{which}.state.pt", *_shard_names(ckpt / f"{which}.safetensors")}
    removed = []
    for p in ckpt.iterdir() if ckpt.is_dir() else ():
        if p.is_file() and p.name.split(".")[0].split("-")[0] in ("last", "best") and p.name not in keep:
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed
