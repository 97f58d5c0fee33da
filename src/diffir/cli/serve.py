"""``diffir serve``: the local web app (upload, model, mask painter, options, progress, before/after, download)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffir.cli.arguments import add_threads
from diffir.option_values import pixel_limit, whole_number
from diffir.pipelines.limits import DEFAULT_MAX_OUTPUT_PIXELS

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only); --host 0.0.0.0 lets every "
                        "machine that can reach this one use it, without any login")
    p.add_argument("--port", type=whole_number(1, 65535, "a port"), default=7860, help="port (default: 7860)")
    p.add_argument("--models", metavar="DIR", default=None,
                   help="folder of installed weights offered after the bundled models (default: $DIFFIR_MODELS, "
                        "else ~/.cache/diffir/models)")
    p.add_argument("--device", default="auto", help="auto (default: CUDA, then MPS, then CPU), cpu, cuda:N or mps")
    add_threads(p, "auto", " (default: auto)")
    p.add_argument("--queue", type=whole_number(1, 1000, "a queue length"), default=4, metavar="N",
                   help="jobs that may wait while one runs; more get 'busy' (default: 4)")
    p.add_argument("--max-upload-mb", type=whole_number(1, 4096, "a size in MB"), default=64, metavar="MB",
                   help="largest upload accepted (default: 64)")
    p.add_argument("--max-pixels", type=pixel_limit, default=100_000_000, metavar="N|none",
                   help="refuse images larger than N pixels (decompression-bomb guard; default: 100,000,000)")
    p.add_argument("--max-output-pixels", type=pixel_limit, default=DEFAULT_MAX_OUTPUT_PIXELS, metavar="N|none",
                   help=f"refuse work whose output is larger than N pixels (default: {DEFAULT_MAX_OUTPUT_PIXELS:,})")


def run(args: argparse.Namespace) -> int:
    from diffir.errors import DiffIRError
    from diffir.install import pip_extra

    try:
        import uvicorn

        from diffir.serve.app import create_app
        from diffir.serve.service import Settings
    except ModuleNotFoundError as exc:
        raise DiffIRError(f"diffir serve needs the serve extra ({exc.name} is missing): {pip_extra('serve')}") from None
    models = Path(args.models).expanduser() if args.models else None
    if models is not None and not models.is_dir():
        raise DiffIRError(f"--models {args.models}: no such folder; give the folder holding NAME.safetensors files")
    _check_port(args.host, args.port)
    from diffir.pipelines.precision import resolve_device
    from diffir.runtime.threads import configure_threads

    device = resolve_device(args.device)  # an unknown device fails now, not on the first job
    threads = configure_threads(args.threads) if device.type == "cpu" else None
    settings = Settings(models=models, device=str(device), queue_size=args.queue,
                        max_upload_bytes=args.max_upload_mb << 20, max_pixels=args.max_pixels,
                        max_output_pixels=args.max_output_pixels)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"diffir serve: http://{host}:{args.port}/ on {device}"
          f"{f' ({threads} threads)' if threads else ''}; Ctrl+C stops it", file=sys.stderr)
    if args.host in _LOOPBACK:
        print("diffir serve: only this machine can reach it; --host 0.0.0.0 shares it with your network "
              "(no login: see docs/serve.md)", file=sys.stderr)
    else:
        print(f"diffir: warning: listening on {args.host}: anyone who can reach this machine can use the app "
              "(there is no login); the default --host 127.0.0.1 keeps it to this machine", file=sys.stderr)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")
    return 0


def _check_port(host: str, port: int) -> None:
    """A taken port is one line with the fix, before the server starts (uvicorn would print a traceback-like log)."""
    import socket

    from diffir.errors import DiffIRError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise DiffIRError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port or "
                              "--host") from None
