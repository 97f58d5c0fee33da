"""Peak memory of tiled restoration: it should follow the tile size, not the image size.

Each cell restores one image (barbara resized to W×H) with ``diffir.Restorer`` in a **fresh process** and reports
that process's peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) twice: when the tiled inference is done
(condition, statistics pass, blended tiles: the padded float32 prediction) and at the end of ``restore`` (which
then also converts the prediction to a uint8 array).  Also: the RSS right before the restore (interpreter, torch,
the model), the output tile actually used (``tile`` is the largest side; the layout evens out the tiles), and the
restore time (the machine may be shared: compare times within a table only).

The default sizes, 600×380 and 960×540, get the same tiles for tiles of 256 and of 128, so only the output
image differs between them: the float32 canvas (4·3·H·W·16 bytes ×4 SR: 44 and 100 MB) and its conversion.

    python benchmarks/tiled_memory.py                                  # bundled x4 model, tiles auto and 256
    python benchmarks/tiled_memory.py --model diffir_sr_x4_s2          # official-size preset, random weights
    python benchmarks/tiled_memory.py --sizes 960x540 --tiles auto --stats global
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(os.environ.get("DIFFIR_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data"
IMAGE = "sr/Set14/HR/barbara.png"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(args: argparse.Namespace) -> None:
    import numpy as np
    import torch
    from PIL import Image

    import diffir
    import diffir.pipelines.restorer as restorer_module
    from diffir.bundled import BUNDLED

    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.split("x"))
    lq = np.asarray(Image.open(SHARED / IMAGE).convert("RGB").resize((w, h), Image.BICUBIC))
    torch.manual_seed(0)
    model = args.model if args.model in BUNDLED else diffir.create_model(args.model).eval()
    tile = args.tile if args.tile == "auto" else int(args.tile)
    r = diffir.Restorer(model, tile=tile, tile_overlap=args.overlap, tile_stats=args.stats, device="cpu")
    seen: dict[str, object] = {"tile": "whole"}
    run_tiled, run_network = restorer_module.run_tiled, r._run_network

    def tiles_spy(fn, lq, grid, *rest, **kwargs):  # the output tile actually used
        seen["tile"] = f"{grid.tile_w}×{grid.tile_h}"
        return run_tiled(fn, lq, grid, *rest, **kwargs)

    def network_spy(x):  # the peak once the padded prediction exists
        out = run_network(x)
        seen["inference_mb"] = _peak_mb()
        return out

    restorer_module.run_tiled = tiles_spy
    r._run_network = network_spy
    before = _rss_mb()
    t0 = time.perf_counter()
    out = r.restore(lq)
    seconds = time.perf_counter() - t0
    print(json.dumps({"before_mb": before, "peak_mb": _peak_mb(), "seconds": seconds, "out": list(out.shape),
                      **seen}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="diffir_sr_x4_small", help="bundled model or preset (random weights)")
    parser.add_argument("--sizes", default="600x380,960x540", help="comma-separated LR sizes WxH")
    parser.add_argument("--tiles", default="auto,256", help="comma-separated largest LR tile sides (or auto)")
    parser.add_argument("--stats", default="global,local", help="tile_stats values to run")
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--tile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.stats = args.stats.split(",")[0]
        child(args)
        return
    print(f"model {args.model}, overlap {args.overlap}, {args.threads} thread(s); peak RSS of a fresh process")
    print("| LR size | output | tile (used) | stats | RSS before | peak: inference | peak: restore | time |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for tile in args.tiles.split(","):
        for stats in args.stats.split(","):
            for size in args.sizes.split(","):
                cmd = [sys.executable, __file__, "--child", "--model", args.model, "--size", size, "--tile", tile,
                       "--stats", stats, "--overlap", str(args.overlap), "--threads", str(args.threads)]
                res = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if res.returncode:
                    print(res.stderr, file=sys.stderr)
                    continue
                d = json.loads(res.stdout.strip().splitlines()[-1])
                print(f"| {size.replace('x', '×')} | {d['out'][1]}×{d['out'][0]} | {tile} ({d['tile']}) | {stats} | "
                      f"{d['before_mb']:.0f} MB | {d['inference_mb']:.0f} MB | {d['peak_mb']:.0f} MB | "
                      f"{d['seconds']:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
