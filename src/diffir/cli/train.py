"""``diffir train -c CONFIG.yaml [--out DIR] [--from-s1 CKPT] [--from-s2 CKPT] [--resume auto|PATH] [--set k=v] [-q]``.

Needs the ``[train]`` extra (pydantic; tensorboard only when ``log.tensorboard`` is on): without it the command
stops with one line naming the pip line that adds it.

Multi-GPU / multi-process: ``torchrun --nproc_per_node N -m diffir train -c ...`` (DDP-style gradient averaging,
rank 0 writes logs and checkpoints).
"""

from __future__ import annotations

import argparse

from diffir.cli.arguments import add_threads
from diffir.install import pip_extra


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="training YAML (see configs/ and docs/training.md)")
    parser.add_argument("--out", help="run folder (default: runs/<config name>)")
    parser.add_argument("--from-s1", metavar="CKPT",
                        help="stage 2: S1 run dir / checkpoint / model file (DiffIR, HI-Diff: restoration network "
                             "copied, the S1 prior encoder is the teacher; DiffBIR: the frozen cleaner, optionally "
                             "with the SD checkpoint, comma-separated)")
    parser.add_argument("--from-s2", metavar="CKPT",
                        help="GAN stage: S2 run dir / checkpoint / model file (its S1 teacher is found beside it); "
                             "DiffBIR stage 2: continue from a run or from official files with a ControlNet")
    parser.add_argument("--resume", metavar="auto|PATH",
                        help="continue from the newest checkpoint in --out (auto) or from PATH")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.iters=100 (repeatable)")
    add_threads(parser, None, " (default: the config's train.cpu_threads, else one per core; a resumed run "
                "is bit-identical only with the same count)")
    parser.add_argument("-q", "--quiet", "--no-progress", dest="no_progress", action="store_true",
                        help="no progress bar (logs still go to log.jsonl; errors and the summary still print)")


# Third-party modules of the ``[train]`` extra imported on the training path (tensorboard is imported only when
# ``log.tensorboard`` is on, and skipped with a warning when it is missing).
TRAIN_EXTRAS = ("pydantic",)
EXTRAS_HINT = f"diffir train needs the training extras: {pip_extra('train')}"


def _import_training():
    """The training entry points, or a one-line error when the ``[train]`` extra is not installed."""
    from diffir.errors import DiffIRError

    try:
        from diffir.train.distributed import DistContext
        from diffir.train.engine import Trainer, check_resumable
        from diffir.train.loading import load_config
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in TRAIN_EXTRAS:
            raise DiffIRError(f"{EXTRAS_HINT} ({exc.name} is missing)") from None
        raise
    return load_config, DistContext, Trainer, check_resumable


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    load_config, DistContext, Trainer, check_resumable = _import_training()
    cfg = load_config(args.config, args.overrides)
    threads = args.threads or cfg.train.cpu_threads
    if threads is not None:  # else torch's default, one thread per core (a fixed count keeps resume bit-exact)
        from diffir.runtime.threads import configure_threads

        configure_threads(threads)
    out = Path(args.out or Path("runs") / cfg.name)
    if args.resume is None:
        check_resumable(out)
    dist = DistContext.join(cfg.train.device)
    try:
        trainer = Trainer(cfg, out, resume=args.resume, from_s1=args.from_s1, from_s2=args.from_s2, dist=dist,
                          progress=not args.no_progress)
        if trainer.start_iter and dist.is_main:
            print(f"diffir: resuming {cfg.name} at iteration {trainer.start_iter}", file=sys.stderr)
        summary = trainer.fit()
        if dist.is_main:
            last = summary["last"]
            best = summary["best"]
            msg = f"diffir: {cfg.name} done at iteration {summary['iter']}"
            if "loss" in last:
                msg += f", loss {last['loss']:.4g}"
            if best:
                msg += f", best val {best['metric']} {best['value']:.3f} @ {best['iter']}"
            print(msg + f"; model: {out / 'model.safetensors'}", file=sys.stderr)
    finally:
        dist.shutdown()
    return 0
