"""`fit`: the one training loop every gradient-trained recommender uses.

AdamW (no decay on biases/norms/embeddings), linear warm-up then cosine decay per step, gradient
clipping, an optional moving average of the weights (`ema_decay`: validated, selected and saved
instead of the raw weights), mixed precision, validation NDCG@10 every `eval_every` steps (or per epoch) with the best
state kept, early stopping, a wall-clock budget, exact resume from `workdir/checkpoint.pt`, and
data parallelism under `torchrun`.

Determinism: dropout draws from the torch RNG, seeded with `seed` (+ rank) inside a fork of the
caller's RNG state (`torch.random.fork_rng`), so the caller's global RNG state is the same after
`fit` as before it; the order of epoch e is `randperm` from a generator seeded by (seed, e). The
loop's RNG state is saved in checkpoints and put aside during validation, so an interrupted and
resumed run ends with the same weights as an uninterrupted one. The loss stays on the device between log points (no host sync per step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gdr_cli.console import console, progress
from gdr_cli.errors import GdrError
from stages.config.training import TrainLoopConfig
from stages.models.fast_dropout import use_fast_dropout
from stages.training import distributed as D
from stages.training.checkpoint import fingerprint_json, load_checkpoint, save_checkpoint
from stages.training.device import resolve_amp, resolve_device
from stages.training.interrupts import DeferredInterrupt
from stages.training.optim import lr_factor, make_optimizer
from stages.training.trackers import NoTracker, Tracker, make_tracker

Validator = Callable[[nn.Module, int, int], tuple[float, int]]
"""validate(model, rank, world_size) -> (sum of NDCG@10 over this rank's shard of validation users, users in it)."""
ValidationHook = Callable[[int, float], None]
"""on_validation(step, val_ndcg@10), called on rank 0 after each validation (e.g. Optuna's report and
pruning: an exception it raises ends training, the run folder is not written)."""

LOG_FILE = "train.log"
DEVICE_DATA_BYTES = 2 << 30
"""Training tensors up to this size live on the GPU (batches are slices, no host transfer)."""


@dataclass
class FitResult:
    best_state: dict[str, Tensor]  # state_dict (CPU) of the best validation checkpoint
    best_metric: float  # best validation NDCG@10
    best_step: int
    steps: int
    stop_reason: str  # "early-stopping" | "max-steps" | "max-epochs" | "budget"
    log: list[dict] = field(default_factory=list)  # step, epoch, loss, lr, examples_per_s, val_ndcg@10, wall_s
    workdir: Path | None = None  # where train.log and the resume checkpoint are
    steps_per_epoch: int = 0  # optimiser steps of one pass over the training examples


def epoch_order(seed: int, epoch: int, n: int) -> Tensor:
    """Permutation [n] int64 of epoch `epoch`, a function of (seed, epoch) only."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, epoch]).generate_state(2, np.uint32)
    gen = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randperm(n, generator=gen)


class _Trainer:
    def __init__(
        self,
        *,
        model: nn.Module,
        train: dict[str, Tensor],
        validate: Validator,
        cfg: TrainLoopConfig,
        seed: int,
        workdir: Path,
        fingerprint: dict | None,
        desc: str,
        on_validation: ValidationHook | None = None,
    ):
        self.cfg, self.seed, self.workdir, self.desc, self.validate = cfg, seed, Path(workdir), desc, validate
        self.on_validation = on_validation
        self.fingerprint_dict, self.fingerprint = fingerprint, fingerprint_json(fingerprint)
        self.device = resolve_device(cfg.device, D.dist_info().local_rank)
        self.info = D.init_distributed(self.device)
        self.rank, self.world = self.info.rank, self.info.world_size
        self.primary = self.rank == 0
        self.amp_dtype = resolve_amp(cfg.amp, self.device)

        sizes = {int(v.shape[0]) for v in train.values()}
        if not train or len(sizes) != 1:
            raise GdrError(
                "training tensors must share their first dimension", fix="build them with stages.data.sequences"
            )
        n = sizes.pop()
        if n < self.world:
            raise GdrError(
                f"only {n} training examples for {self.world} processes", fix="use more data or fewer processes"
            )
        self.per_rank = n // self.world  # equal shards so every rank takes the same number of steps
        self.batch = max(1, cfg.batch_size // self.world)
        self.steps_per_epoch = math.ceil(self.per_rank / self.batch)
        planned = cfg.max_epochs * self.steps_per_epoch
        self.total_steps = min(planned, cfg.max_steps) if cfg.max_steps else planned
        self.n = n
        on_device = (
            self.device.type == "cpu" or sum(v.numel() * v.element_size() for v in train.values()) <= DEVICE_DATA_BYTES
        )
        self.data_device = self.device if on_device else torch.device("cpu")
        self.data = {k: v.to(self.data_device) for k, v in train.items()}

        self.model = model.to(self.device).train()
        self.net: nn.Module = self.model
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # moving average of the weights (fp32 copies), validated and saved instead of them; None = off
        self.ema: list[Tensor] | None = [p.detach().float().clone() for p in self.params] if cfg.ema_decay > 0 else None
        self.opt = make_optimizer(self.model, lr=cfg.lr, weight_decay=cfg.weight_decay, device=self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

        # progress of training (all saved in checkpoints)
        self.step = self.epoch = self.pos = 0
        self.best_metric, self.best_step, self.bad_evals = float("-inf"), 0, 0
        self.best_state: dict[str, Tensor] = {}
        self.log: list[dict] = []
        self.wall_before = 0.0
        self.last_val_step = -1
        self.stop_reason = ""
        # the current log window
        self.loss_sum, self.loss_n, self.window_examples = 0.0, 0, 0
        self.loss_buf = torch.zeros(cfg.log_every, dtype=torch.float32, device=self.device)
        self.buf_n = 0
        # separate loss terms, when the model sets `loss_terms` (a dict of detached scalars) in its loss
        self.term_names: list[str] = []
        self.term_buf: Tensor | None = None  # [log_every, n_terms]
        self.term_sum: dict[str, float] = {}
        self.t_start = self.t_row = time.perf_counter()
        self.order: Tensor | None = None
        self.logfile: Any = None
        self.tracker: Tracker = NoTracker()

    # ---- state -------------------------------------------------------------------------------
    def examples_after(self, steps: int) -> int:
        """Examples (all ranks) that `steps` optimiser steps go through; the last batch of an epoch is short."""
        epochs, rest = divmod(steps, self.steps_per_epoch)
        return (epochs * self.per_rank + min(rest * self.batch, self.per_rank)) * self.world

    def wall(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start

    def _rng_states(self) -> dict[str, Tensor]:
        cpu = torch.stack(D.all_gather_bytes(torch.get_rng_state()))
        out = {"cpu": cpu}
        if self.device.type == "cuda":
            out["cuda"] = torch.stack(D.all_gather_bytes(torch.cuda.get_rng_state(self.device)))
        return out

    def save(self) -> None:
        """Checkpoint everything a resume needs (collective: every rank calls it; rank 0 writes)."""
        self.check_finite()
        rng = self._rng_states()
        if self.primary:
            self._write_checkpoint(rng)
        D.barrier()  # the file is complete before any rank goes on (or reads it)

    def _write_checkpoint(self, rng: dict[str, Tensor]) -> None:
        save_checkpoint(
            self.workdir,
            {
                "fingerprint": self.fingerprint,
                "world_size": self.world,
                "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng,
                "best_state": self.best_state,
                "best_metric": self.best_metric,
                "best_step": self.best_step,
                "bad_evals": self.bad_evals,
                "step": self.step,
                "epoch": self.epoch,
                "pos": self.pos,
                "log": self.log,
                "wall_s": self.wall(),
                "last_val_step": self.last_val_step,
                "loss_sum": self.loss_sum,
                "loss_n": self.loss_n,
                "window_examples": self.window_examples,
                "stop_reason": self.stop_reason,
                "term_sum": self.term_sum,
                "ema": self.ema,
            },
        )

    def restore(self, state: dict[str, Any]) -> None:
        if state["world_size"] != self.world:
            raise GdrError(
                f"checkpoint was written by {state['world_size']} process(es), this run has {self.world}",
                where=str(self.workdir),
                fix=f"resume with --nproc-per-node {state['world_size']}, or start again without --resume",
            )
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if state["scaler"] and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["cpu"][self.rank].clone())  # own storage: a row view crashes it
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"][self.rank].clone(), self.device)
        for key in (
            "best_state",
            "best_metric",
            "best_step",
            "bad_evals",
            "step",
            "epoch",
            "pos",
            "log",
            "last_val_step",
            "loss_sum",
            "loss_n",
            "window_examples",
            "stop_reason",
        ):
            setattr(self, key, state[key])
        self.term_sum = dict(state.get("term_sum", {}))
        if self.ema is not None:
            for avg, saved in zip(self.ema, state["ema"], strict=True):
                avg.copy_(saved)
        self.wall_before = state["wall_s"]
        self.t_start = self.t_row = time.perf_counter()
        self.write(f"resumed at step {self.step} (epoch {self.epoch}, {self.pos} examples into it)")
        if self.stop_reason == "budget" and not (
            self.cfg.max_minutes and self.wall_before >= self.cfg.max_minutes * 60
        ):
            self.stop_reason = ""  # stopped by a budget that has since been raised: train on
            self.write("the wall-clock budget was raised: training goes on")

    # ---- one step ----------------------------------------------------------------------------
    def train_step(self, idx: Tensor) -> Tensor:
        """One optimiser step on the examples `idx` [B]; returns the loss (on the device, unsynced)."""
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr * lr_factor(
                self.step, warmup=self.cfg.warmup_steps, total=self.total_steps, min_ratio=self.cfg.min_lr_ratio
            )
        batch = {k: v.index_select(0, idx).to(self.device, non_blocking=True) for k, v in self.data.items()}
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            loss = self.net(batch)
        self.scaler.scale(loss).backward()
        if self.cfg.clip_norm > 0:
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.params, self.cfg.clip_norm, foreach=self.device.type == "cuda" or None)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
            torch._foreach_lerp_(self.ema, [p.detach().float() for p in self.params], 1.0 - decay)
        return loss.detach()

    def swap_ema(self) -> None:
        """Exchange the model's weights with their moving average (twice = back to the raw weights)."""
        if self.ema is None:
            return
        with torch.no_grad():
            for p, avg in zip(self.params, self.ema, strict=True):
                raw = p.detach().float().clone()
                p.copy_(avg)
                avg.copy_(raw)

    def buffer_terms(self, terms: dict[str, Tensor]) -> None:
        """Keep this step's loss terms on the device, in the row `buf_n` of the loss buffer."""
        if self.term_buf is None:
            self.term_names = list(terms)
            self.term_buf = torch.zeros(len(self.loss_buf), len(terms), dtype=torch.float32, device=self.device)
        self.term_buf[self.buf_n] = torch.stack([terms[k].float() for k in self.term_names])

    def flush(self) -> None:
        """Move buffered losses to the host; stop on the first non-finite one (on every rank)."""
        n, self.buf_n = self.buf_n, 0
        if self.term_buf is not None and n:
            sums = self.term_buf[:n].double().sum(0).cpu().tolist()
            for name, value in zip(self.term_names, sums, strict=True):
                self.term_sum[name] = self.term_sum.get(name, 0.0) + value
        losses = self.loss_buf[:n].double().cpu()
        first_step = self.step - n + 1
        bad = (~torch.isfinite(losses)).nonzero().flatten()
        at = float(first_step + int(bad[0])) if len(bad) else math.inf
        at = D.all_reduce_min([at])[0] if self.info.enabled else at
        if at < math.inf:
            value = "NaN" if len(bad) and torch.isnan(losses[bad[0]]) else "inf" if len(bad) else "NaN/inf"
            self.write(f"loss became {value} at step {int(at)}; last good checkpoint kept")
            raise GdrError(
                f"loss became {value} at step {int(at)} (the last good checkpoint is kept)",
                where=str(self.workdir),
                fix="lower train.lr (or raise train.warmup_steps / lower train.clip_norm) and start again",
            )
        self.loss_sum += float(losses.sum())
        self.loss_n += n

    def check_finite(self) -> None:
        """Losses so far and the current weights are finite, or training stops (nothing is saved)."""
        self.flush()
        finite = torch.stack([torch.isfinite(p).all() for p in self.params]).all()
        if self.any_rank(not bool(finite)):
            self.write(f"weights became NaN/inf at step {self.step}; last good checkpoint kept")
            raise GdrError(
                f"weights became NaN/inf at step {self.step} (the loss diverged; the last good checkpoint is kept)",
                where=str(self.workdir),
                fix="lower train.lr (or raise train.warmup_steps / lower train.clip_norm) and start again",
            )

    # ---- validation and logging ----------------------------------------------------------------
    def run_validation(self) -> float:
        self.check_finite()
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        self.swap_ema()  # validate (and keep as best) the averaged weights
        self.model.eval()
        with torch.no_grad():
            total, count = self.validate(self.model, self.rank, self.world)
        self.model.train()
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, self.device)
        total, count = D.all_reduce_sum([float(total), float(count)])
        if count <= 0:
            raise GdrError("validation has no users", fix="check the splits table: every user needs a validation item")
        ndcg = total / count
        self.last_val_step = self.step
        if ndcg > self.best_metric:
            self.best_metric, self.best_step, self.bad_evals = ndcg, self.step, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        else:
            self.bad_evals += 1
            if self.cfg.patience and self.bad_evals >= self.cfg.patience and not self.stop_reason:
                self.stop_reason = "early-stopping"
        self.swap_ema()
        return ndcg

    def add_row(self, val: float | None, t_end: float) -> dict:
        """Log row of the window since the last one; examples/s over its training time (until `t_end`)."""
        self.flush()
        loss_sum, loss_n, examples = self.loss_sum, self.loss_n, self.window_examples
        names = sorted(self.term_sum)
        term_sums = [self.term_sum[k] for k in names]
        if self.info.enabled:
            loss_sum, loss_n, examples, *term_sums = D.all_reduce_sum([loss_sum, loss_n, examples, *term_sums])
        row = {
            "step": self.step,
            "epoch": round(self.step / self.steps_per_epoch, 4),
            "loss": loss_sum / loss_n if loss_n else None,
            "lr": self.opt.param_groups[0]["lr"],
            "examples_per_s": examples / max(t_end - self.t_row, 1e-9),
            "val_ndcg@10": val,
            "wall_s": round(self.wall(), 3),
        }
        row.update({k: v / loss_n for k, v in zip(names, term_sums, strict=True)} if loss_n else {})
        self.log.append(row)
        if self.primary:
            self.tracker.log(row)
        self.loss_sum, self.loss_n, self.window_examples = 0.0, 0, 0
        self.term_sum = {}
        loss = "-" if row["loss"] is None else f"{row['loss']:.4f}" + terms_text(row)
        val_text = "" if val is None else f" val_ndcg@10 {val:.4f} (best {self.best_metric:.4f} @ {self.best_step})"
        self.write(
            f"step {self.step} epoch {row['epoch']:.2f} loss {loss} lr {row['lr']:.3g} "
            f"ex/s {row['examples_per_s']:,.0f}{val_text}"
        )
        self.t_row = time.perf_counter()  # validation and logging are not training time
        return row

    def write(self, line: str) -> None:
        if self.primary and self.logfile is not None:
            self.logfile.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
            self.logfile.flush()

    def over_budget(self, sync_point: bool) -> bool:
        """Wall-clock budget spent (checked every step alone, at log points under torchrun)."""
        if not self.cfg.max_minutes or (self.info.enabled and not sync_point):
            return False
        return self.any_rank(self.wall() >= self.cfg.max_minutes * 60)

    def any_rank(self, flag: bool) -> bool:
        return D.all_reduce_sum([float(flag)])[0] > 0 if self.info.enabled else flag

    # ---- the loop ------------------------------------------------------------------------------
    def run(self, resume: bool) -> FitResult:
        """Train in a fork of the global RNG state (CPU + this CUDA device): the caller's state is untouched."""
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            torch.random.default_generator.manual_seed(self.seed + self.rank)  # dropout and any draw in the model
            if cuda:
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(self.seed + self.rank)
            return self._run(resume)

    def _run(self, resume: bool) -> FitResult:
        cfg = self.cfg
        state = load_checkpoint(self.workdir, self.fingerprint_dict) if resume else None
        if self.primary:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.logfile = open(self.workdir / LOG_FILE, "a" if resume else "w")  # noqa: SIM115 (closed in finally)
            self.tracker = make_tracker(
                cfg.tracker, logdir=self.workdir / "tb", project=cfg.wandb_project, config=self.fingerprint_dict
            )
        try:
            if state is not None:
                self.restore(state)
            else:
                self.write(
                    f"{self.desc}: {self.n:,} examples, batch {cfg.batch_size}, {self.steps_per_epoch} steps/epoch, "
                    f"device {self.device}, amp {self.amp_dtype}, {self.world} process(es), seed {self.seed}"
                )
            if not self.stop_reason:
                self.loop()
        finally:
            if self.logfile is not None:
                self.logfile.close()
            self.tracker.close()
        if self.primary:
            console.print(
                f"{self.desc}: best val NDCG@10 {self.best_metric:.4f} at step {self.best_step}; "
                f"stopped by {self.stop_reason} after {self.step} steps in {self.wall():.1f}s"
            )
        return FitResult(
            self.best_state,
            self.best_metric,
            self.best_step,
            self.step,
            self.stop_reason,
            list(self.log),
            self.workdir,
            self.steps_per_epoch,
        )

    def loop(self) -> None:
        cfg = self.cfg
        busy = False
        with DeferredInterrupt() as interrupts, progress("ex", "loss", "val") as bar:
            task = bar.add_task(
                self.desc,
                total=self.examples_after(self.total_steps),
                completed=self.examples_after(self.step),
                loss="-",
                val="-",
            )
            try:
                while True:
                    busy = True
                    if self.order is None or self.pos == 0:
                        perm = epoch_order(self.seed, self.epoch, self.n)
                        self.order = perm[self.rank * self.per_rank : (self.rank + 1) * self.per_rank].to(
                            self.data_device
                        )
                    idx = self.order[self.pos : self.pos + self.batch]
                    loss = self.train_step(idx)
                    if self.buf_n == len(self.loss_buf):
                        self.flush()  # holds steps up to self.step
                    self.loss_buf[self.buf_n] = loss  # no host sync: read back at the next flush
                    terms = getattr(self.model, "loss_terms", None)  # set by the model's loss, if it splits it
                    if terms:
                        self.buffer_terms(terms)
                    self.buf_n += 1
                    self.step += 1
                    self.pos += len(idx)
                    self.window_examples += len(idx)
                    epoch_end = self.pos >= self.per_rank
                    if epoch_end:
                        self.epoch, self.pos = self.epoch + 1, 0
                    bar.update(task, advance=len(idx) * self.world)

                    t_end = time.perf_counter()
                    sync_point = self.step % cfg.log_every == 0
                    val_due = self.step % cfg.eval_every == 0 if cfg.eval_every else epoch_end
                    if cfg.max_steps and self.step >= cfg.max_steps:
                        self.stop_reason = "max-steps"
                    elif self.epoch >= cfg.max_epochs:
                        self.stop_reason = "max-epochs"
                    elif self.over_budget(sync_point):
                        self.stop_reason = "budget"
                    val_due = val_due or bool(self.stop_reason)  # the last step is always validated
                    val = self.run_validation() if val_due else None  # may stop early
                    if val is not None and self.on_validation is not None and self.primary:
                        self.on_validation(self.step, val)
                    if sync_point or val_due:
                        row = self.add_row(val, t_end)
                        bar.update(
                            task,
                            loss="-" if row["loss"] is None else f"{row['loss']:.4f}" + terms_text(row),
                            val=f"{self.best_metric:.4f}" if self.best_step else "-",
                        )
                    if self.stop_reason:
                        self.write(f"stopped: {self.stop_reason} at step {self.step}")
                        self.save()
                        return
                    # Ctrl-C: every step alone; under torchrun at log points, where all ranks agree
                    halt = (sync_point or not self.info.enabled) and self.any_rank(interrupts.requested)
                    if halt or val_due or self.step % cfg.checkpoint_every == 0:
                        self.save()
                    if halt:
                        self.write(f"interrupted at step {self.step}; checkpoint saved (resume with --resume)")
                        raise KeyboardInterrupt
                    busy = False
            except KeyboardInterrupt:
                if not busy and self.primary and not interrupts.requested and not self.info.enabled:
                    self.save()  # between two steps: the state is consistent
                raise


def terms_text(row: dict) -> str:
    """' (ce 3.81 mask 0.512 kl 0.103)' from a log row's `loss_*` terms; '' when it has none."""
    terms = [f"{k.removeprefix('loss_')} {v:.4g}" for k, v in row.items() if k.startswith("loss_") and v is not None]
    return f" ({' '.join(terms)})" if terms else ""


def fit(
    *,
    model: nn.Module,
    train: dict[str, Tensor],
    validate: Validator,
    cfg: TrainLoopConfig,
    seed: int,
    workdir: Path,
    resume: bool = False,
    fingerprint: dict | None = None,
    desc: str = "train",
    on_validation: ValidationHook | None = None,
) -> FitResult:
    """Train `model` (whose `model(batch)` is the scalar loss) on the `train` tensors; select on `validate`.

    train: dict of tensors sharing dim 0 (e.g. history [N, L] int64, target [N] int64); a batch is
    the same dict sliced on the batch's indices and moved to the device. The model is left on the
    device with the weights of the last step; `FitResult.best_state` has the best validation ones.
    A model that sets `loss_terms` (dict of detached scalars) in its loss gets each term logged
    (log rows, train.log, progress bar). `on_validation(step, ndcg)` is called after each validation.
    Every `nn.Dropout` in the model is swapped for the cheaper-mask one first (stages/models/fast_dropout.py).
    """
    use_fast_dropout(model)
    trainer = _Trainer(
        model=model,
        train=train,
        validate=validate,
        cfg=cfg,
        seed=seed,
        workdir=workdir,
        fingerprint=fingerprint,
        desc=desc,
        on_validation=on_validation,
    )
    return trainer.run(resume)
