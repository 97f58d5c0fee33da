"""The README speed table: the paper's SR x4 network (128x128 LQ) and deblurring network (256x256), random
weights, each timed run a fresh process, fast and reference paths alternating, in fp32 and in bf16.

    python benchmarks/speed.py                # about 15 minutes on a 2-core CPU
    python benchmarks/speed.py --repeats 5 --threads 2

Prints one ``diffir bench`` table per precision (columns: docs/benchmarks.md).  Compare speeds as the ratios
within one table; absolute times move with the machine's load.
"""

from __future__ import annotations

import argparse
import sys

from diffir.cli import main as diffir_main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", default="3", help="timed runs per path (default: 3)")
    p.add_argument("--threads", default="auto", help="auto (measured) or a count (default: auto)")
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    args = p.parse_args()
    for i, precision in enumerate(args.precision):
        if i:
            print()
        code = diffir_main(["bench", "--fresh", "--path", "both", "--precision", precision,
                            "--repeats", args.repeats, "--threads", args.threads])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
