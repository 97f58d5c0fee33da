"""Peak memory of tiled restoration: it should follow the tile size, not the image size.

Each cell restores one image (barbara resized to W×H) in a **fresh process** and reports that process's peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``), the RSS right before the restore (interpreter, torch and the
model), and the restore time.  Two image sizes with the same tile should peak within the size of the output
image itself (the float32 canvas, 4·3·H·W·scale² bytes, about 100 MB at 3840×2160); the tile size is what should
move the peak.

    python benchmarks/tiled_memory.py                                  # bundled x4 model: 480×270 and 960×540,
                                                                       # tiles 256 and 128, both statistics
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
    grids = []
    run_tiled = restorer_module.run_tiled

    def spy(fn, lq, grid, *args, **kwargs):  # records the output tile actually used
        grids.append(f"{grid.tile_w}×{grid.tile_h}")
        return run_tiled(fn, lq, grid, *args, **kwargs)

    restorer_module.run_tiled = spy
    before = _rss_mb()
    t0 = time.perf_counter()
    out = r.restore(lq)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"before_mb": before, "peak_mb": peak, "seconds": seconds, "out": list(out.shape),
                      "tile": grids[0] if grids else "whole"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="diffir_sr_x4_small", help="bundled model or preset (random weights)")
    parser.add_argument("--sizes", default="600x380,960x540", help="comma-separated LR sizes WxH")
    parser.add_argument("--tiles", default="256,128", help="comma-separated LR tile sizes (or auto)")
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
    print("| LR size | output | tile (used) | stats | RSS before restore | peak RSS | time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
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
                out = f"{d['out'][1]}×{d['out'][0]}"
                print(f"| {size.replace('x', '×')} | {out} | {tile} ({d['tile']}) | {stats} | "
                      f"{d['before_mb']:.0f} MB | {d['peak_mb']:.0f} MB | {d['seconds']:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
