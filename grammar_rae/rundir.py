"""A run directory as one object, for grammar and image runs alike.

Layout (every file written atomically; checkpoint.py has the commit protocol):

  run.json        format tag, kind ("grammar" / "image"), model and training configs, data provenance
  grammar.cfg     grammar runs: the grammar trained with (its sha256 is in run.json)
  split.npz       grammar runs: train/val/test row indices (sha256 in run.json)
  checkpoints/    last.json and best.json, each naming its versioned, checksummed files
  density/        the ex-post densities fitted on the training codes (KIND.json + KIND.safetensors)
  loss.png        the training curves (plots.py)

``RunDir.open(name_or_dir)`` resolves a shipped NAME or a directory and reads run.json once; every
file it hands out afterwards is checked against the checksum its commit recorded, once.

Example::

    from grammar_rae.rundir import RunDir
    run = RunDir.open("expr-grae")
    run.kind, run.densities, run.history[-1]["val_rec"]
    run.density("gmm").sample(5, seed=0)
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .checkpoint import RUN_FORMAT, checkpoint_weights, load_model_state, read_json, verify_files, write_json
from .errors import RunError
from .pretrained import is_shipped, resolve_run

KINDS = ("grammar", "image")


class RunDir:
    """A run directory and its run.json (``meta``)."""

    def __init__(self, path: str | Path, meta: dict):
        self.path, self.meta = Path(path), meta
        self._densities: dict = {}

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, run, kind: str | None = None) -> "RunDir":
        """The run of a directory or shipped pretrained NAME, refusing anything foreign (and a run of
        another ``kind`` than the one asked for)."""
        if isinstance(run, RunDir):
            run._check_kind(kind)
            return run
        path = resolve_run(run)
        meta = read_json(path / "run.json")
        if meta.get("format") != RUN_FORMAT:
            raise RunError(f"{path}/run.json is not a grammar-rae run (format {meta.get('format')!r})")
        out = cls(path, meta)
        out._check_kind(kind)
        return out

    @classmethod
    def start(cls, out: str | Path, resume: bool) -> "RunDir | None":
        """The run already in ``out`` when resuming it (None when there is none yet); refuses to train
        into a folder that already holds a run unless ``resume``."""
        out = Path(out)
        exists = (out / "run.json").is_file()
        if exists and not resume:
            raise RunError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        return cls.open(out) if exists else None

    def _check_kind(self, kind: str | None) -> None:
        if kind is not None and self.kind != kind:
            raise RunError(f"{self.path} is an {self.kind} run, not a {kind} run")

    # ------------------------------------------------------------------ what it is
    @property
    def kind(self) -> str:
        return self.meta.get("kind", "grammar")

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def shipped(self) -> bool:
        """A pretrained run shipped inside the package (read-only: evaluations go elsewhere)."""
        return is_shipped(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}, {self.kind})"

    def write_meta(self, meta: dict) -> None:
        write_json(self.path / "run.json", meta)
        self.meta = meta

    # ------------------------------------------------------------------ grammar runs' own files
    def grammar(self):
        """The grammar the run was trained with (grammar.cfg, checked against run.json's sha256)."""
        from .grammar import GrammarError
        from .grammar.compact import grammar_from_text

        self._check_kind("grammar")
        try:
            text = (self.path / "grammar.cfg").read_text(encoding="utf-8")
            if hashlib.sha256(text.encode()).hexdigest() != self.meta["grammar_sha256"]:
                raise RunError(f"{self.path}/grammar.cfg differs from the grammar this run was trained with")
            return grammar_from_text(text, name=self.meta["grammar"], path=str(self.path / "grammar.cfg"))
        except RunError:
            raise
        except (OSError, UnicodeDecodeError, KeyError, TypeError, ValueError, GrammarError) as e:
            raise RunError(f"{self.path}: run description is incomplete or invalid ({e})") from e

    def split(self):
        """(train, val, test) row indices of the prepared data set, checked against run.json's sha256."""
        if "split_sha256" in self.meta:
            verify_files(self.path, {"split.npz": self.meta["split_sha256"]})
        try:
            with np.load(self.path / "split.npz", allow_pickle=False) as f:
                return f["train"], f["val"], f["test"]
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise RunError(f"{self.path}/split.npz is not a readable split ({e})") from e

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint(self, which: str = "best") -> tuple[str, Path, dict]:
        """(name, weights file, commit JSON) of checkpoint ``which`` ("best" or "last"; ``last`` when the
        run has no such checkpoint yet)."""
        name = which
        if not (self.checkpoints / f"{which}.json").is_file() or not checkpoint_weights(self.checkpoints, which)[0].is_file():
            name = "last"
        path, meta = checkpoint_weights(self.checkpoints, name)
        return name, path, meta

    def load_weights(self, model, which: str = "best") -> str:
        """Load checkpoint ``which`` into ``model``, checked against its commit's checksums; returns the
        name loaded (``best``, or ``last``)."""
        name, path, meta = self.checkpoint(which)
        load_model_state(model, path, meta.get("sha256"))
        return name

    @property
    def history(self) -> list[dict]:
        """The trainer's per-epoch rows (loss terms, validation, learning rate, seconds)."""
        return read_json(self.checkpoints / "last.json").get("history", [])

    # ------------------------------------------------------------------ densities
    @property
    def densities(self) -> list[str]:
        """The densities :meth:`density` can give: ``prior`` and those fitted in density/."""
        return ["prior", *sorted(p.stem for p in (self.path / "density").glob("*.json"))]

    def density(self, kind: str = "gmm", dim: int | None = None):
        """The ex-post density ``kind`` (read once, checksums verified, then kept); ``prior`` is N(0, I)
        of dimension ``dim`` (default: the model's latent dimension)."""
        from .density import DensityError, ExPostDensity, make_density

        if kind == "prior":
            return make_density("prior").fit(None, dim=dim or self.meta["model"]["latent_dim"])
        if kind not in self._densities:
            try:
                self._densities[kind] = ExPostDensity.load(self.path / "density" / kind)
            except DensityError as e:
                raise RunError(f"{self.path}: no usable {kind} density ({e}); train the run to the end first") from e
        return self._densities[kind]

    def save_density(self, kind: str, density) -> None:
        density.save(self.path / "density" / kind)
        self._densities[kind] = density

    def verify(self) -> list[str]:
        """Check every committed file (split, weights and state of both checkpoints, densities) against
        the checksum its commit recorded; returns the files checked. A RunError names the first bad one."""
        checked = []
        if "split_sha256" in self.meta:
            verify_files(self.path, {"split.npz": self.meta["split_sha256"]})
            checked.append("split.npz")
        for which in ("last", "best"):
            if (self.checkpoints / f"{which}.json").is_file():
                sums = read_json(self.checkpoints / f"{which}.json").get("sha256") or {}
                verify_files(self.checkpoints, sums, f" ({which} checkpoint)")
                checked += [f"checkpoints/{n}" for n in sums]
        for p in sorted((self.path / "density").glob("*.json")):
            sums = read_json(p).get("sha256") or {}
            verify_files(p.parent, sums, f" ({p.stem} density)")
            checked += [f"density/{n}" for n in sums]
        return checked
