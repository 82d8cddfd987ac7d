"""Python stages passing data through the run's distributed dictionary
(dragon.workflows.ddict()): generate words, count them per chunk in
parallel, merge the counts into a file."""

import collections
import random

from dragon import workflows


def generate(key: str, n: str, seed: str) -> None:
    rng = random.Random(int(seed))
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    d = workflows.ddict()
    d[key] = [rng.choice(words) for _ in range(int(n))]
    d.detach()


def count(key: str, chunk: str, chunks: str, out_key: str) -> None:
    d = workflows.ddict()
    words = d[key]
    k, m = int(chunk), int(chunks)
    d[out_key] = dict(collections.Counter(words[k::m]))
    d.detach()


def merge(out_file: str, *keys: str) -> int:
    d = workflows.ddict()
    total = collections.Counter()
    for k in keys:
        total.update(d[k])
    d.detach()
    with open(out_file, "w") as f:
        for word, c in sorted(total.items()):
            f.write(f"{word} {c}\n")
    return 0 if total else 1
