"""``diffir restore -i IN -o OUT``: restore files, a folder or a glob with any stage-2 model (task from the model).

One bad file (unreadable, truncated, not an image, wrong-size mask) prints one line and the run goes on; the
exit status is 1 if any file failed.  Results are written atomically, so there is never a partial output.

Under ``torchrun --nproc_per_node N -m diffir restore ...`` each process restores every N-th file (one GPU or a
share of the CPU cores each) and rank 0 prints one summary for all (:mod:`diffir.pipelines.sharding`).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffir.bundled import DEFAULT_MODEL, RESTORE_TASKS
from diffir.cli.arguments import add_threads
from diffir.cli.generation_args import add_generation_arguments, generation_options
from diffir.option_values import pixel_limit, scale_factor, seed, threshold, tile_size, whole_number
from diffir.pipelines.limits import DEFAULT_MAX_OUTPUT_PIXELS

if TYPE_CHECKING:
    from diffir.pipelines.restorer import Restorer
    from diffir.pipelines.sharding import Shard


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", required=True, metavar="FILE|DIR|GLOB",
                   help="an image, a folder (every file in it) or a quoted glob such as 'photos/*.jpg'")
    p.add_argument("-o", "--output", default="results", metavar="DIR",
                   help="output folder, created if needed (default: results); files are named "
                        "<name>_<suffix>.<ext>, see --suffix/--ext")
    p.add_argument("-m", "--model", default=None, metavar="NAME|PATH",
                   help="stage-2 checkpoint path, a `diffir train` run folder (its model.safetensors), a folder of "
                        "official per-network files (HI-Diff: net_g.pth, net_le_dm.pth, net_d.pth; DiffBIR: the SD "
                        "2.1-base checkpoint or diffusers folder, an IRControlNet, a cleaner) or those files "
                        "separated by commas, or a name: "
                        "NAME.safetensors/.pth in $DIFFIR_MODELS (default ~/.cache/diffir/models) or a bundled "
                        f"model; default: the bundled model of --task, else {DEFAULT_MODEL} (bundled)")
    p.add_argument("--task", choices=tuple(RESTORE_TASKS), default=None,
                   help="what to do: realsr_x4 (real photos: noise, JPEG, blur), sr_x4 (clean bicubic-like "
                        "downscales), deblur (motion blur), inpaint (fill --mask holes); without -m, picks that "
                        "task's bundled model (`diffir list`); with -m, checks the model's task and scale")
    p.add_argument("--mask", metavar="FILE|DIR",
                   help="inpainting masks (white = hole, see --mask-hole): one file for all images, or a folder "
                        "holding <name>.*, <name>_mask.* or <name>_mask*.* per image")
    p.add_argument("-s", "--outscale", type=scale_factor, default=None, metavar="F",
                   help="final upscaling of the input (e.g. 3.5 with a x4 model; bicubic; at most 64); default: the "
                        "model's")
    p.add_argument("-t", "--tile", type=tile_size, default="auto", metavar="N|auto",
                   help="tile size in input pixels; 0 = whole image; auto (default) tiles large images only")
    p.add_argument("--tile-overlap", type=whole_number(0, what="an overlap in pixels"), default=32, metavar="N",
                   help="overlap between tiles, blended smoothly (default: 32)")
    p.add_argument("--tile-stats", choices=("global", "local"), default="global",
                   help="global (default): tiles attend with whole-image statistics gathered in a first pass "
                        "(tiled ~ untiled); local: each tile on its own (faster, visible drift)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16", "auto"), default="fp32",
                   help="compute precision (default fp32); auto: the fastest within 2/255 of fp32, measured at start "
                        "on a small built-in image; an image with NaN/Inf in bf16/fp16 is redone in fp32 (warning)")
    p.add_argument("--compile", action="store_true",
                   help="run the network under torch.compile (compile time printed once; falls back to uncompiled "
                        "with a warning if it fails); off by default")
    p.add_argument("--device", default="auto",
                   help="auto (default: CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    add_threads(p, None, " (default: auto; under torchrun the cores divided by the processes per machine)")
    p.add_argument("--seed", type=seed, default=0, metavar="N",
                   help="seed of the stochastic IPR sampling, up to 2**64-1 (default 0: reproducible); negative = "
                        "fresh noise every run")
    p.add_argument("--suffix", default="out", help="output name is <name>_<suffix>.<ext> (default: out; '' = none)")
    p.add_argument("--ext", choices=("auto", "png", "jpg", "webp", "tif"), default="auto",
                   help="output format; auto keeps the input's (default)")
    p.add_argument("--batch-size", type=whole_number(1, what="a number of tiles"), default=1, metavar="N",
                   help="tiles per forward pass (default: 1)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    p.add_argument("--max-pixels", type=pixel_limit, default=100_000_000, metavar="N|none",
                   help="refuse images larger than N pixels (decompression-bomb guard; default: 100,000,000; "
                        "none = no limit)")
    p.add_argument("--max-output-pixels", type=pixel_limit, default=DEFAULT_MAX_OUTPUT_PIXELS, metavar="N|none",
                   help="refuse images whose output (input pixels x max(model scale, outscale)^2) is larger than N "
                        f"pixels, before any work (default: {DEFAULT_MAX_OUTPUT_PIXELS:,}; none = no limit)")
    p.add_argument("--quality", type=whole_number(0, 100, "a JPEG/WebP quality"), default=95, metavar="Q",
                   help="JPEG/WebP quality, 0..100 (default: 95)")
    p.add_argument("--mask-threshold", type=threshold, default=0.5, metavar="T",
                   help="mask values above T (between 0 and 1) are holes (default: 0.5); a mask with holes only in "
                        "its alpha channel is read from the alpha: transparent = hole (opaque with --mask-hole black)")
    p.add_argument("--mask-hole", choices=("white", "black"), default="white",
                   help="which mask colour marks the holes (default: white, as LaMa/DiffIR; black for MAT masks)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars (they are shown only when stderr is a terminal)")
    add_generation_arguments(p)


def run(args: argparse.Namespace) -> int:
    from diffir.errors import DiffIRError, one_line
    from diffir.io.atomic import remove_stale_temporaries
    from diffir.io.images import FORMATS
    from diffir.pipelines.files import check_writable, collect_inputs, is_earlier_output
    from diffir.pipelines.sharding import Shard, finish, gather_counts, shard

    part = Shard.from_env()  # one process unless started by torchrun (WORLD_SIZE > 1)
    out_dir = Path(args.output).expanduser()
    if out_dir.suffix.lower() in {*FORMATS, ".gif"} and not out_dir.is_dir():
        raise DiffIRError(f"-o takes a folder, not a file name ({args.output}); outputs are named "
                          "<name>_<suffix>.<ext> inside it: use --suffix/--ext to name outputs")
    inputs = collect_inputs(args.input)
    # Restoring into the input folder: the outputs of an earlier run are inputs now; do not restore them again.
    earlier = [p for p in inputs if is_earlier_output(p, out_dir, args.suffix)]
    if earlier:
        inputs = [p for p in inputs if p not in earlier]
        if not inputs:
            raise DiffIRError(f"every input is named *_{args.suffix}.*, like the outputs of an earlier run in the "
                              "same folder; give another -o folder or --suffix")
    check_writable(out_dir)
    remove_stale_temporaries(out_dir)  # what a killed run (kill -9, power loss) left behind in this folder
    if not part.enabled:
        counts = _restore_files(args, part, inputs, out_dir)
        return _summary(args, [counts], earlier, out_dir)

    # Several processes: each restores its share and always reaches the gather, even when it cannot load the
    # model (its error is printed now, and counted in the summary), so no process waits for one that gave up.
    # Inputs whose names could give the same output name (same stem) go to the same process, so a name clash
    # is reported exactly as in a single run.
    counts = {"done": 0, "skipped": 0, "failed": 0, "elapsed": 0.0, "stopped": False,
              "listing": hashlib.sha1("\n".join(map(str, inputs)).encode()).hexdigest()}
    try:
        counts.update(_restore_files(args, part, inputs, out_dir, share=lambda files: shard(
            files, part.rank, part.world_size, key=lambda p: p.stem.lower())))
    except Exception as exc:  # noqa: BLE001 - this process is done, but the others must still get its counts
        counts["stopped"] = True
        if isinstance(exc, DiffIRError):
            print(f"diffir: error{part.label}: {one_line(exc)}", file=sys.stderr)
        else:
            traceback.print_exc()
    try:
        every = gather_counts(part, counts)
    except Exception as exc:  # noqa: BLE001 - the outputs are written; only the job-wide summary is lost
        print(f"diffir: error{part.label}: cannot gather the other processes' counts "
              f"({one_line(exc)}); this process's own:", file=sys.stderr)
        _summary(args, [counts], earlier, out_dir, label=part.label)
        # Not 0: a failed status makes torchrun stop the processes still waiting for this one at the gather.
        return 2 if counts["stopped"] else 1
    if part.is_main and not all(c["stopped"] for c in every):  # all stopped: their errors say it all
        _summary(args, every, earlier, out_dir)
    code = _status(every)
    finish(part)
    return 2 if counts["stopped"] else code


def _model_spec(args: argparse.Namespace) -> str:
    """-m as given; else the bundled model of --task; else the default bundled model."""
    from diffir.bundled import model_for_task

    if args.model is not None:
        return args.model
    return model_for_task(args.task) if args.task else DEFAULT_MODEL


def _check_task(args: argparse.Namespace, restorer: Restorer) -> None:
    """-m with --task: refuse a model that does another task (a deblurring model asked for x4 SR, ...).  A file
    records its task and scale only, so realsr_x4 and sr_x4 are told apart for the bundled models alone."""
    from diffir.bundled import BUNDLED
    from diffir.errors import DiffIRError
    from diffir.io.locate import locate_model

    if args.task is None or args.model is None:
        return
    task, scale = RESTORE_TASKS[args.task]
    if restorer.task != task or (task == "sr" and restorer.scale != scale):
        does = f"{restorer.task}{f' x{restorer.scale}' if restorer.task == 'sr' else ''}"
        raise DiffIRError(f"-m {args.model} does {does}, not {args.task}; drop --task, or give a model for it")
    entry = BUNDLED.get(args.model)
    if entry is not None and entry.task != args.task and locate_model(args.model).source == "bundled":
        raise DiffIRError(f"-m {args.model} is the bundled {entry.task} model, not {args.task}; drop -m to get "
                          f"the {args.task} model, or drop --task")


def _restore_files(args: argparse.Namespace, part: Shard, inputs: list[Path], out_dir: Path,
                   share: Callable[[list[Path]], list[Path]] | None = None) -> dict[str, Any]:
    """Load the model and restore ``inputs`` (only ``share(inputs)`` in a job of several processes); counts."""
    from tqdm.auto import tqdm

    from diffir.errors import DiffIRError, print_warning
    from diffir.pipelines.files import output_path
    from diffir.pipelines.restorer import Restorer
    from diffir.pipelines.sharding import fair_threads, rank_device

    restorer = Restorer(
        _model_spec(args), tile=args.tile, tile_overlap=args.tile_overlap, tile_stats=args.tile_stats,
        precision=args.precision, compile=args.compile, device=rank_device(args.device, part),
        seed=args.seed, batch_size=args.batch_size, outscale=args.outscale,
        mask_threshold=args.mask_threshold, mask_hole=args.mask_hole, progress=not args.quiet and part.is_main,
        max_output_pixels=args.max_output_pixels, generation=generation_options(args),
    )
    _check_task(args, restorer)
    inpaint = restorer.task == "inpaint"
    if inpaint and not args.mask:
        raise DiffIRError("this is an inpainting model: give the masks with --mask FILE|DIR "
                          "(white = hole; --mask-hole black for black holes)")
    if args.mask and not inpaint:
        raise DiffIRError(f"--mask given but the model does {restorer.task}, not inpainting")
    mask_spec = Path(args.mask).expanduser() if args.mask else None
    if mask_spec is not None and mask_spec.is_dir():
        # LaMa layout: images and their <stem>_mask*.png side by side; the masks are not inputs.
        masks = {p.resolve() for p in mask_spec.iterdir()}
        inputs = [p for p in inputs if not ("mask" in p.stem.lower() and p.resolve() in masks)] or inputs
    listed = len(inputs)
    if share is not None:  # after the mask filter, which needs the model's task
        inputs = share(inputs)
    threads = args.threads
    if threads is None and restorer.device.type == "cpu":
        # Alone: the fastest count measured now ("auto"; OMP_NUM_THREADS wins); under torchrun: a fair share.
        threads = fair_threads(part) or "auto"
    if threads is not None:
        from diffir.runtime.threads import configure_threads

        threads = configure_threads(threads)
    elif part.enabled and restorer.device.type == "cpu":
        import torch

        threads = torch.get_num_threads()  # shown in the header: each process's share of the cores matters
    max_pixels = args.max_pixels
    restorer.choose_precision()  # auto: measured now, with the thread count in effect
    precision = restorer.calibration.describe() if restorer.calibration else args.precision

    c = restorer.descriptor
    files = f"{len(inputs)} of {listed} file(s)" if part.enabled else f"{len(inputs)} file(s)"
    device = f"{restorer.device} ({threads} thread{'s' * (threads != 1)})" if threads else f"{restorer.device}"
    print(f"diffir restore{part.label}: {files}, {c.architecture} {c.task}"
          f"{f' x{c.scale}' if c.task == 'sr' else ''}, device {device}, {precision}, "
          f"tile {args.tile}, seed {'random' if args.seed is None else args.seed}", file=sys.stderr)
    done, skipped, failed, claimed = 0, 0, 0, {}
    start = time.perf_counter()
    # disable=None: no bar when stderr is not a terminal (a log file would fill with carriage-return updates);
    # in a job of several processes only rank 0 draws one (over its share), N bars would overwrite each other.
    bar = tqdm(inputs, desc="images" + part.label, unit="img", file=sys.stderr,
               disable=True if args.quiet or not part.is_main else None)
    with warnings.catch_warnings():
        warnings.showwarning = print_warning  # restored on exit by catch_warnings
        for path in bar:
            bar.set_postfix_str(path.name, refresh=False)
            target = output_path(path, out_dir, args.suffix, args.ext)
            if target.exists() and not args.overwrite and target not in claimed:
                skipped += 1
                continue
            try:
                target = _restore_one(path, mask_spec, out_dir, restorer, args, claimed, max_pixels)
                claimed[target] = path
                done += 1
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others; Ctrl-C still does
                failed += 1
                tqdm.write(f"diffir: error: {_one_line(exc, path)}", file=sys.stderr)
    bar.close()
    from diffir.runtime.memory import describe_peak

    return {"done": done, "skipped": skipped, "failed": failed, "elapsed": time.perf_counter() - start,
            "peak": describe_peak(restorer.device)}


def _status(every: list[dict[str, Any]]) -> int:
    """1 if any process failed a file or stopped early, else 0."""
    return 1 if any(c["failed"] or c.get("stopped") for c in every) else 0


def _summary(args: argparse.Namespace, every: list[dict[str, Any]], earlier: list[Path], out_dir: Path,
             label: str = "") -> int:
    """Print the one summary line (totals over ``every`` process's counts); the exit status."""
    done, skipped, failed = (sum(c[k] for c in every) for k in ("done", "skipped", "failed"))
    parts = [f"{done} restored"]
    if skipped:
        parts.append(f"{skipped} skipped (output exists; --overwrite to redo)")
    if earlier:
        parts.append(f"{len(earlier)} not restored (named *_{args.suffix}.*: outputs of an earlier run in the input "
                     "folder)")
    if failed:
        parts.append(f"{failed} failed")
    stopped = [r for r, c in enumerate(every) if c.get("stopped")]
    if stopped:
        ranks = ", ".join(map(str, stopped))
        parts.append(f"{len(stopped)} process(es) stopped before restoring their share (rank {ranks}: "
                     "error above)")
    elapsed = max(c["elapsed"] for c in every)
    took = f"{elapsed:.1f} s"
    if len(every) > 1:
        took += f" by {len(every)} processes ({sum(c['elapsed'] for c in every):.1f} s summed)"
        if len({c["listing"] for c in every}) > 1:
            print("diffir: warning: the processes listed different inputs (files added or removed while they "
                  "started): some files may be restored twice or not at all; run again to fill the gaps",
                  file=sys.stderr)
    peak = every[0].get("peak") if len(every) == 1 else ""  # per process; one line cannot hold them all
    print(f"diffir restore{label}: {', '.join(parts)} in {took}{f', {peak}' if peak else ''} -> {out_dir}",
          file=sys.stderr)
    return _status(every)


def _restore_one(path: Path, mask_spec: Path | None, out_dir: Path, restorer: Restorer,
                 args: argparse.Namespace, claimed: dict[Path, Path], max_pixels: int | None) -> Path:
    """Read, restore and atomically write one file; returns the output path.  Raises on any problem."""
    from diffir.pipelines.files import find_mask
    from diffir.pipelines.restore_file import restore_file

    mask = find_mask(path, mask_spec) if mask_spec is not None else None
    return restore_file(restorer, path, out_dir, mask=mask, suffix=args.suffix, ext=args.ext, quality=args.quality,
                        max_pixels=max_pixels, claimed=claimed)


def _one_line(exc: BaseException, path: Path) -> str:
    from diffir.errors import describe_failure, one_line

    text = one_line(describe_failure(exc))
    shown = one_line(path)
    return text if text.startswith(shown) else f"{shown}: {text}"
