"""The training loop: one class that runs S1, S2 (joint / traditional / warm-up) and the GAN stage.

Per iteration (BasicSR order): set learning rates → fetch ``accum_steps`` micro-batches → generator losses and
backward (discriminator frozen) → NaN/spike guard → gradient all-reduce → clip → step → discriminator step →
EMA update → log / validate / checkpoint.

Every random draw of an iteration comes from generators re-seeded from (seed, iteration, rank, rollbacks) and
the data stream is addressed by iteration (:mod:`diffir.train.data`), so a resumed run repeats an uninterrupted
one bit for bit on the CPU.

Stage wiring lives in :mod:`diffir.train.stages`, the per-stage forward passes and losses in
:mod:`diffir.train.objectives`, validation in :mod:`diffir.train.validation`.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections import defaultdict, deque
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from diffir.data.degradations.realesrgan import TrainingPairPool
from diffir.data.progressive import ProgressiveSchedule, cut_batch
from diffir.errors import CheckpointError, ConfigError, DiffIRError
from diffir.install import pip_extra
from diffir.pipelines.precision import resolve_device
from diffir.train import checkpointing as ckpt
from diffir.train.config import OptimizerSection, TrainConfig
from diffir.train.data import (
    build_dataset,
    sample_seed,
    train_loader,
    val_items,
)
from diffir.train.discriminators import build_discriminator
from diffir.train.distributed import DistContext
from diffir.train.ema import ModelEMA
from diffir.train.losses import KDLoss, VGGPerceptualLoss
from diffir.train.objectives import Objectives
from diffir.train.pipeline_start import start_pipeline, trains_itself
from diffir.train.runlog import append_record, truncate_after, write_text
from diffir.train.schedules import apply_lr, lr_at
from diffir.train.stages import initialise_stage, load_init, load_teacher
from diffir.train.validation import evaluate


class TrainingDiverged(DiffIRError):
    """The loss became NaN/inf or spiked and no rollback was possible."""


def _device(name: str, dist: DistContext) -> torch.device:
    """The one device resolver of diffir (auto: CUDA, else MPS, else CPU); each process takes its own GPU."""
    device = resolve_device(name)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", dist.local_rank)
    return device


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the forward passes (``train.amp``), on every device that has it.  bf16 also runs on the
    CPU, where it made a small network's training step about 1.3x faster (benchmarks/train_step.py --paths bf16,fp32);
    fp16 needs the gradient scaler, which exists for CUDA only, so it is refused elsewhere rather than ignored."""
    if cfg.train.amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"{cfg.where('train.amp')}: fp16 needs a CUDA device, this run is on {device.type}; "
                          "use bf16 (CPUs with AVX-512-BF16/AMX run it fastest) or none")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.train.amp]


def _make_optimizer(params: list[nn.Parameter], section: OptimizerSection) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if section.type == "adamw" else torch.optim.Adam
    return cls(params, lr=section.lr, betas=section.betas, weight_decay=section.weight_decay)


class Trainer(Objectives):
    """Build everything a config describes, then :meth:`fit`."""

    def __init__(
        self,
        cfg: TrainConfig,
        out: str | Path,
        resume: str | None = None,
        from_s1: str | None = None,
        from_s2: str | None = None,
        dist: DistContext | None = None,
        progress: bool = True,
    ) -> None:
        from diffir.registry import create_model

        self.cfg = cfg
        self.out = Path(out)
        self.dist = dist or DistContext()
        self.device = _device(cfg.train.device, self.dist)
        self.progress = progress and cfg.log.progress
        self.stage = cfg.stage
        self.rollbacks = 0
        self.best: dict[str, Any] = {}
        self.loss_history: deque[float] = deque(maxlen=cfg.guard.window)
        if self.dist.is_main and self.out.is_dir():  # what a killed run left: temporaries, half-made checkpoints
            ckpt.remove_stale(self.out)

        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank and every restart
        self.student: nn.Module = create_model(cfg.model.preset, **cfg.model_overrides()).to(self.device)
        self.mc = self.student.descriptor  # task, scale ... (the model's internals stay in its architecture)
        # A model with its own training_loss (DiffBIR) trains its trainable_parameters() only; no teacher, no ablation.
        self.own_loss = trains_itself(self.student)
        if self.stage != "s1" and not self.own_loss:
            self.student.set_ablation(enabled=cfg.diffusion.enabled, reverse_noise=cfg.diffusion.reverse_noise,
                                      optimization=cfg.diffusion.optimization)
        self.teacher: nn.Module | None = None
        resume_dir = ckpt.resolve_resume(self.out, resume)
        if self.own_loss and cfg.model.init:
            raise ConfigError("model.init fine-tunes DiffIR/HI-Diff models; a DiffBIR stage starts from "
                              "--from-s1/--from-s2 (and model.base)")
        if resume_dir is None and self.own_loss:
            start_pipeline(self.student, self.stage, cfg.model.base, from_s1 or cfg.model.from_s1,
                           from_s2 or cfg.model.from_s2)
        elif resume_dir is None:
            self.teacher = initialise_stage(self.student, self.stage, from_s1 or cfg.model.from_s1,
                                            from_s2 or cfg.model.from_s2, self.device)
            if cfg.model.init:
                load_init(self.student, cfg.model.init)
        else:
            self._load_teacher_from(resume_dir)
        self.student.train()
        trained = self.student.trainable_parameters() if self.own_loss else list(self.student.parameters())
        if self.own_loss:  # frozen parts get no gradients (memory, time) and are shared with the EMA copy
            self.student.requires_grad_(False)
            for p in trained:
                p.requires_grad_(True)

        self.disc = build_discriminator(cfg.discriminator).to(self.device) if cfg.adversarial else None
        self.kd = KDLoss(cfg.losses.kd.type, cfg.losses.kd.weight, cfg.losses.kd.temperature)
        self.perceptual = None
        if cfg.losses.perceptual.weight > 0:
            p = cfg.losses.perceptual
            self.perceptual = VGGPerceptualLoss(p.layer_weights, p.vgg_weights, p.imagenet_norm).to(self.device)
        if cfg.losses.resnet_pl.weight > 0:
            from diffir.train.losses.resnet_pl import ResNetPLLoss

            self.resnet_pl = ResNetPLLoss(cfg.losses.resnet_pl.weights).to(self.device)
        else:
            self.resnet_pl = None

        self.dist.broadcast_module(self.student)
        if self.disc is not None:
            self.dist.broadcast_module(self.disc)
        self.ema = ModelEMA(self.student, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None

        # Optimisers.  S2's optimizer_e covers the prior's networks (DiffIR: CPEN_S2 + denoiser, as upstream).
        self.opt_g = _make_optimizer(trained, cfg.optim.g)
        self.opt_e = None
        if cfg.optim.e is not None and self.stage != "s1" and not self.own_loss:
            self.opt_e = _make_optimizer(self.student.prior_parameters(), cfg.optim.e)
        self.opt_d = _make_optimizer(list(self.disc.parameters()), cfg.optim.d) if self.disc is not None else None
        self.amp_dtype = _amp_dtype(cfg, self.device)
        self.scalers = {k: torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16) for k in ("g", "d")}

        # Data.
        self.train_set = build_dataset(cfg.data.train, self.mc.scale, self.mc.task, train=True)
        self.val_set = (build_dataset(cfg.data.val, self.mc.scale, self.mc.task, train=False)
                        if cfg.data.val is not None and cfg.val.every > 0 else None)
        self.degradation = self._build_degradation(cfg.data.train)
        self.val_degradation = self._build_degradation(cfg.data.val) if cfg.data.val is not None else None
        self.gen = torch.Generator()  # per-iteration noise: diffusion, degradations, progressive crops
        self.pool = self._new_pool()

        self.start_iter = 0
        if resume_dir is not None:
            self._restore(resume_dir)
            if self.dist.is_main:  # the iterations after the checkpoint are redone: forget their old lines
                for log in ("log.jsonl", "val.jsonl"):
                    truncate_after(self.out / log, self.start_iter)
        self._loader = self._make_loader()

        self.writer = None
        self.log_file = None
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text(self.out / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
            if self.teacher is not None:
                ckpt.save_run_file(self.teacher, self.out / "teacher.safetensors")
            if cfg.log.tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self.writer = SummaryWriter(str(self.out / "tb"), purge_step=self.start_iter + 1)
                except ImportError:  # tensorboard is part of the optional [train] extra: log.jsonl still has it all
                    self.writer = None
                    print("diffir: warning: log.tensorboard is on but tensorboard is not installed "
                          f"({pip_extra('train')}, or --set log.tensorboard=false); logging to log.jsonl only",
                          file=sys.stderr)

    # ------------------------------------------------------------------------------------------ set-up
    def _new_pool(self) -> TrainingPairPool | None:
        """Real-ESRGAN's training-pair pool (``data.train.pool_size``, RealSR ``queue_size`` 180), per process."""
        size = self.cfg.data.train.pool_size
        return TrainingPairPool(size) if size else None

    def _build_degradation(self, section) -> nn.Module | None:
        if section is None or section.kind != "folder" or section.degradation is None:
            return None
        from diffir.data import build_degradation

        try:
            deg = build_degradation(section.degradation.name, **section.degradation.options)
        except (TypeError, ValueError) as exc:  # ConfigError included: name the config and the section
            key = "data.train" if section is self.cfg.data.train else "data.val"
            raise ConfigError(f"{self.cfg.where(key + '.degradation.options')}: {exc}") from None
        return deg.to(self.device)

    def _load_teacher_from(self, ckpt_dir: Path) -> None:
        if self.stage != "s1" and not self.own_loss:
            self.teacher = load_teacher(ckpt_dir / "teacher.safetensors", self.student.config, self.device)

    def _make_loader(self):
        t = self.cfg.train
        batch = t.batch_size
        if t.progressive is not None:  # the loader yields the largest batch; the loop cuts stages out of it
            batch = max(t.progressive.batch_sizes)
        seed = t.seed + 7919 * self.rollbacks
        return train_loader(self.train_set, batch, seed, self.dist.rank, self.dist.world_size,
                            self.start_iter * t.accum_steps, self.cfg.data.train.num_workers)

    # ------------------------------------------------------------------------------------------- state
    def _weights(self) -> dict[str, nn.Module]:
        w: dict[str, nn.Module] = {"params": self.student}
        if self.ema is not None:
            w["params_ema"] = self.ema.module
        if self.teacher is not None:
            w["teacher"] = self.teacher
        if self.disc is not None:
            w["net_d"] = self.disc
        return w

    def _state(self, iteration: int) -> dict[str, Any]:
        opts = {"g": self.opt_g, "e": self.opt_e, "d": self.opt_d}
        return {
            "iteration": iteration,
            "optimizers": {k: o.state_dict() for k, o in opts.items() if o is not None},
            "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
            "rng": ckpt.rng_state({}),
            "rollbacks": self.rollbacks,
            "loss_history": list(self.loss_history),
            "best": dict(self.best),
            "world_size": self.dist.world_size,
            "config": self.cfg.model_dump(mode="json"),
        }

    def _restore(self, ckpt_dir: Path) -> None:
        try:
            self._restore_state(ckpt_dir)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # CheckpointError passes through as is
            if isinstance(exc, DiffIRError):
                raise
            detail = " ".join(str(exc).split())[:160]
            raise CheckpointError(f"{ckpt_dir}: its training state does not fit this config ({type(exc).__name__}: "
                                  f"{detail}); resume with the config the run was started with, or use a new "
                                  "--out") from None

    def _restore_state(self, ckpt_dir: Path) -> None:
        state = ckpt.load_state(ckpt_dir)
        ckpt.load_weights(self.student, ckpt_dir / "params.safetensors")
        if self.ema is not None:
            ema_file = ckpt_dir / "params_ema.safetensors"
            ckpt.load_weights(self.ema.module, ema_file if ema_file.is_file() else ckpt_dir / "params.safetensors")
        if self.disc is not None:
            ckpt.load_weights(self.disc, ckpt_dir / "net_d.safetensors")
        for k, opt in {"g": self.opt_g, "e": self.opt_e, "d": self.opt_d}.items():
            if opt is not None and k in state["optimizers"]:
                opt.load_state_dict(ckpt.optimizer_state_to(state["optimizers"][k], self.device))
        for k, s in self.scalers.items():
            if k in state.get("scalers", {}):
                s.load_state_dict(state["scalers"][k])
        ckpt.set_rng_state(state["rng"], {})
        self.rollbacks = int(state.get("rollbacks", 0))
        self.loss_history = deque(state.get("loss_history", []), maxlen=self.cfg.guard.window)
        self.best = dict(state.get("best", {}))
        self.start_iter = int(state["iteration"])
        self.pool = self._new_pool()
        if self.pool is not None and (ckpt_dir / "pair_pool.safetensors").is_file():
            self.pool.load_state_dict(ckpt.load_tensors(ckpt_dir / "pair_pool.safetensors", self.device))

    def save(self, iteration: int) -> None:
        if self.dist.is_main:
            tensors = {"pair_pool": self.pool.state_dict()} if self.pool is not None and self.pool.filled else {}
            ckpt.save_checkpoint(self.out, iteration, self._weights(), self._state(iteration),
                                 self.cfg.checkpoint.keep, tensors)
        self.dist.barrier()

    # ---------------------------------------------------------------------------------------- one step
    def _seed_iteration(self, it: int) -> None:
        self.gen.manual_seed(sample_seed(self.cfg.train.seed + 104729 * self.rollbacks,
                                         it * self.dist.world_size + self.dist.rank))

    def _next_batch(self, it: int) -> dict[str, Any]:
        raw = next(self._loader)
        batch: dict[str, Any] = {k: v.to(self.device, non_blocking=True) for k, v in raw.items() if torch.is_tensor(v)}
        if self.degradation is not None:
            with torch.no_grad():
                pair = self.degradation(batch["gt"], generator=self.gen)
            batch = {**batch, **{k: v.contiguous() for k, v in pair.items() if k in ("lq", "gt", "gt_usm", "mask")}}
        if self.pool is not None:  # swap the fresh pairs for random past ones (decorrelates the batches)
            batch = {**batch, **self.pool({k: batch[k] for k in ("lq", "gt", "gt_usm") if k in batch}, self.gen)}
        prog = self.cfg.train.progressive
        if prog is not None:  # Restormer/DiffIR progressive training: smaller batch + one shared window
            size, patch = ProgressiveSchedule(prog.iters, prog.batch_sizes, prog.patch_sizes).at(it)
            batch = cut_batch(batch, size, patch, self.gen, scales={"lq": self.mc.scale})
        if self.mc.task == "inpaint" and batch["lq"].shape[1] == 3:
            batch["lq"] = torch.cat([batch["gt"] * (1 - batch["mask"]), batch["mask"]], dim=1)
        if "prompt" in raw and self.pool is None and prog is None:  # text prompts (DiffBIR); a pool or a cut batch
            batch["prompt"] = list(raw["prompt"])  # reorders the images, so the prompts ("" officially) are dropped
        return batch

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _set_lrs(self, it: int, warmup: bool) -> dict[str, float]:
        o, factor = self.cfg.optim, self.cfg.guard.lr_factor**self.rollbacks
        lrs = {}
        if warmup and self.opt_e is not None and o.e is not None:
            lrs["lr"] = lr_at(o.e.schedule, o.e.lr, it) * factor
            apply_lr(self.opt_e, lrs["lr"])
        else:
            lrs["lr"] = lr_at(o.g.schedule, o.g.lr, it) * factor
            apply_lr(self.opt_g, lrs["lr"])
        if self.opt_d is not None:
            lrs["lr_d"] = lr_at(o.d.schedule, o.d.lr, it) * factor
            apply_lr(self.opt_d, lrs["lr_d"])
        return lrs

    def _step(self, opt: torch.optim.Optimizer, params: list[nn.Parameter], scaler: torch.amp.GradScaler) -> None:
        self.dist.all_reduce_grads(params)
        if self.cfg.train.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip)
        scaler.step(opt)
        scaler.update()

    def _is_bad(self, loss: float) -> bool:
        g = self.cfg.guard
        if not g.enabled:
            return False
        bad = not math.isfinite(loss)
        if not bad and len(self.loss_history) == self.loss_history.maxlen:
            bad = loss > g.spike_factor * max(median(self.loss_history), 1e-12)
        return self.dist.any(bad)

    def train_iteration(self, it: int) -> dict[str, float] | None:
        """One optimisation step; None when the guard rejected it (the caller rolls back)."""
        self._seed_iteration(it)
        accum = self.cfg.train.accum_steps
        warmup = self.stage != "s1" and it <= self.cfg.train.encoder_iters
        if self.stage != "s1" and it == self.cfg.train.encoder_iters + 1:
            self.loss_history.clear()  # the loss changes scale (KD only → L1 + KD): not a spike
        logs: dict[str, float] = defaultdict(float)
        logs.update(self._set_lrs(it, warmup))
        opt = self.opt_e if warmup and self.opt_e is not None else self.opt_g
        params = [p for group in opt.param_groups for p in group["params"]]
        micro = [self._next_batch(it) for _ in range(accum)]

        if self.disc is not None:
            self.disc.requires_grad_(False)
        opt.zero_grad(set_to_none=True)
        fakes, total = [], 0.0
        for batch in micro:
            with self._autocast():
                loss, parts, fake = self._g_losses(batch, warmup)
            self.scalers["g"].scale(loss / accum).backward()
            fakes.append(fake)
            total += loss.item() / accum
            for k, v in parts.items():
                logs[k] += v / accum
        if self._is_bad(total):
            opt.zero_grad(set_to_none=True)
            return None
        self._step(opt, params, self.scalers["g"])
        self.loss_history.append(total)
        logs["loss"] = total

        if self.disc is not None and self.opt_d is not None and not warmup:
            self.disc.requires_grad_(True)
            self.opt_d.zero_grad(set_to_none=True)
            for batch, fake in zip(micro, fakes, strict=True):
                if self.cfg.losses.gan.regenerate_for_d:  # LaMa/PL re-runs G (fresh diffusion noise) for D
                    with torch.no_grad(), self._autocast():
                        fake, _ = self._generate(batch, False)
                with self._autocast():
                    d_loss, d_logs = self._d_losses(batch, fake.detach())
                self.scalers["d"].scale(d_loss / accum).backward()
                for k, v in d_logs.items():
                    logs[k] += v / accum
            self._step(self.opt_d, list(self.disc.parameters()), self.scalers["d"])
            for b in self.disc.buffers():  # keep BN statistics / spectral-norm vectors identical on every rank
                if self.dist.enabled:
                    torch.distributed.broadcast(b, src=0)
        if self.ema is not None:
            self.ema.update(self.student)
        return dict(logs)

    # ---------------------------------------------------------------------------------------- rollback
    def _rollback(self, it: int) -> int:
        """Reload the newest checkpoint after a bad step; returns the iteration to continue after."""
        last = ckpt.latest(self.out)
        if last is None:
            raise TrainingDiverged(
                f"loss became non-finite or spiked at iteration {it} before any checkpoint existed; lower optim.g.lr "
                "or raise train.batch_size (DiffIR collapses at very small batches), or save checkpoints earlier"
            )
        if self.rollbacks + 1 > self.cfg.guard.max_rollbacks:
            raise TrainingDiverged(f"training diverged {self.rollbacks + 1} times (last at iteration {it}); giving up")
        rollbacks = self.rollbacks + 1
        self._restore(last)
        self.rollbacks = rollbacks  # a different data/noise stream so the same divergence is not replayed
        self.loss_history.clear()
        self._loader = self._make_loader()
        self._log_event({"event": "rollback", "iter": it, "to": self.start_iter, "rollbacks": self.rollbacks})
        return self.start_iter

    # -------------------------------------------------------------------------------------- validation
    def validate(self, it: int) -> dict[str, float] | None:
        """Score the EMA (else the trained) network on the validation set; track and save the best."""
        if self.val_set is None or not self.dist.is_main:
            return None
        model = self.ema.module if self.ema is not None else self.student
        v = self.cfg.val
        result, grid = evaluate(model, val_items(self.val_set, v.seed), self.device, self.stage,
                                self.val_degradation, v.crop_border, v.y_channel, v.seed, v.steps)
        if self.writer is not None:
            for k, val in result.items():
                self.writer.add_scalar(f"val/{k}", val, it)
            if grid is not None and self.cfg.log.images:
                self.writer.add_image("val/lq_output_gt", grid, it)
        improved = not self.best or result[v.metric] > self.best["value"]
        if improved:
            self.best = {"metric": v.metric, "value": result[v.metric], "iter": it}
            ckpt.save_run_file(model, self.out / "model_best.safetensors")
            write_text(self.out / "best.json", json.dumps(self.best))
        append_record(self.out / "val.jsonl", {"iter": it, **result, "best": improved})
        return result

    # ------------------------------------------------------------------------------------------ logging
    def _log_event(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            append_record(self.out / "log.jsonl", record)

    # ---------------------------------------------------------------------------------------------- fit
    def fit(self) -> dict[str, Any]:
        # Tiny gradients leave denormal floats in Adam's moments, which are very slow on many CPUs.  The flag is
        # process-wide, so it is switched back off (torch's default) when training ends.
        flush = self.device.type == "cpu" and torch.set_flush_denormal(True)
        try:
            return self._fit()
        finally:
            if flush:
                torch.set_flush_denormal(False)

    def _fit(self) -> dict[str, Any]:
        from tqdm import tqdm

        cfg = self.cfg
        total = cfg.train.iters
        show = self.progress and self.dist.is_main
        # A bar only on a terminal; a piped log gets one plain line per log interval instead.
        plain = show and not sys.stderr.isatty()
        bar = tqdm(total=total, initial=self.start_iter, disable=not show or plain,
                   desc=f"{cfg.name} [{self.stage}]", dynamic_ncols=True)
        window: dict[str, list[float]] = defaultdict(list)
        t_last, it_last = time.perf_counter(), self.start_iter
        it = self.start_iter
        last_logs: dict[str, float] = {}
        while it < total:
            it += 1
            logs = self.train_iteration(it)
            if logs is None:
                it = self._rollback(it)
                bar.n = it
                bar.refresh()
                window.clear()
                t_last, it_last = time.perf_counter(), it
                continue
            for k, v in logs.items():
                window[k].append(v)
            bar.update(1)
            if it % cfg.log.every == 0 or it == total:
                now = time.perf_counter()
                rate = (it - it_last) / max(now - t_last, 1e-9)
                record = {"iter": it, **{k: float(np.mean(v)) for k, v in window.items()},
                          "it_s": rate, "eta_s": (total - it) / max(rate, 1e-9)}
                record = {k: self.dist.mean(v) if k.startswith(("loss", "kd_", "d_")) else v
                          for k, v in record.items()}
                record["iter"] = it
                self._log_event(record)
                if self.writer is not None:
                    for k, v in record.items():
                        if k != "iter":
                            self.writer.add_scalar(f"train/{k}", v, it)
                bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{record['lr']:.2e}")
                if plain:
                    print(progress_line(cfg.name, self.stage, record, total), file=sys.stderr, flush=True)
                last_logs = record
                window.clear()
                t_last, it_last = now, it
            if cfg.val.every and (it % cfg.val.every == 0 or it == total):
                self.validate(it)
                self.dist.barrier()
            if it % cfg.checkpoint.every == 0 or it == total:
                self.save(it)
        bar.close()
        if self.dist.is_main:
            final = self.ema.module if self.ema is not None else self.student
            ckpt.save_run_file(final, self.out / "model.safetensors")
        if self.writer is not None:
            self.writer.close()
        self.dist.barrier()
        return {"iter": it, "last": last_logs, "best": self.best}


def check_resumable(out: Path) -> None:
    """Raise a clear error when ``out`` holds checkpoints but no resume was asked (avoid silent overwrite)."""
    if ckpt.latest(out) is not None:
        raise CheckpointError(
            f"{out} already holds checkpoints; pass --resume auto to continue, or choose another --out"
        )


def progress_line(name: str, stage: str, record: dict[str, Any], total: int) -> str:
    """One plain progress line for logs that are not a terminal."""
    eta = int(record.get("eta_s", 0))
    return (f"diffir train {name} [{stage}]: iteration {record['iter']}/{total}, loss {record['loss']:.4g}, "
            f"lr {record['lr']:.2e}, {record['it_s']:.2f} it/s, ETA {eta // 3600}h{eta % 3600 // 60:02d}m")
