"""Throughput of the training-data path: degradations (images/s) and dataset loading (items/s).

    python benchmarks/data_throughput.py [--data ../shared/data] [--batch 8] [--device cpu] [--repeats 3]

Degradations run on batches of real BSD200 crops (400² for Real-ESRGAN as in its recipe, 256² otherwise).
Numbers are medians over ``--repeats`` timed calls after one warm-up call.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from diffir.data import ImageFolderDataset, InpaintDataset, build_degradation, seed_worker

CASES = [
    ("bicubic_x4", {}, 256),
    ("realesrgan_x4", {"gt_size": 256}, 400),
    ("realesrgan_x1", {"gt_size": 256}, 400),
    ("diffbir", {"scale": 1}, 256),
    ("motion_blur", {"kernel_dir": "{data}/deblur/kernels", "noise_prob": 0.5}, 256),
    ("lama_masks", {}, 256),
]


def _timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    data, dev = Path(args.data), torch.device(args.device)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {dev}, batch {args.batch}")

    crops = {}
    for size in {c[2] for c in CASES}:
        torch.manual_seed(0)
        ds = ImageFolderDataset(data / "train" / "BSD200", size, augment=False)
        crops[size] = torch.stack([ds[i]["gt"] for i in range(args.batch)]).to(dev)

    print("\ndegradation            input     s/batch   images/s")
    for name, opts, size in CASES:
        opts = {k: (v.format(data=data) if isinstance(v, str) else v) for k, v in opts.items()}
        deg = build_degradation(name, **opts).to(dev)
        gen = torch.Generator().manual_seed(0)
        sec = _timed(lambda deg=deg, size=size, gen=gen: deg(crops[size], gen), args.repeats)
        print(f"{name:<20} {size:>4}²x{args.batch:<3} {sec:9.3f} {args.batch / sec:10.1f}")

    print("\ndataset (BSD200 / CelebA-HQ)          workers   items/s")
    sets = [
        ("ImageFolderDataset 400 hflip", ImageFolderDataset(data / "train" / "BSD200", 400, augment="hflip")),
        ("ImageFolderDataset 256 flip_rot", ImageFolderDataset(data / "train" / "BSD200", 256)),
        ("InpaintDataset 256 (LaMa masks)", InpaintDataset(data / "inpaint" / "celeba_hq_256", 256, repeat=4)),
    ]
    for label, ds in sets:
        for workers in sorted({0, args.workers}):
            loader = DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=workers,
                                worker_init_fn=seed_worker, generator=torch.Generator().manual_seed(0))
            n_batches = min(8, len(loader))
            t = time.perf_counter()
            for i, _ in enumerate(loader):
                if i + 1 == n_batches:
                    break
            sec = time.perf_counter() - t
            print(f"{label:<38} {workers:>7} {n_batches * args.batch / sec:9.1f}")


if __name__ == "__main__":
    main()
