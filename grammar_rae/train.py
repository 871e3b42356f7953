"""One trainer for every model: Adam, ReduceLROnPlateau, early stopping, best-validation checkpoint,
seeds, CPU or CUDA (bf16 autocast), a progress bar with the loss terms, a checkpoint every epoch
(atomic), resume after a kill, and a clean stop on a NaN loss that keeps the last good checkpoint.

The data are rule-index tensors (uint8) resident on the training device; a batch is an index
slice turned into one-hots inside the model, so no host DataLoader sits in the step loop.
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
    amp: bool = True                # bf16 autocast on CUDA
    grad_clip: float = 0.0          # 0: off
    max_minutes: float = 0.0        # wall-clock budget of one invocation (0: none); --resume continues


class TrainingDiverged(RuntimeError):
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
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self._amp_on())
        self.generator = torch.Generator().manual_seed(config.seed)
        self.epoch, self.best_val, self.bad_epochs, self.history = 0, math.inf, 0, []
        self.early_stopped = False
        self.ckpt = self.run_dir / "checkpoints"

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """Weights first, then state, then the JSON that names the epoch: the JSON is the commit."""
        if self.rank != 0:
            return
        save_weights(self.ckpt / "last.safetensors", self.model.state_dict())
        save_state(self.ckpt / "last.state", {
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "scaler": self.scaler.state_dict()})
        write_json(self.ckpt / "last.json", {"epoch": self.epoch, "best_val": self.best_val,
                                             "bad_epochs": self.bad_epochs, "history": self.history,
                                             "early_stopped": self.early_stopped,
                                             "train_config": asdict(self.config)})

    def resume(self) -> bool:
        """Continue from ``checkpoints/last``; False if the run has no checkpoint yet."""
        if not (self.ckpt / "last.json").is_file():
            return False
        meta = read_json(self.ckpt / "last.json")
        load_model_state(self.model, self.ckpt / "last.safetensors")
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
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise RunError(f"{self.ckpt}: checkpoint state is incomplete or foreign ({e})") from e
        self.log(f"resumed {self.run_dir} after epoch {self.epoch} (best validation {self.best_val:.4f})")
        return True

    # ------------------------------------------------------------------ loops
    def _amp_on(self) -> bool:
        return self.config.amp and self.device.type == "cuda"

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._amp_on())

    def train_epoch(self) -> dict:
        from tqdm.auto import tqdm

        self.model.train()
        n, bs = len(self.train_data), self.config.batch_size
        # every rank takes the same number of rows, or DDP's collective calls would wait forever
        order = torch.randperm(n, generator=self.generator)[: n // self.world * self.world]
        order = order[self.rank::self.world].to(self.device)
        n = len(order)
        sums: dict[str, torch.Tensor] = {}
        steps = math.ceil(n / bs)
        bar = tqdm(range(steps), desc=f"epoch {self.epoch + 1}/{self.config.epochs}", leave=False,
                   disable=not self.progress, unit="batch")
        for i in bar:
            batch = self.train_data[order[i * bs:(i + 1) * bs]]
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
        for i in range(0, n, self.config.batch_size):
            batch = self.val_data[i:i + self.config.batch_size]
            with self._autocast():
                rec = self.model.reconstruction_loss(batch)
            total += rec.float().sum().item()
        return total / max(n, 1)

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
            row = {"epoch": self.epoch, **{f"train_{k}": v for k, v in train.items()}, "val_rec": val,
                   "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(time.time() - t0, 2)}
            self.history.append(row)
            if improved and self.rank == 0:
                save_weights(self.ckpt / "best.safetensors", self.model.state_dict())
                write_json(self.ckpt / "best.json", {"epoch": self.epoch, "val_rec": val})
            self.save()
            self.log(f"epoch {self.epoch}: train loss {train['loss']:.4f} (rec {train['rec']:.4f}), "
                     f"val rec {val:.4f}{' *' if improved else ''}, lr {row['lr']:.2g}, {row['seconds']:.1f}s")
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
