"""``diffir export onnx MODEL OUT.onnx``: the whole stage-2 inference (condition encoder, unrolled diffusion
sampler with its noise as graph inputs, restoration network) as one ONNX graph with dynamic batch, H and W.

See :mod:`diffir.export.onnx` for the graph's inputs and outputs and ``docs/restore.md`` ("Export to ONNX").
"""

from __future__ import annotations

import argparse

#: Formats ``diffir export`` writes.
FORMATS = ("onnx",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("format", metavar="FORMAT", help=f"what to write: {', '.join(FORMATS)}")
    p.add_argument("model", metavar="MODEL",
                   help="stage-2 checkpoint path, `diffir train` run folder, or model name (see `diffir list`)")
    p.add_argument("output", metavar="OUT", help="file to write, e.g. model.onnx (replaced atomically)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset version, 13 to 20 (default: 17)")
    p.add_argument("--size", default=None, metavar="HxW",
                   help="LQ size the graph is traced with (default 64x64, rounded up to the size multiple); the "
                        "graph then accepts any multiple of the model's size multiple")
    p.add_argument("--no-check", action="store_true",
                   help="skip running the written graph with ONNX Runtime against the torch model")


def run(args: argparse.Namespace) -> int:
    from diffir.errors import DiffIRError

    if args.format not in FORMATS:
        raise DiffIRError(f"unknown export format {args.format!r}; supported: {', '.join(FORMATS)}")

    from diffir.export.onnx import DEFAULT_OPSET, check_opset, describe_graph, export_onnx, parse_size, require_onnx
    from diffir.io.checkpoint import check_output_path
    from diffir.pipelines.model_source import load_inference_model

    opset = DEFAULT_OPSET if args.opset is None else args.opset
    check_opset(opset)
    # Everything the user typed is checked before the (slow) model load and trace.
    check_output_path(args.output)
    if args.size is not None:
        parse_size(args.size)
    require_onnx()
    model = load_inference_model(args.model)
    d = model.descriptor
    size = parse_size(args.size, d.size_multiple) if args.size is not None else None
    path = export_onnx(model, args.output, opset=opset, sample_size=size,
                       check=not args.no_check)
    checked = "" if args.no_check else "; checked against torch with ONNX Runtime"
    print(f"wrote {path}: {type(model).__name__} {d.task} x{d.scale}, {describe_graph(path)}{checked}")
    return 0
