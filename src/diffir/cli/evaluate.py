"""``diffir eval``: metrics, baseline rows, markdown/CSV tables and comparison grids on a benchmark folder.

    D=/path/to/shared/data   # the shared data pack: sr/Set5, sr/Set14, sr/B100, realsr/RealSR, deblur/real_pairs, ...
    diffir eval --model diffir_sr_x4_small --data $D/sr/Set14 --degrade bicubic_x4 -o results/set14
    diffir eval --model diffir_sr_x4_small --data $D/realsr/RealSR      # HR/ + LR/ pairs
    diffir eval --task deblur --data $D/deblur/real_pairs                # sharp/ + blur/ pairs, baseline only
    diffir eval --model inpaint.safetensors --data $D/inpaint/celeba_hq_256 --degrade mask_thick
    diffir eval --task sr --data $D/sr/Set5 --degrade bicubic_x4         # baselines only, no model
    diffir eval --curves experiments/run1 -o plots/                      # training curves (needs [plots])
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diffir.cli.arguments import add_threads
from diffir.option_values import tile_size, whole_number
from diffir.pipelines.limits import MAX_SEED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("what to evaluate")
    src.add_argument("--model", "-m", action="append", help="stage-2 checkpoint (.safetensors/.pth, a run folder, a "
                     "folder of official per-network files or those files separated by commas) or model name; "
                     "repeat for several models in one table; omit to evaluate the baselines only")  # fmt: skip
    src.add_argument("--outputs", action="append", type=_labelled_folder, default=[], metavar="LABEL=DIR",
                     help="a row for a method run elsewhere (a peer tool, another diffir restore): DIR holds its "
                          "output per input, named like the input (or <name>_out.*); repeatable")
    src.add_argument("--data", "-d", type=Path, help="benchmark folder (HR/+LR_bicubic/, HR/+LR/, sharp/+blur/, "
                     "images/+masks/, or a GT-only folder with --degrade)")  # fmt: skip
    src.add_argument("--gt", type=Path, help="explicit GT folder (instead of --data)")
    src.add_argument("--lq", type=Path, help="explicit LQ folder paired with --gt by file name")
    src.add_argument("--masks", "--mask", dest="masks", type=Path,
                     help="explicit mask folder paired with --gt (inpainting); --mask is the same flag")  # fmt: skip
    src.add_argument("--degrade", help="synthesise LQ from GT: bicubic_x2|x3|x4, mask_thick|mask_thin|mask_medium"
                     "|mask_thick_512|mask_thin_512, or any diffir.data degradation name")  # fmt: skip
    src.add_argument("--mask-hole", choices=["white", "black"], default="white",
                     help="which mask value marks the hole (MAT masks: black) [white]")  # fmt: skip
    src.add_argument("--task", choices=["sr", "deblur", "inpaint"],
                     help="task when no --model is given (the model's kind: sr covers restore --task "
                     "sr_x4 and realsr_x4)")
    src.add_argument("--scale", type=whole_number(1, what="an SR scale"), help="SR scale when no --model is given")
    src.add_argument("--limit", type=whole_number(1, what="a number of images"),
                     help="evaluate only the first N images")

    met = parser.add_argument_group("metrics")
    met.add_argument("--metrics", help="comma list of psnr,ssim,psnr_hole,ssim_hole,lpips,lpips_vgg,dists,niqe,fid "
                     "[psnr,ssim; +niqe for SR; +psnr_hole,ssim_hole (over the holes) for inpainting; + lpips, dists "
                     "(and fid for inpainting) when their weights are found]")  # fmt: skip
    met.add_argument("--crop-border", type=whole_number(0, what="a border in pixels"),
                     help="pixels removed per side [scale for SR, else 0]")
    chan = met.add_mutually_exclusive_group()
    chan.add_argument("--y-channel", dest="y_channel", action="store_true", default=None,
                      help="PSNR/SSIM on MATLAB Y [default for SR]")  # fmt: skip
    chan.add_argument("--rgb", dest="y_channel", action="store_false", help="PSNR/SSIM on RGB [default otherwise]")
    met.add_argument("--alexnet", help="torchvision AlexNet weights for LPIPS (alexnet-owt-7be5be79.pth)")
    met.add_argument("--vgg16", help="torchvision VGG16 weights for LPIPS-VGG/DISTS (vgg16-397923af.pth)")
    met.add_argument("--inception", help="pytorch-fid Inception weights for FID (pt_inception-2015-12-05-*.pth)")

    out = parser.add_argument_group("output")
    out.add_argument("--output", "-o", type=Path, help="output folder [results/<data name>]")
    out.add_argument("--overwrite", action="store_true",
                     help="replace the tables of an earlier evaluation in the output folder (default: refuse)")
    out.add_argument("--save-images", action="store_true", help="also write every method's full outputs")
    out.add_argument("--no-grids", action="store_true", help="do not write comparison crops")
    out.add_argument("--grid-crop", type=whole_number(1, what="a crop side in pixels"), default=128,
                     help="crop side of the comparison grids [128]")
    out.add_argument("--no-baselines", action="store_true", help="only the model row")
    out.add_argument("--label", help="name of the model row, one model only [checkpoint file name; the run folder "
                     "for model/params/params_ema.safetensors]")  # fmt: skip
    out.add_argument("--curves", nargs="+", type=Path, metavar="RUN_DIR",
                     help="plot training curves of these runs (log.jsonl/val.jsonl/TensorBoard) and exit")  # fmt: skip
    out.add_argument("--macs-plot", action="store_true",
                     help="also plot PSNR vs MACs with the paper's published points (SR/deblur)")  # fmt: skip

    run_g = parser.add_argument_group("running the model")
    run_g.add_argument("--device", default="auto",
                       help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps [auto]")  # fmt: skip
    run_g.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    run_g.add_argument("--tile", type=tile_size, default="auto", help="LQ tile size, 0 = whole image, auto [auto]")
    add_threads(run_g, "auto", " [auto]")
    run_g.add_argument("--seed", type=whole_number(0, MAX_SEED, "a seed (torch's range)"), default=0,
                       help="seed of the IPR noise and synthetic degradations, 0 .. 2**64-1 [0]")


def _labelled_folder(text: str) -> tuple[str, Path]:
    label, sep, folder = text.partition("=")
    if not sep or not label.strip() or not folder.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: give LABEL=DIR, e.g. realesrgan=results/realesrgan")
    return label.strip(), Path(folder.strip()).expanduser()


def _outputs(pairs: list[tuple[str, Path]]) -> dict[str, Path]:
    from diffir.errors import ConfigError

    labels = [label for label, _ in pairs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--outputs: the row name {next(x for x in labels if labels.count(x) > 1)!r} is given twice")
    return dict(pairs)


def run(args: argparse.Namespace) -> int:
    from diffir.errors import ConfigError

    if args.curves:
        from diffir.evaluation.plots import plot_training_curves

        out = args.output or Path("results") / "curves"
        for path in plot_training_curves(args.curves, out):
            print(f"wrote {path}")
        return 0
    if args.data is None and args.gt is None:
        raise ConfigError("give --data DIR (or --gt DIR), or --curves RUN_DIR")
    if args.macs_plot and args.model and len(args.model) > 1:
        raise ConfigError("--macs-plot places one model among the paper's points: give one -m")

    from diffir.evaluation import EvalOptions, evaluate

    tile = args.tile
    weights = {k: v for k, v in (("alexnet", args.alexnet), ("vgg16", args.vgg16),
                                 ("inception_fid", args.inception)) if v}  # fmt: skip
    opts = EvalOptions(
        metrics=[m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None,
        degrade=args.degrade, task=args.task, scale=args.scale, crop_border=args.crop_border,
        y_channel=args.y_channel, seed=args.seed, limit=args.limit, save_images=args.save_images,
        grids=not args.no_grids, grid_crop=args.grid_crop, baselines=not args.no_baselines,
        mask_hole=args.mask_hole, lq_dir=args.lq, gt_dir=args.gt, mask_dir=args.masks, weights=weights,
        device=args.device, tile=tile, precision=args.precision, model_label=args.label, overwrite=args.overwrite,
        outputs=_outputs(args.outputs),
    )  # fmt: skip
    from diffir.runtime.threads import configure_threads

    configure_threads(args.threads)
    name = (args.data or args.gt).name
    out = args.output or Path("results") / name
    result = evaluate(args.data, out, model=args.model, options=opts)
    from diffir.evaluation.report import markdown_table

    print(markdown_table(result))
    if args.macs_plot and args.model:
        from diffir.evaluation.plots import plot_psnr_vs_macs

        print(f"wrote {plot_psnr_vs_macs(result, args.model[0], out)}")
    return 0
