"""The Python stages of sim_analysis/flow.yaml: statistics of one slab, then a reduce."""

import glob
import json
import sys


def stats(slab_file: str, out_file: str) -> int:
    """Mean, max and total heat of one slab, as JSON."""
    values = [float(line) for line in open(slab_file) if line.strip()]
    if not values:
        print(f"{slab_file}: empty", file=sys.stderr)
        return 1
    with open(out_file, "w") as f:
        json.dump({"slab": slab_file, "cells": len(values), "total": sum(values),
                   "max": max(values), "mean": sum(values) / len(values)}, f)
    return 0


def reduce(pattern: str, out_file: str) -> int:
    """Sums the slabs' statistics into one summary line."""
    parts = [json.load(open(p)) for p in sorted(glob.glob(pattern))]
    total = sum(p["total"] for p in parts)
    cells = sum(p["cells"] for p in parts)
    hottest = max(parts, key=lambda p: p["max"])
    with open(out_file, "w") as f:
        f.write(f"slabs {len(parts)} cells {cells} total {total:.6f} hottest {hottest['slab']}\n")
    print(open(out_file).read(), end="")
    return 0
