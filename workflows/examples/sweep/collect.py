"""Gathers the sweep's results into one table, most intervals last."""

import glob
import sys


def table(pattern: str, out_file: str) -> int:
    rows = sorted((line.split() for p in glob.glob(pattern) for line in open(p)), key=lambda r: int(r[0]))
    with open(out_file, "w") as f:
        f.write("intervals ranks pi error\n")
        for r in rows:
            f.write(" ".join(r) + "\n")
    return 0 if rows else 1
