"""The evaluation loop behind ``diffir eval``: pairs → (baselines, model) → metrics → tables and grids."""

from __future__ import annotations

import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffir.errors import ConfigError, print_warning
from diffir.evaluation.baselines import baselines_for
from diffir.evaluation.degrade import degradation_task, degrade
from diffir.evaluation.grids import comparison_grid
from diffir.evaluation.items import EvalPair, Layout, detect_layout, pair_files, read_mask, read_rgb, require_dir
from diffir.evaluation.report import EvalResult, write_reports
from diffir.metrics.registry import METRICS, build_metric, describe
from diffir.metrics.weights import MissingWeightsError, find_weights

__all__ = ["EvalOptions", "evaluate", "default_metrics", "model_label"]

# metric -> backbone it needs; run by default only when that backbone's file is found (or its path was given)
_OPTIONAL = {"lpips": "alexnet", "dists": "vgg16", "fid": "inception_fid"}
# pixels a GT side may differ from the output side beyond the modcrop remainder (scale - 1) before the pair is
# rejected: the DeblurGAN demo pairs differ by 2 rows; a wrong-scale pair differs by a whole image side
SIZE_SLACK = 4
_RUN_FILES = {"model", "params", "params_ema"}


def default_metrics(task: str, weights: dict[str, Any] | None = None) -> list[str]:
    """Metrics that run out of the box (PSNR, SSIM; + NIQE for SR; + PSNR/SSIM over the holes for inpainting), plus
    LPIPS/DISTS (and FID for inpainting) when their backbone file is found in ``weights`` or the metric weights
    folder."""
    extra = {"sr": ["niqe"], "inpaint": ["psnr_hole", "ssim_hole"]}.get(task, [])
    names = ["psnr", "ssim", *extra]
    weights = weights or {}
    for name, backbone in _OPTIONAL.items():
        if name == "fid" and task != "inpaint":
            continue
        if backbone in weights:  # given explicitly: run it (a wrong path is reported, not hidden)
            names.append(name)
            continue
        try:
            find_weights(backbone)
        except MissingWeightsError:
            continue
        names.append(name)
    return names


def model_label(model: Any) -> str:
    """Row name of a model: the file stem, or the run folder for the generic names training writes
    (``run/model.safetensors`` -> ``run``; ``run/checkpoints/iter_N/params_ema.safetensors`` -> ``run/iter_N``)."""
    if not isinstance(model, (str, os.PathLike)):
        return "diffir"
    path = Path(model)
    if "," in str(model):  # per-network files (net_g.pth,net_le_dm.pth,...): the folder holding them
        path = Path(str(model).split(",")[0]).resolve().parent
    if path.stem not in _RUN_FILES or path.suffix not in (".safetensors", ".pth", ".pt", ".ckpt"):
        return path.stem
    parent = path.resolve().parent
    if parent.parent.name == "checkpoints":
        return f"{parent.parent.parent.name}/{parent.name}"
    return parent.name or path.stem


def _warn(message: str) -> None:
    """One line on stderr, prefixed like every diffir warning (through tqdm so a progress bar stays intact)."""
    print_warning(message)


@dataclass
class EvalOptions:
    metrics: list[str] | None = None
    degrade: str | None = None
    task: str | None = None  # only needed without a model (baselines only) and without --degrade
    scale: int | None = None
    crop_border: int | None = None  # default: scale for SR, 0 otherwise
    y_channel: bool | None = None  # default: True for SR, False otherwise
    seed: int = 0
    limit: int | None = None
    save_images: bool = False
    grids: bool = True
    grid_crop: int = 128
    baselines: bool = True
    mask_hole: str = "white"
    lq_dir: Path | None = None
    gt_dir: Path | None = None
    mask_dir: Path | None = None
    weights: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    tile: int | str = "auto"
    precision: str = "fp32"
    model_label: str | None = None  # row name of the model (one model only)
    # methods run elsewhere (a peer tool, `diffir restore` with other settings): row name -> folder of its outputs,
    # named by the input's stem (optionally with diffir restore's _out suffix)
    outputs: dict[str, Path] = field(default_factory=dict)
    overwrite: bool = False  # replace the tables of an earlier evaluation in the same output folder


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "method"


def _task_and_scale(restorer: Any, opts: EvalOptions, layout_hint: str | None) -> tuple[str, int]:
    if restorer is not None:
        task, scale = restorer.task, restorer.scale
        if opts.degrade:
            d_task, d_scale = degradation_task(opts.degrade)
            if (d_task == "inpaint") != (task == "inpaint") or (d_task == "sr" and d_scale not in (1, scale)):
                raise ConfigError(f"--degrade {opts.degrade} does not fit a {task} x{scale} model")
        return task, scale
    if opts.degrade:
        task, scale = degradation_task(opts.degrade)
        return opts.task or task, opts.scale or scale
    if layout_hint == "inpaint":
        return "inpaint", 1
    if opts.task is None:
        raise ConfigError("without --model, give --task sr|deblur|inpaint (and --scale for SR), or --degrade")
    return opts.task, opts.scale or (4 if opts.task == "sr" else 1)


def _layout(data: Path | None, opts: EvalOptions, scale: int | None) -> Layout:
    if opts.gt_dir is not None:
        for flag, folder in (("--gt", opts.gt_dir), ("--lq", opts.lq_dir), ("--masks", opts.mask_dir)):
            if folder is not None:
                require_dir(Path(folder), flag)
        if opts.mask_dir is not None:
            return Layout("inpaint", opts.gt_dir, mask_dir=opts.mask_dir, description="--gt + --masks")
        if opts.lq_dir is not None and not opts.degrade:
            return Layout("paired", opts.gt_dir, opts.lq_dir, description="--gt + --lq")
        return Layout("gt_only", opts.gt_dir, description="--gt (GT only)")
    if data is None:
        raise ConfigError("give --data DIR (or --gt DIR with --lq/--masks)")
    return detect_layout(data, scale=scale, degrade=opts.degrade)


def _load_sample(pair: EvalPair, layout: Layout, index: int, scale: int, opts: EvalOptions, task: str):
    """(lq, gt, hole) as uint8 arrays, GT cropped to the output size; notes appended to ``pair.notes``."""
    gt = read_rgb(pair.gt)
    if layout.kind == "gt_only":
        if not opts.degrade:
            raise ConfigError(f"{layout.gt_dir} holds only ground truth: give --degrade (e.g. bicubic_x{scale})")
        d = degrade(opts.degrade, gt, index, opts.seed)
        return d.lq, d.gt, d.mask
    if layout.kind == "inpaint":
        hole = read_mask(pair.mask, opts.mask_hole)
        if hole.shape != gt.shape[:2]:
            raise ConfigError(f"{pair.mask}: mask size {hole.shape} differs from image {gt.shape[:2]}")
        return gt, gt, hole
    lq = read_rgb(pair.lq)
    out_h, out_w = lq.shape[0] * scale, lq.shape[1] * scale
    check_sizes(pair, gt.shape[:2], lq.shape[:2], scale, task)
    if gt.shape[:2] != (out_h, out_w):
        pair.notes.append(f"GT {gt.shape[1]}x{gt.shape[0]} vs output {out_w}x{out_h}: compared on the top-left overlap")
    return lq, gt, None


class SizeMismatch(ConfigError):
    """A GT/output size difference beyond modcrop: the data does not fit the model's (or ``--scale``'s) scale."""


def check_sizes(pair: EvalPair, gt_hw: tuple[int, int], lq_hw: tuple[int, int], scale: int, task: str = "sr") -> None:
    """Raise :class:`SizeMismatch` when a x``scale`` output of the LQ cannot be the GT's size.

    Tolerated: the GT larger or smaller by up to ``scale - 1`` pixels per side (GT not a multiple of the scale,
    LR rounded either way) plus :data:`SIZE_SLACK` pixels (demo pairs cut a couple of rows differently)."""
    out_hw = (lq_hw[0] * scale, lq_hw[1] * scale)
    tol = scale - 1 + SIZE_SLACK
    if all(abs(g - o) <= tol for g, o in zip(gt_hw, out_hw, strict=True)):
        return
    k = gt_hw[1] // lq_hw[1]  # the scale the pair was made for (an integer one if GT = modcrop(k * LQ))
    looks = f"x{k}" if k >= 1 and gt_hw[1] // k == lq_hw[1] else f"x{gt_hw[1] / lq_hw[1]:.2f}"
    fix = f"use x{scale} data (e.g. LR_bicubic/X{scale}/)" if scale > 1 else "use GT and input of the same size"
    raise SizeMismatch(
        f"{pair.name}: GT {gt_hw[1]}x{gt_hw[0]} but the x{scale} output of the {lq_hw[1]}x{lq_hw[0]} input is "
        f"{out_hw[1]}x{out_hw[0]} (the pair looks {looks}): the data does not fit a {task} x{scale} model; {fix}"
    )


def _common_crop(images: dict[str, np.ndarray], gt: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    h = min([gt.shape[0], *(v.shape[0] for v in images.values())])
    w = min([gt.shape[1], *(v.shape[1] for v in images.values())])
    return {k: v[:h, :w] for k, v in images.items()}, gt[:h, :w]


def _build_metrics(names: list[str], crop: int, y: bool, opts: EvalOptions, device: str,
                   warn: Callable[[str], None]):  # fmt: skip
    built, skipped = {}, {}
    for name in names:
        try:
            built[name] = build_metric(name, crop_border=crop, test_y_channel=y, weights=opts.weights,
                                       device=device)  # fmt: skip
        except MissingWeightsError as exc:
            reason = re.sub(rf"^{re.escape(name)}(?: \([^)]*\))?: ", "", " ".join(str(exc).split()))
            skipped[name] = reason
            warn(f"{name} skipped: {reason}")
    return built, skipped


def evaluate(
    data: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    model: Any = None,
    options: EvalOptions | None = None,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
) -> EvalResult:
    """Evaluate ``model`` (a module, checkpoint path or name, or a list of them: one row each; ``None`` = baselines
    and ``options.outputs`` only) on ``data``.

    ``log`` gets progress lines, ``warn`` one-line warnings (default: ``diffir: warning: ...`` on stderr).
    A GT/output size mismatch beyond modcrop (:func:`check_sizes`) stops the run on the first image and
    skips a later image with a warning."""
    from tqdm import tqdm

    warn = warn or _warn
    opts = options or EvalOptions()
    data_path = Path(data) if data is not None else None
    out = Path(out_dir)
    specs = list(model) if isinstance(model, (list, tuple)) else ([] if model is None else [model])
    restorers: dict[str, Any] = {}
    if specs:  # first: a model that cannot be loaded is the more useful error
        from diffir.pipelines.restorer import Restorer

        if opts.model_label and len(specs) > 1:
            raise ConfigError("--label names one model's row; with several models each row is its file's name")
        for spec in specs:
            label = opts.model_label or model_label(spec)
            if label in restorers:
                raise ConfigError(f"two models would share the row name {label!r}; evaluate them separately "
                                  "(--label) or give distinctly named files")
            restorers[label] = Restorer(spec, tile=opts.tile, device=opts.device, precision=opts.precision,
                                        seed=opts.seed)
    for label, folder in opts.outputs.items():
        require_dir(Path(folder), f"--outputs {label}=")
    restorer = next(iter(restorers.values()), None)
    _check_same_task(restorers)
    if not opts.overwrite and (earlier := _earlier_results(out)) is not None:
        raise ConfigError(f"{out}: this folder already holds an evaluation ({earlier.name}); pass --overwrite to "
                          "replace it, or choose another output folder (-o)")
    hint = "inpaint" if data_path is not None and (data_path / "masks").is_dir() else None
    task, scale = _task_and_scale(restorer, opts, hint)
    layout = _layout(data_path, opts, scale)
    pairs = pair_files(layout, opts.limit)
    crop = opts.crop_border if opts.crop_border is not None else (scale if task == "sr" else 0)
    y = opts.y_channel if opts.y_channel is not None else task == "sr"
    names = [describe(m).name for m in (opts.metrics or default_metrics(task, opts.weights))]
    if task != "inpaint" and (masked := [n for n in names if METRICS[n].kind == "hole"]):
        raise ConfigError(f"{masked[0]} scores inpainting holes; this is a {task} evaluation (use psnr, ssim)")
    device = str(restorer.device) if restorer is not None else _metric_device(opts.device)
    metrics, skipped = _build_metrics(names, crop, y, opts, device, warn)

    methods = list(baselines_for(task, scale)) if opts.baselines else []
    if clash := [m for m in restorers if m in methods]:
        raise ConfigError(f"-m {clash[0]}: that row name is a baseline's; give the model --label or rename its file")
    if clash := [m for m in opts.outputs if m in methods or m in restorers]:
        raise ConfigError(f"--outputs {clash[0]}=...: that row name is taken; choose another label")
    methods += [*restorers, *opts.outputs]
    if not methods:
        raise ConfigError("nothing to evaluate: no model and baselines disabled")
    dataset = (data_path or layout.gt_dir).name
    result = EvalResult(dataset, task, scale, methods, names, skipped=skipped)
    result.conventions = {"channel": "Y (MATLAB rgb2ycbcr)" if y else "RGB", "crop_border": str(crop),
                          "data": layout.description, "seed": str(opts.seed)}  # fmt: skip
    if opts.degrade:
        result.conventions["degradation"] = opts.degrade

    baselines = baselines_for(task, scale) if opts.baselines else {}
    per_image = {n: m for n, m in metrics.items() if METRICS[n].kind != "set"}
    # Set metrics (FID) get one accumulator per method sharing the network and the GT features.
    per_set = {n: {meth: m.fork() for meth in methods} for n, m in metrics.items() if METRICS[n].kind == "set"}
    hole_fractions, done, dropped = [], 0, []
    # disable=None: no bar when stderr is not a terminal (logs would fill with carriage-return updates)
    progress = tqdm(pairs, desc=f"eval {dataset}", unit="img", leave=False, disable=None)
    plain = progress.disable  # no terminal: one plain line per image instead of a bar
    started = time.perf_counter()
    _remove_stale_temporaries(out)
    with progress, warnings.catch_warnings():  # the bar is closed (and cleared) before an error is printed
        # A reader's warning (mask selecting no pixel, animated image) as one line, like every eval warning.
        warnings.showwarning = lambda message, *_args, **_kwargs: warn(str(message))
        for index, pair in enumerate(progress):
            if plain:
                print(f"diffir eval {dataset}: image {index + 1}/{len(pairs)} {pair.name} "
                      f"({time.perf_counter() - started:.0f} s so far)", file=sys.stderr, flush=True)
            try:
                lq, gt, hole = _load_sample(pair, layout, index, scale, opts, task)
            except SizeMismatch as exc:
                if index == 0:
                    raise
                warn(f"{exc}; image skipped")
                dropped.append(pair.name)
                continue
            done += 1
            if hole is not None:  # inpainting scores depend on the hole size; a wrong --mask-hole shows up here
                hole_fractions.append(float(hole.mean()))
                pair.notes.append(f"hole {100 * hole_fractions[-1]:.1f}%")
            outputs = {name: fn(lq, hole) for name, fn in baselines.items()}
            for label, each in restorers.items():
                outputs[label] = each.restore(lq, mask=None if hole is None else hole * 255)
            for label, folder in opts.outputs.items():
                outputs[label] = _read_output(output_of(pair, Path(folder), label), lq, scale, task)
            outputs, gt_c = _common_crop(outputs, gt)
            captions = {}
            for i, (method, img) in enumerate(outputs.items()):
                row = _score(pair, method, img, gt_c, per_image, hole)
                result.rows.append(row)
                for accumulators in per_set.values():
                    accumulators[method].add(img, gt_c if i == 0 else None)
                if row.get("psnr") is not None and np.isfinite(row["psnr"]):
                    captions[method] = f"{row['psnr']:.2f}dB"
                if opts.save_images:
                    _save(out / "images" / _slug(method) / f"{pair.name}.png", img)
            if opts.grids:
                grid = comparison_grid(lq, outputs, gt_c, crop=opts.grid_crop, hole=hole, captions=captions)
                _save(out / "grids" / f"{_slug(pair.name)}.png", np.asarray(grid))

    if hole_fractions:
        source = f" (mask files, --mask-hole {opts.mask_hole})" if layout.kind == "inpaint" else ""
        result.conventions["mean hole"] = f"{100 * np.mean(hole_fractions):.1f}% of the pixels{source}"
    for name in (n for n in per_image if METRICS[n].kind == "hole"):
        scored = {r["image"] for r in result.rows if r.get(name) is not None}
        if len(scored) < done:
            result.notes.append(f"{name} over {len(scored)} of {done} images (the others have no hole pixel: "
                                "see the notes of per_image.csv)")
    for name, accumulators in per_set.items():
        for method, acc in accumulators.items():
            result.set_metrics.setdefault(method, {})[name] = acc.compute()
        result.notes.append(f"{name} over {done} images per method: small sets bias FID upward")
    if dropped:
        result.notes.append(f"skipped (GT size does not fit a x{scale} output): {', '.join(dropped)}")
    paths = write_reports(result, out)
    log(f"wrote {paths['markdown']} ({done} images; methods: {', '.join(methods)})")
    return result


def _check_same_task(restorers: dict[str, Any]) -> None:
    kinds = {(r.task, r.scale) for r in restorers.values()}
    if len(kinds) > 1:
        found = ", ".join(f"{label}: {r.task} x{r.scale}" for label, r in restorers.items())
        raise ConfigError(f"the models do different tasks ({found}); evaluate models of one task and scale together")


def _read_output(path: Path, lq: np.ndarray, scale: int, task: str) -> np.ndarray:
    """A method's output read from a file; refused (not silently cropped) when it is not the output size."""
    img = read_rgb(path)
    want = (lq.shape[0] * (scale if task == "sr" else 1), lq.shape[1] * (scale if task == "sr" else 1))
    if img.shape[:2] != want:
        raise ConfigError(f"{path}: {img.shape[1]}x{img.shape[0]}, but the {task} x{scale} output of its "
                          f"{lq.shape[1]}x{lq.shape[0]} input is {want[1]}x{want[0]}; is it the right folder/scale?")
    return img


def output_of(pair: EvalPair, folder: Path, label: str) -> Path:
    """The file in ``folder`` holding a method's output for ``pair``: named by the LQ's (or GT's) stem, with or
    without ``diffir restore``'s ``_out`` suffix, in any image format."""
    from diffir.io.images import IMAGE_EXTENSIONS

    stems = [p.stem for p in (pair.lq, pair.gt) if p is not None] + [pair.name]
    for stem in dict.fromkeys(stems):
        for name in (stem, f"{stem}_out"):
            for ext in IMAGE_EXTENSIONS:
                for candidate in (folder / f"{name}{ext}", folder / f"{name}{ext.upper()}"):
                    if candidate.is_file():
                        return candidate
    raise ConfigError(f"--outputs {label}={folder}: no output for {pair.name} (looked for {stems[0]}.png, "
                      f"{stems[0]}_out.png and other image formats); restore every input into that folder first")


def _earlier_results(out: Path) -> Path | None:
    for name in ("results.md", "results.json", "summary.csv"):
        if (out / name).is_file():
            return out / name
    return None


def _metric_device(name: str) -> str:
    from diffir.pipelines.precision import resolve_device

    return str(resolve_device(name))


def _score(pair: EvalPair, method: str, img: np.ndarray, gt: np.ndarray, metrics: dict,
           hole: np.ndarray | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"image": pair.name, "method": method}
    notes = list(pair.notes)
    for name, metric in metrics.items():
        try:
            if METRICS[name].kind != "hole":
                row[name] = metric(img, gt)
            elif hole is None:
                raise ValueError("no hole mask for this image")
            else:
                row[name] = metric(img, gt, hole[: gt.shape[0], : gt.shape[1]])
        except ValueError as exc:  # e.g. NIQE on an image smaller than one 96x96 block
            row[name] = None
            notes.append(f"{name}: {exc}")
    row["notes"] = "; ".join(notes)
    return row


def _save(path: Path, img: np.ndarray) -> None:
    """Atomic (never a half-written image after a crash), with the umask's permissions."""
    from diffir.io.images import write_image

    write_image(path, img)


def _remove_stale_temporaries(out: Path) -> None:
    """Remove the hidden temporaries a killed evaluation left in the folders it writes images to."""
    from diffir.io.atomic import remove_stale_temporaries

    images = out / "images"
    methods = [p for p in images.iterdir() if p.is_dir()] if images.is_dir() else []
    for folder in (out, out / "grids", *methods):
        remove_stale_temporaries(folder)
