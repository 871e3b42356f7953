"""One trainer for every model: Adam, a learning-rate schedule of the global step (ReduceLROnPlateau,
cosine or warmup-stable-decay, with warm-up), early stopping, best-validation checkpoint, seeds, CPU or
CUDA (bf16 autocast), a progress bar with the loss terms, a checkpoint every epoch and, optionally,
every few minutes inside one (each committed atomically as a whole), resume after a kill at any moment,
and a clean stop on a NaN loss that keeps the last good checkpoint.

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

from .checkpoint import (RunError, checkpoint_weights, load_legacy_state, load_model_state, load_state,
                         prune_checkpoints, read_json, save_state, save_weights, write_json)
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
    schedule: str = "plateau"       # plateau (ReduceLROnPlateau per epoch) | cosine | wsd: see lr_multiplier
    decay_fraction: float = 0.2     # wsd: the last fraction of the planned steps decays to min_lr
    schedule_steps: int = 0         # updates the cosine/wsd schedule plans, and where training ends
                                    # (0: epochs x steps per epoch)
    checkpoint_minutes: float = 0.0  # also checkpoint inside an epoch every this many minutes (0: per epoch)
    bucket_batches: int = 50        # length bucketing: batches per sorted chunk (models that cut padding)
    recon_rows: int = 500           # validation rows whose exact reconstruction is logged every epoch (0: off)
    threads: int = 0                # CPU threads for PyTorch (0: leave PyTorch's default)
    randomized_inputs: int = 0      # grammar models: randomized SMILES spellings per training row that the
                                    # encoder reads in turn with its own (data/augment.py; 0: its own only)


# how (not what) one invocation trains: these come from the caller on every resume
PER_INVOCATION = ("device", "amp", "max_minutes", "threads", "checkpoint_minutes")


def resumed_config(own: dict, caller: TrainConfig, given: dict) -> TrainConfig:
    """The training settings of a resumed run (grammar and image runs alike): its own (run.json), then
    those the caller gave explicitly (``given``: e.g. the CLI's flags), then the caller's per-invocation
    ones (device, threads, time budget)."""
    known = set(TrainConfig.__dataclass_fields__)
    return TrainConfig(**{**{k: v for k, v in own.items() if k in known},
                          **{k: v for k, v in given.items() if k in known},
                          **{k: getattr(caller, k) for k in PER_INVOCATION}})


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


SCHEDULES = ("plateau", "cosine", "wsd")


def lr_multiplier(config: TrainConfig, step: int, total: int) -> float:
    """The learning rate of update ``step`` (0-based) of a run planned for ``total`` updates, as a
    multiple of its base rate: a function of the global step alone, so a resumed run continues it exactly.

    - warm-up (every schedule): linear, (step + 1) / warmup_steps over the first ``warmup_steps``;
    - ``plateau``: 1 (the base is ``config.lr`` as ReduceLROnPlateau has lowered it so far);
    - ``cosine``: from 1 down to min_lr / lr over the steps after the warm-up (Loshchilov & Hutter 2017,
      without restarts): f(t) = m + (1 - m) * (1 + cos(pi t)) / 2, t the fraction of those steps done;
    - ``wsd``: warm-up, stable at 1, then the same cosine-shaped fall to min_lr / lr over the last
      ``decay_fraction`` of the steps (warmup-stable-decay; Hu et al. 2024, MiniCPM). Cut before the decay,
      the run is a trunk that can go on; any decayed branch of it is a finished model.
    """
    w = config.warmup_steps
    ramp = min(1.0, (step + 1) / w) if w else 1.0
    if config.schedule == "plateau":
        return ramp
    floor = min(1.0, config.min_lr / config.lr) if config.lr > 0 else 1.0
    if config.schedule == "cosine":
        start = w
    elif config.schedule == "wsd":
        start = max(w, total - int(round(config.decay_fraction * total)))
    else:
        raise ValueError(f"unknown learning-rate schedule {config.schedule!r} (one of {', '.join(SCHEDULES)})")
    t = min(1.0, max(0.0, (step - start) / max(1, total - start)))
    return ramp * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t)))


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
                 log: Callable[[str], None] = print, train_inputs: torch.Tensor | None = None):
        """``train_inputs`` [N, K, T]: K encoder inputs per training row (e.g. randomized spellings), one
        drawn per row and batch (seeded by the update count: a resumed run draws the same); the model's
        ``loss(targets, inputs)`` reads them."""
        self.model, self.config, self.run_dir = model, config, Path(run_dir)
        if config.schedule not in SCHEDULES:
            raise UserError(f"unknown learning-rate schedule {config.schedule!r} (one of {', '.join(SCHEDULES)})")
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
        self.train_inputs = train_inputs.to(self.device) if train_inputs is not None else None
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
        self.partial: dict | None = None   # where a checkpoint inside an epoch left off (resume)
        self.stop_requested: str | None = None  # SIGTERM / SIGINT received: checkpoint and stop at the next sync
        self.handles_signals = False  # set by fit() when it installs its SIGTERM / SIGINT handler
        self.stopped_inside = False             # the last stop fell inside an epoch
        self.total_steps = config.schedule_steps or config.epochs * self.steps_per_epoch()
        for group in self.optimizer.param_groups:
            group["base_lr"] = config.lr   # the rate the schedule multiplies (plateau lowers it)

    # ------------------------------------------------------------------ checkpoints
    def save(self, partial: dict | None = None, elapsed: float | None = None) -> None:
        """Commit this state as a new version of ``checkpoints/last`` (see checkpoint.py): its files go
        under fresh names, then ``last.json`` naming them and their sha256 replaces the old one in one
        rename, then the files no commit names are removed. ``partial``: where inside an epoch this is."""
        if self.rank != 0:
            return
        tag = f"{self.global_step:09d}-{os.urandom(3).hex()}"
        weights, state = f"last-{tag}.safetensors", f"last-{tag}.state"
        sums = save_weights(self.ckpt / weights, self.model.state_dict())
        sums |= save_state(self.ckpt / state, {
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
            **({"cuda_rng": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {}),
            "scaler": self.scaler.state_dict(),
            **({"epoch_generator": partial.pop("generator")} if partial else {})})
        write_json(self.ckpt / "last.json", {"epoch": self.epoch, "best_val": self.best_val,
                                             "bad_epochs": self.bad_epochs, "history": self.history,
                                             "global_step": self.global_step,
                                             "elapsed": self.elapsed if elapsed is None else elapsed,
                                             "weights": weights, "state": state, "sha256": sums,
                                             "partial": partial,
                                             "early_stopped": self.early_stopped,
                                             "train_config": asdict(self.config)})
        prune_checkpoints(self.ckpt)
        self.last_save = time.time()

    def save_best(self, val: float) -> None:
        """The same commit for ``checkpoints/best``: ``best-TAG.safetensors``, then ``best.json``."""
        if self.rank != 0:
            return
        weights = f"best-{self.global_step:09d}-{os.urandom(3).hex()}.safetensors"
        sums = save_weights(self.ckpt / weights, self.model.state_dict())
        write_json(self.ckpt / "best.json", {"epoch": self.epoch, "val_rec": val, "step": self.global_step,
                                             "weights": weights, "sha256": sums})
        prune_checkpoints(self.ckpt)

    def resume(self) -> bool:
        """Continue from ``checkpoints/last``; False if the run has no checkpoint yet."""
        from .io import remove_stale_temporaries

        remove_stale_temporaries(self.ckpt)  # what a kill during a checkpoint write left behind
        if not (self.ckpt / "last.json").is_file():
            return False
        prune_checkpoints(self.ckpt)         # files of a version a kill left uncommitted
        weights, meta = checkpoint_weights(self.ckpt, "last")
        load_model_state(self.model, weights, meta.get("sha256"))
        stem = self.ckpt / meta.get("state", "last.state")
        state = load_state(stem) if stem.with_name(stem.name + ".json").is_file() \
            else load_legacy_state(self.ckpt / "last.state.pt")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            for group in self.optimizer.param_groups:  # states from before schedules: the rate they had
                group.setdefault("base_lr", group["lr"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            if state.get("cuda_rng") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda_rng"], self.device)
            if state.get("scaler") and self.scaler.is_enabled():
                self.scaler.load_state_dict(state["scaler"])
            self.epoch, self.best_val = int(meta["epoch"]), float(meta["best_val"])
            self.bad_epochs, self.history = int(meta["bad_epochs"]), list(meta["history"])
            self.early_stopped = bool(meta.get("early_stopped", False))
            self.global_step = int(meta.get("global_step", 0))
            self.elapsed = float(meta.get("elapsed", sum(h.get("seconds", 0.0) for h in self.history)))
            self.partial = meta.get("partial")
            if self.partial:
                self.partial = {**self.partial, "generator": state["epoch_generator"]}
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise RunError(f"{self.ckpt}: checkpoint state is incomplete or foreign ({e})") from e
        where = (f"inside epoch {self.epoch + 1} (batch {self.partial['batch']})" if self.partial
                 else f"after epoch {self.epoch}")
        self.log(f"resumed {self.run_dir} {where}, step {self.global_step} (best validation {self.best_val:.4f})")
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

    def steps_per_epoch(self) -> int:
        """Updates per epoch for this rank (what plan_batches gives, without drawing it)."""
        n, bs = len(self.train_data), self.config.batch_size
        if self.bucketed:
            chunk = bs * max(1, self.config.bucket_batches)
            count = (n // chunk) * math.ceil(chunk / bs) + math.ceil((n % chunk) / bs)
        else:
            count = math.ceil(n / bs)
        return count // self.world

    def _set_lr(self) -> None:
        """The learning rate of this update: lr_multiplier of the global step times the base rate."""
        f = lr_multiplier(self.config, self.global_step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = (group["base_lr"] if self.config.schedule == "plateau" else self.config.lr) * f

    def _plateau_step(self, val: float) -> None:
        """ReduceLROnPlateau lowers the base rate (not the warmed-up one of this step, which a warm-up
        spanning epochs would overwrite)."""
        if self.config.schedule != "plateau":
            return
        groups = self.optimizer.param_groups
        for group in groups:
            group["lr"] = group["base_lr"]
        self.scheduler.step(val)
        for group in groups:
            group["base_lr"] = group["lr"]

    def _stop_or_checkpoint(self) -> tuple[bool, bool]:
        """(out of --max-minutes, a checkpoint inside the epoch is due); every rank gets the same answer."""
        now, cfg = time.time(), self.config
        stop = bool(cfg.checkpoint_minutes and cfg.max_minutes and now - self.started >= cfg.max_minutes * 60)
        stop = stop or self.stop_requested is not None
        due = bool(cfg.checkpoint_minutes and now - self.last_save >= cfg.checkpoint_minutes * 60)
        if self.world > 1:
            import torch.distributed as dist

            flags = torch.tensor([float(stop), float(due)], device=self.device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            stop, due = bool(flags[0].item()), bool(flags[1].item())
        return stop, due

    def train_epoch(self) -> dict | None:
        """One epoch, or the rest of the one a checkpoint left off. Returns the mean loss terms, or None
        when --max-minutes ran out inside it (with checkpoint_minutes set; a checkpoint of where it
        stopped is written, and --resume continues from that batch with the same batch plan)."""
        from tqdm import tqdm  # text bars (tqdm.auto wants ipywidgets in notebooks)

        self.model.train()
        partial, self.partial = self.partial, None
        if partial:  # the generator as it was before this epoch's plan was drawn: the same plan again
            self.generator.set_state(partial["generator"])
        epoch_generator = self.generator.get_state()
        plan = self.plan_batches()
        steps, first = len(plan), int(partial["batch"]) if partial else 0
        sums: dict[str, torch.Tensor] = ({k: torch.tensor(v, device=self.device) for k, v in partial["sums"].items()}
                                         if partial else {})
        self.epoch_offset = float(partial["seconds"]) if partial else 0.0
        t0, done = time.time(), first
        bar = tqdm(range(first, steps), initial=first, total=steps, leave=False, unit="batch",
                   desc=f"epoch {self.epoch + 1}/{self.config.epochs}", disable=not self.progress)
        for i in bar:
            if self.global_step >= self.total_steps:  # the schedule's end (schedule_steps) falls in this epoch
                break
            rows, length = plan[i]
            batch = self.train_data[rows.to(self.device)]
            if length:
                batch = batch[:, :length]
            self._set_lr()
            self.global_step += 1
            inputs = self._inputs(rows) if self.train_inputs is not None else None
            with self._autocast():
                total, terms = self.step_model(batch) if inputs is None else self.step_model(batch, inputs)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            if self.config.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.scaler.step(self.optimizer)  # skips a step whose fp16 gradients overflowed
            self.scaler.update()
            for k, v in {"loss": total, **terms}.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
            done = i + 1
            if i % 20 == 19 or i == steps - 1:  # one host sync every 20 steps
                if self.world > 1:  # every rank must see the same verdict on a NaN
                    import torch.distributed as dist

                    agreed = sums["loss"].clone()
                    dist.all_reduce(agreed)
                    sums["loss"] = agreed / self.world
                means = {k: (v / done).item() for k, v in sums.items()}
                if not math.isfinite(means["loss"]):
                    raise TrainingDiverged(
                        f"the loss became {means['loss']} in epoch {self.epoch + 1} (batch {i + 1}); "
                        f"stopped. The last good checkpoint (step {self.last_good_step()}) is kept in {self.ckpt}. "
                        "Try a lower --lr or a smaller regulariser weight.")
                bar.set_postfix({k: f"{v:.3g}" for k, v in means.items()})
                stop, due = self._stop_or_checkpoint()
                if (stop or due) and i < steps - 1:
                    spent = time.time() - t0  # this segment of the epoch, so far
                    self.save(partial={"batch": done, "sums": {k: float(v) for k, v in sums.items()},
                                       "generator": epoch_generator, "seconds": round(self.epoch_offset + spent, 2)},
                              elapsed=self.elapsed + spent)
                if stop and i < steps - 1:
                    self.out_of_time = self.stopped_inside = True
                    self.elapsed += spent
                    why = (f"stopped by {self.stop_requested}" if self.stop_requested is not None else
                           f"time budget of {self.config.max_minutes:g} min reached")
                    self.log(f"{why} in epoch {self.epoch + 1} (batch {done} of {steps}, step {self.global_step}); "
                             "checkpoint written, continue with --resume")
                    return None
        return {k: (v / max(done, 1)).item() for k, v in sums.items()}

    def _inputs(self, rows: torch.Tensor) -> torch.Tensor:
        """One of each row's encoder inputs, drawn from a generator seeded by the update count (cut to the
        longest, as the targets are, when the model cuts padding)."""
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.global_step)
        pick = torch.randint(self.train_inputs.shape[1], (len(rows),), generator=g)
        inputs = self.train_inputs[rows.to(self.device), pick.to(self.device)]
        if self.bucketed:
            inputs = inputs[:, :max(int(self.model.sequence_lengths(inputs).max()), 1)]
        return inputs

    def best_at_stop(self) -> float:
        """After a stop inside an epoch: validate the weights reached, and commit them as ``best`` when
        they are better than every epoch's (a run cut by --max-minutes ships what it reached, e.g. the end
        of a decayed schedule). Returns the validation loss."""
        val = self.validate()
        if math.isfinite(val) and val < self.best_val:
            self.best_val = val
            self.save_best(val)
            if self.rank == 0:  # the trunk's JSON learns the new best (its files are unchanged)
                meta = read_json(self.ckpt / "last.json")
                write_json(self.ckpt / "last.json", {**meta, "best_val": val})
            self.log(f"validation {val:.4f} at step {self.global_step}: the new best checkpoint")
        else:
            self.log(f"validation {val:.4f} at step {self.global_step} (best stays {self.best_val:.4f})")
        return val

    def last_good_step(self) -> int:
        try:
            return int(read_json(self.ckpt / "last.json").get("global_step", 0))
        except RunError:
            return 0

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
        """Train until the epochs, the schedule's steps, early stopping or --max-minutes end it. SIGTERM
        or Ctrl-C stops it cleanly: a checkpoint of where it was (inside the epoch), then return."""
        import signal
        import threading

        handlers = {}
        if threading.current_thread() is threading.main_thread():
            def request_stop(signum, frame):
                if self.stop_requested is not None:  # a second one: stop now (the last checkpoint stands)
                    raise KeyboardInterrupt
                self.stop_requested = signal.Signals(signum).name
                self.log(f"{self.stop_requested}: stopping at the next checkpoint (a few seconds); again to stop now")

            for sig in (signal.SIGTERM, signal.SIGINT):
                handlers[sig] = signal.signal(sig, request_stop)
        self.handles_signals = bool(handlers)
        finished = False
        try:
            history = self._fit(resume)
            finished = True
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)
            self._leave_process_group(wait=finished)
        return history

    def _leave_process_group(self, wait: bool) -> None:
        """Under torchrun: wait for every rank (after a normal end), then close the group. A process
        that exits with the group open can be aborted (SIGABRT) by gloo's worker threads while Python shuts
        down (pytorch/pytorch#179291), failing the whole torchrun although rank 0 finished."""
        if self.world <= 1:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            if wait:
                dist.barrier()
            dist.destroy_process_group()

    def _fit(self, resume: bool) -> list[dict]:
        if resume:
            self.resume()
        elif (self.ckpt / "last.json").is_file():
            raise RunError(f"{self.run_dir} already holds a training run; pass --resume to continue it "
                           "or choose another --out")
        # a resumed run continues the RNG stream restored from its checkpoint (also one taken inside epoch 1)
        if self.epoch == 0 and not self.partial:
            torch.manual_seed(self.config.seed)
        if self.handles_signals:
            self.log(f"training from update {self.global_step:,} to {self.total_steps:,} at most; SIGTERM or "
                     "Ctrl-C stops it with a checkpoint where it is (`--resume` goes on)")
        self.out_of_time, started, longest = False, time.time(), 0.0
        self.started = self.last_save = started
        while self.epoch < self.config.epochs and not self.early_stopped and self.global_step < self.total_steps:
            if self.stop_requested is not None:
                self.out_of_time = True
                self.log(f"stopped by {self.stop_requested} after epoch {self.epoch}; continue with --resume")
                break
            # without checkpoints inside epochs, stop before an epoch that would not fit the budget
            if not self.config.checkpoint_minutes and self._no_time_for_epoch(started, longest):
                break
            t0 = time.time()
            train = self.train_epoch()
            if train is None:   # --max-minutes ran out inside the epoch; its checkpoint is written
                break
            t0 -= self.epoch_offset  # the part of this epoch a resumed checkpoint had done already
            val = self.validate()
            recon = self.reconstruction_rate()
            if not math.isfinite(val):
                raise TrainingDiverged(f"validation loss is {val} after epoch {self.epoch + 1}; stopped, "
                                       f"the last good checkpoint (epoch {self.epoch}) is kept")
            self._plateau_step(val)
            self.epoch += 1
            improved = val < self.best_val
            if improved:
                self.best_val, self.bad_epochs = val, 0
            else:
                self.bad_epochs += 1
            self.early_stopped = self.bad_epochs >= self.config.early_stop_patience
            seconds = time.time() - t0
            self.elapsed += seconds - self.epoch_offset
            row = {"epoch": self.epoch, **{f"train_{k}": v for k, v in train.items()}, "val_rec": val,
                   **({"val_recon": recon} if recon is not None else {}), "step": self.global_step,
                   "lr": self.optimizer.param_groups[0]["lr"], "schedule": self.config.schedule,
                   "seconds": round(seconds, 2),
                   "elapsed": round(self.elapsed, 2)}
            self.history.append(row)
            if improved:
                self.save_best(val)
            self.save()
            self.log(f"epoch {self.epoch}: train loss {train['loss']:.4f} (rec {train['rec']:.4f}), "
                     f"val rec {val:.4f}{' *' if improved else ''}"
                     + (f", val reconstruction {recon:.1%}" if recon is not None else "")
                     + f", lr {row['lr']:.2g}, {row['seconds']:.1f}s")
            if self.early_stopped:
                self.log(f"early stop: no better validation loss in {self.bad_epochs} epochs")
            longest = max(longest, time.time() - t0)  # checkpoint writing included
        if self.stopped_inside and self.stop_requested is None:
            self.best_at_stop()
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
