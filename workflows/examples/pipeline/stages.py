"""Python stages passing data through files: generate words, count them per
chunk in parallel, merge the counts."""

import collections
import json
import random


def generate(out_file: str, n: str, seed: str) -> None:
    rng = random.Random(int(seed))
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    with open(out_file, "w") as f:
        for _ in range(int(n)):
            f.write(rng.choice(words) + "\n")


def count(in_file: str, chunk: str, chunks: str, out_file: str) -> None:
    lines = open(in_file).read().split()
    k, m = int(chunk), int(chunks)
    mine = lines[k::m]
    with open(out_file, "w") as f:
        json.dump(collections.Counter(mine), f)


def merge(out_file: str, *parts: str) -> int:
    total = collections.Counter()
    for p in parts:
        total.update(json.load(open(p)))
    with open(out_file, "w") as f:
        for word, c in sorted(total.items()):
            f.write(f"{word} {c}\n")
    return 0 if total else 1
