"""One trainer for every model: Adam, ReduceLROnPlateau, early stopping, best-validation checkpoint,
seeds, CPU or CUDA (bf16 autocast), a progress bar with the loss terms, a checkpoint every epoch
(atomic), resume after a kill, and a clean stop on a NaN loss that keeps the last good checkpoint.

The data are rule-index tensors (uint8) resident on the training device; a batch is an index
slice turned into one-hots or embeddings inside the model, so no host DataLoader sits in the step
loop. For models whose loss ignores positions past the end of a sequence (``model.cuts_padding``),
batches are length-bucketed -- rows are shuffled, sorted by length within chunks of
``bucket_batches`` batches, cut into batches whose order is shuffled again -- and each batch is cut
to its longest sequence: the padding costs nothing and is not computed.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from .checkpoint import (RunError, load_legacy_state, load_model_state, load_state, read_json, save_state,
                         save_weights, write_json)
from .errors import UserError


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 600
    lr: float = 1e-3
    lr_factor: float = 0.2          # ReduceLROnPlateau, as the GrammarVAE
    lr_patience: int = 1
    min_lr: float = 1e-4
    early_stop_patience: int = 10   # epochs without a better validation loss
    seed: int = 0
    device: str = "auto"            # "auto": CUDA when present, else CPU
    amp: bool = True                # bf16 autocast on CUDA, and on CPUs with native bf16 (AVX512-BF16/AMX)
    grad_clip: float = 5.0          # global gradient-norm clip (0: off); guards against loss spikes
    max_minutes: float = 0.0        # wall-clock budget of one invocation (0: none); --resume continues
    warmup_steps: int = 0           # linear learning-rate warm-up over the first steps
    bucket_batches: int = 50        # length bucketing: batches per sorted chunk (models that cut padding)
    recon_rows: int = 500           # validation rows whose exact reconstruction is logged every epoch (0: off)
    threads: int = 0                # CPU threads for PyTorch (0: leave PyTorch's default)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (measured here: 1.55x faster training of the
    teacher-forced ZINC model, the same loss per epoch); elsewhere bf16 would be emulated, and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


class TrainingDiverged(RuntimeError, UserError):
    pass


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(device)


def distributed() -> tuple[int, int]:
    """(rank, world size). Under `torchrun` the process group is started here (NCCL on GPUs,
    gloo on CPUs); a plain run is rank 0 of 1."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


class Trainer:
    """Trains ``model`` (anything with ``loss(batch) -> (total, terms)``) on index tensors."""

    def __init__(self, model: torch.nn.Module, train_data: torch.Tensor, val_data: torch.Tensor,
                 config: TrainConfig, run_dir: str | Path, progress: bool = True,
                 log: Callable[[str], None] = print):
        self.model, self.config, self.run_dir = model, config, Path(run_dir)
        self.device = resolve_device(config.device)
        self.model.to(self.device)
        # Multi-GPU: torchrun + DistributedDataParallel; each rank takes every world-th batch row and
        # only rank 0 writes checkpoints and logs.
        self.rank, self.world = distributed()
        self.step_model = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_model = DistributedDataParallel(self.model, device_ids=ids)
        self.train_data = train_data.to(self.device)
        self.val_data = val_data.to(self.device)
        if config.threads and self.device.type == "cpu":
            torch.set_num_threads(config.threads)
        # lengths live on the host: batches are planned there, with no device sync per step
        self.bucketed = bool(getattr(model, "cuts_padding", False))
        self.train_lengths = model.sequence_lengths(train_data).cpu() if self.bucketed else None
        self.val_lengths = model.sequence_lengths(val_data).cpu() if self.bucketed else None
        self.progress = progress and self.rank == 0
        self.log = log if self.rank == 0 else (lambda message: None)
        # fused Adam on CUDA: one kernel for all parameters, and it takes the loss scaler's inf check
        # on the device (no host sync per step)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=self.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_lr)
        # Loss scaling under autocast: PyTorch's autocast runs cuDNN's GRU in fp16 even when asked for
        # bf16 (seen with torch 2.11 + cuDNN 9.19 on an H100), and fp16 gradients underflow without it.
        # A no-op on CPU and with --no-amp.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self._loss_scaling())
        self.generator = torch.Generator().manual_seed(config.seed)
        self.epoch, self.best_val, self.bad_epochs, self.history = 0, math.inf, 0, []
        self.global_step, self.elapsed = 0, 0.0
        self.early_stopped = False
        self.ckpt = self.run_dir / "checkpoints"

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """Weights first, then state, then the JSON that names the epoch: the JSON is the commit."""
        if self.rank != 0:
            return
        sums = save_weights(self.ckpt / "last.safetensors", self.model.state_dict())
        sums |= save_state(self.ckpt / "last.state", {
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "scaler": self.scaler.state_dict()})
        write_json(self.ckpt / "last.json", {"epoch": self.epoch, "best_val": self.best_val,
                                             "bad_epochs": self.bad_epochs, "history": self.history,
                                             "global_step": self.global_step, "elapsed": self.elapsed,
                                             "sha256": sums,
                                             "early_stopped": self.early_stopped,
                                             "train_config": asdict(self.config)})

    def resume(self) -> bool:
        """Continue from ``checkpoints/last``; False if the run has no checkpoint yet."""
        from .io import remove_stale_temporaries

        remove_stale_temporaries(self.ckpt)  # what a kill during a checkpoint write left behind
        if not (self.ckpt / "last.json").is_file():
            return False
        meta = read_json(self.ckpt / "last.json")
        load_model_state(self.model, self.ckpt / "last.safetensors", meta.get("sha256"))
        legacy = self.ckpt / "last.state.pt"
        state = load_state(self.ckpt / "last.state") if (self.ckpt / "last.state.json").is_file() \
            else load_legacy_state(legacy)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            if state.get("scaler") and self.scaler.is_enabled():
                self.scaler.load_state_dict(state["scaler"])
            self.epoch, self.best_val = int(meta["epoch"]), float(meta["best_val"])
            self.bad_epochs, self.history = int(meta["bad_epochs"]), list(meta["history"])
            self.early_stopped = bool(meta.get("early_stopped", False))
            self.global_step = int(meta.get("global_step", 0))
            self.elapsed = float(meta.get("elapsed", sum(h.get("seconds", 0.0) for h in self.history)))
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise RunError(f"{self.ckpt}: checkpoint state is incomplete or foreign ({e})") from e
        self.log(f"resumed {self.run_dir} after epoch {self.epoch} (best validation {self.best_val:.4f})")
        return True

    # ------------------------------------------------------------------ loops
    def _amp_on(self) -> bool:
        if not self.config.amp:
            return False
        return self.device.type == "cuda" or (self.device.type == "cpu" and cpu_has_bf16())

    def _loss_scaling(self) -> bool:
        """fp16 gradients need loss scaling: CUDA's autocast GRU (see __init__); bf16 on a CPU does not."""
        return self._amp_on() and self.device.type == "cuda"

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._amp_on())

    def plan_batches(self) -> list[tuple[torch.Tensor, int]]:
        """This epoch's batches for this rank: (row indices, length to cut to; 0 = no cut)."""
        n, bs = len(self.train_data), self.config.batch_size
        order = torch.randperm(n, generator=self.generator)
        if self.bucketed:
            chunk = bs * max(1, self.config.bucket_batches)
            batches = []
            for i in range(0, n, chunk):
                rows = order[i:i + chunk]
                rows = rows[torch.argsort(self.train_lengths[rows], stable=True)]
                batches += list(rows.split(bs))
            batches = [batches[j] for j in torch.randperm(len(batches), generator=self.generator)]
        else:
            batches = list(order.split(bs))
        # every rank takes the same number of batches, or DDP's collective calls would wait forever
        batches = batches[: len(batches) // self.world * self.world][self.rank::self.world]
        return [(b, int(self.train_lengths[b].max()) if self.bucketed else 0) for b in batches]

    def _set_warmup_lr(self) -> None:
        w = self.config.warmup_steps
        if w and self.global_step < w:
            for group in self.optimizer.param_groups:
                group["lr"] = self.config.lr * (self.global_step + 1) / w

    def train_epoch(self) -> dict:
        from tqdm import tqdm  # text bars (tqdm.auto wants ipywidgets in notebooks)

        self.model.train()
        plan = self.plan_batches()
        sums: dict[str, torch.Tensor] = {}
        steps = len(plan)
        bar = tqdm(range(steps), desc=f"epoch {self.epoch + 1}/{self.config.epochs}", leave=False,
                   disable=not self.progress, unit="batch")
        for i in bar:
            rows, length = plan[i]
            batch = self.train_data[rows.to(self.device)]
            if length:
                batch = batch[:, :length]
            self._set_warmup_lr()
            self.global_step += 1
            with self._autocast():
                total, terms = self.step_model(batch)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            if self.config.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.scaler.step(self.optimizer)  # skips a step whose fp16 gradients overflowed
            self.scaler.update()
            for k, v in {"loss": total, **terms}.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
            if i % 20 == 19 or i == steps - 1:  # one host sync every 20 steps
                if self.world > 1:  # every rank must see the same verdict on a NaN
                    import torch.distributed as dist

                    agreed = sums["loss"].clone()
                    dist.all_reduce(agreed)
                    sums["loss"] = agreed / self.world
                means = {k: (v / (i + 1)).item() for k, v in sums.items()}
                if not math.isfinite(means["loss"]):
                    raise TrainingDiverged(
                        f"the loss became {means['loss']} in epoch {self.epoch + 1} (batch {i + 1}); "
                        f"stopped. The last good checkpoint (epoch {self.epoch}) is kept in {self.ckpt}. "
                        "Try a lower --lr or a smaller regulariser weight.")
                bar.set_postfix({k: f"{v:.3g}" for k, v in means.items()})
        return {k: (v / steps).item() for k, v in sums.items()}

    @torch.no_grad()
    def validate(self) -> float:
        """Mean reconstruction loss on the validation set (the model-selection criterion)."""
        self.model.eval()
        total, n = 0.0, len(self.val_data)
        order = torch.argsort(self.val_lengths, stable=True) if self.bucketed else torch.arange(n)
        for rows in order.split(self.config.batch_size):
            batch = self.val_data[rows.to(self.device)]
            if self.bucketed:
                batch = batch[:, :int(self.val_lengths[rows].max())]
            with self._autocast():
                rec = self.model.reconstruction_loss(batch)
            total += rec.float().sum().item()
        return total / max(n, 1)

    @torch.no_grad()
    def reconstruction_rate(self) -> float | None:
        """Exact argmax reconstruction of the first ``recon_rows`` validation rows (models that decode)."""
        k = min(self.config.recon_rows, len(self.val_data))
        if not k or not hasattr(self.model, "exact_reconstructions"):
            return None
        self.model.eval()
        hits = 0
        for i in range(0, k, 500):
            batch = self.val_data[i:min(k, i + 500)]
            with self._autocast():
                hits += int(self.model.exact_reconstructions(batch).sum())
        return hits / k

    def fit(self, resume: bool = False) -> list[dict]:
        if resume:
            self.resume()
        elif (self.ckpt / "last.json").is_file():
            raise RunError(f"{self.run_dir} already holds a training run; pass --resume to continue it "
                           "or choose another --out")
        if self.epoch == 0:  # a resumed run continues the RNG stream restored from its checkpoint
            torch.manual_seed(self.config.seed)
        self.out_of_time, started, longest = False, time.time(), 0.0
        while self.epoch < self.config.epochs and not self.early_stopped:
            if self._no_time_for_epoch(started, longest):
                break
            t0 = time.time()
            train = self.train_epoch()
            val = self.validate()
            recon = self.reconstruction_rate()
            if not math.isfinite(val):
                raise TrainingDiverged(f"validation loss is {val} after epoch {self.epoch + 1}; stopped, "
                                       f"the last good checkpoint (epoch {self.epoch}) is kept")
            self.scheduler.step(val)
            self.epoch += 1
            improved = val < self.best_val
            if improved:
                self.best_val, self.bad_epochs = val, 0
            else:
                self.bad_epochs += 1
            self.early_stopped = self.bad_epochs >= self.config.early_stop_patience
            seconds = time.time() - t0
            self.elapsed += seconds
            row = {"epoch": self.epoch, **{f"train_{k}": v for k, v in train.items()}, "val_rec": val,
                   **({"val_recon": recon} if recon is not None else {}), "step": self.global_step,
                   "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 2),
                   "elapsed": round(self.elapsed, 2)}
            self.history.append(row)
            if improved and self.rank == 0:
                sums = save_weights(self.ckpt / "best.safetensors", self.model.state_dict())
                write_json(self.ckpt / "best.json", {"epoch": self.epoch, "val_rec": val, "sha256": sums})
            self.save()
            self.log(f"epoch {self.epoch}: train loss {train['loss']:.4f} (rec {train['rec']:.4f}), "
                     f"val rec {val:.4f}{' *' if improved else ''}"
                     + (f", val reconstruction {recon:.1%}" if recon is not None else "")
                     + f", lr {row['lr']:.2g}, {row['seconds']:.1f}s")
            if self.early_stopped:
                self.log(f"early stop: no better validation loss in {self.bad_epochs} epochs")
            longest = max(longest, time.time() - t0)  # checkpoint writing included
        return self.history

    def _no_time_for_epoch(self, started: float, longest: float) -> bool:
        """True when --max-minutes leaves no room for another epoch as long as the longest so far
        (a lent GPU's command limit, a laptop's evening): stop cleanly, with the checkpoint of the
        last epoch written, so that `--resume` goes on from there."""
        budget = self.config.max_minutes * 60
        if not budget or not longest:
            return False
        left = budget - (time.time() - started)
        stop = left < longest
        if self.world > 1:  # every rank must make the same call, or the others wait forever
            import torch.distributed as dist

            flag = torch.tensor(float(stop), device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        if not stop:
            return False
        self.out_of_time = True
        self.log(f"time budget of {self.config.max_minutes:g} min reached after epoch {self.epoch} "
                 f"({left:.0f} s left, an epoch takes {longest:.0f} s); continue with --resume")
        return True


def load_history(run_dir: str | Path) -> list[dict]:
    return read_json(Path(run_dir) / "checkpoints" / "last.json").get("history", [])
