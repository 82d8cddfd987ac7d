"""The distributed dictionary as a shared store: a producer on the first
node writes results, a consumer on the last node reads them as they appear.

    python3 store.py [--items 200] [--size 4096]
    dragon-orchestrate run --launcher virtual --nodes 2 -- python3 store.py

- ``DDict(managers_per_node=1, n_nodes=<all nodes>)``: one manager per node,
  each holding the shard of the keys that hash to it, so the producer's
  writes land on every node.
- The producer (``Policy(placement=HOST_ID, host_id=0)``) stores
  ``item-<i>`` -> a dict with a numpy array, then ``done`` -> the count and
  the checksum of what it wrote.
- The consumer (``host_id=<last node>``) attaches the dictionary from its
  serialized form, takes each item as soon as it is there, checks it, and
  stores its own checksum under ``consumer``.
- This process reads both checksums back and compares them.

The last line is ``RESULT {json}``.
"""

import argparse
import json
import os
import sys
import time

import numpy as np


def producer(ser: str, items: int, size: int) -> None:
    from dragon.data.ddict import DDict

    d = DDict.attach(ser)
    node = int(os.environ.get("DRAGON_NODE_ID", "0"))
    total = 0.0
    for i in range(items):
        a = np.random.default_rng(i).standard_normal(size)
        d[f"item-{i}"] = {"i": i, "data": a, "node": node}
        total += float(a.sum())
    d["done"] = {"count": items, "checksum": total, "node": node}
    d.detach()


def consumer(ser: str, items: int) -> None:
    from dragon.data.ddict import DDict

    d = DDict.attach(ser)
    node = int(os.environ.get("DRAGON_NODE_ID", "0"))
    total, waits = 0.0, 0
    deadline = time.monotonic() + 300
    for i in range(items):
        key = f"item-{i}"
        while key not in d:  # written yet? (a store, not a queue: poll)
            waits += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"consumer: {key} never appeared")
            time.sleep(0.005)
        v = d[key]
        if v["i"] != i or v["data"].shape != (v["data"].size,):
            raise ValueError(f"consumer: {key} holds {v!r}")
        total += float(v["data"].sum())
        producer_node = v["node"]
    d["consumer"] = {"count": items, "checksum": total, "node": node, "producer_node": producer_node,
                     "polls_before_ready": waits}
    d.detach()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--size", type=int, default=4096, help="float64 values per item")
    a = ap.parse_args()
    if a.items < 1 or a.size < 1:
        ap.error("--items and --size must be >= 1")
    from dragon.data.ddict import DDict
    from dragon.infrastructure.policy import Policy
    from dragon.native.machine import System
    from dragon.native.process import ProcessTemplate
    from dragon.native.process_group import ProcessGroup

    nodes = System().nnodes
    d = DDict(managers_per_node=1, n_nodes=nodes, total_mem=max(64 << 20, 4 * a.items * a.size * 8))
    try:
        ser = d.serialize()
        t0 = time.perf_counter()
        with ProcessGroup(name="store") as pg:
            pg.add_process(1, ProcessTemplate(consumer, args=(ser, a.items),
                                              policy=Policy(placement=Policy.Placement.HOST_ID, host_id=nodes - 1)))
            pg.add_process(1, ProcessTemplate(producer, args=(ser, a.items, a.size),
                                              policy=Policy(placement=Policy.Placement.HOST_ID, host_id=0)))
            pg.start()
            pg.join(600)
        elapsed = time.perf_counter() - t0
        done, got = d["done"], d["consumer"]
        keys = len(d)
    finally:
        d.destroy()
    same = abs(done["checksum"] - got["checksum"]) <= 1e-9 * max(1.0, abs(done["checksum"]))
    mib = a.items * a.size * 8 / (1 << 20)
    print(f"ddict store: {nodes} manager(s), one per node; {a.items} items of {a.size * 8} bytes ({mib:.1f} MiB)")
    print(f"producer on node {done['node']}, consumer on node {got['node']} (saw items written on node "
          f"{got['producer_node']}); {keys} keys; checksums {'match' if same else 'DIFFER'}: "
          f"{done['checksum']:.6f} / {got['checksum']:.6f}; {elapsed:.2f} s for both")
    print("RESULT " + json.dumps({"nodes": nodes, "producer_node": done["node"], "consumer_node": got["node"],
                                  "count": got["count"], "keys": keys, "match": same}))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
