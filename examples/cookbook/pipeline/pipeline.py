"""A processing pipeline: stages of worker processes connected by bounded
queues (back-pressure), spread over the runtime's nodes, against the same
pipeline written with the standard library's multiprocessing (fork) in the
same run.

    python3 pipeline.py [--items 4000] [--stage1 2] [--stage2 2] [--size 2048] [--depth 64]
    dragon-orchestrate run --launcher virtual --nodes 2 -- python3 pipeline.py

source (this process) -> [queue, depth] -> stage 1 (FFT of a signal made
from the item's seed) -> [queue, depth] -> stage 2 (spectrum peak and
checksum) -> [queue] -> sink (this process).

Every queue holds at most ``--depth`` items: a fast stage blocks in ``put``
until the next stage catches up, so memory stays bounded whatever the rates.
The Dragon pipeline's stages are one ProcessGroup whose members go round-robin
over the nodes (its queues are ``dragon.native.queue.Queue``: any node
reaches them); the stdlib one uses ``multiprocessing.get_context("fork")``
Processes and Queues on this node. Both run the same functions on the same
items; their checksums must agree. The clock starts once every worker has
started and said it is ready, so it times the flow of items, not process
start-up. The last line is ``RESULT {json}``.
"""

import argparse
import json
import os
import sys
import threading
import time

import numpy as np


def make_signal(seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(size)
    freq = 1 + seed % (size // 4)
    return np.sin(2 * np.pi * freq * t / size) + 0.1 * rng.standard_normal(size)


def stage1(inq, outq, size: int, ready) -> None:
    """Transform: the magnitude spectrum of each item's signal."""
    np.fft.rfft(np.zeros(size))  # imports and plans loaded before the clock starts
    ready.put("stage1")
    while True:
        item = inq.get()
        if item is None:
            return
        spectrum = np.abs(np.fft.rfft(make_signal(item, size)))
        outq.put((item, spectrum.astype(np.float32)))


def stage2(inq, outq, ready) -> None:
    """Reduce: the spectrum's peak bin and a checksum, tagged with the node."""
    node = int(os.environ.get("DRAGON_NODE_ID", "0"))
    ready.put("stage2")
    while True:
        got = inq.get()
        if got is None:
            return
        item, spectrum = got
        outq.put((item, int(spectrum.argmax()), float(spectrum.sum()), node))


def feed(q, items: int, stage1_workers: int, waits: list) -> None:
    import queue

    for i in range(items):
        try:
            q.put_nowait(i)
        except queue.Full:  # stage 1 is behind: wait for room (back-pressure)
            waits[0] += 1
            q.put(i)
    for _ in range(stage1_workers):
        q.put(None)


def run_pipeline(make_queue, start_stage, args) -> dict:
    """Runs one pipeline; ``start_stage(fn, fn_args, n)`` starts n workers."""
    q1, q2, q3, ready = make_queue(args.depth), make_queue(args.depth), make_queue(0), make_queue(0)
    stop1 = start_stage(stage1, (q1, q2, args.size, ready), args.stage1)
    stop2 = start_stage(stage2, (q2, q3, ready), args.stage2)
    for _ in range(args.stage1 + args.stage2):  # every worker started and imported: time the flow only
        ready.get(timeout=300)
    t0 = time.perf_counter()
    waits = [0]
    feeder = threading.Thread(target=feed, args=(q1, args.items, args.stage1, waits))
    feeder.start()
    peaks_ok, checksum, nodes = 0, 0.0, {}
    for _ in range(args.items):
        item, peak, total, node = q3.get()
        peaks_ok += peak == 1 + item % (args.size // 4)
        checksum += total
        nodes[node] = nodes.get(node, 0) + 1
    elapsed = time.perf_counter() - t0
    feeder.join()
    for _ in range(args.stage2):
        q2.put(None)
    stop1()
    stop2()
    return {"seconds": elapsed, "items_per_s": args.items / elapsed, "peaks_ok": peaks_ok, "checksum": checksum,
            "source_waits": waits[0],
            "stage2_nodes": {str(k): v for k, v in sorted(nodes.items())}}


def dragon_pipeline(args) -> dict:
    from dragon.infrastructure.policy import Policy
    from dragon.native.process import ProcessTemplate
    from dragon.native.process_group import ProcessGroup
    from dragon.native.queue import Queue

    def start_stage(fn, fn_args, n):
        pg = ProcessGroup(policy=Policy(distribution=Policy.Distribution.ROUNDROBIN), name=fn.__name__)
        pg.add_process(n, ProcessTemplate(fn, args=fn_args))
        pg.start()

        def stop():
            pg.join(300)
            pg.close()

        return stop

    return run_pipeline(lambda depth: Queue(maxsize=depth), start_stage, args)


def stdlib_pipeline(args) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("fork")

    def start_stage(fn, fn_args, n):
        procs = [ctx.Process(target=fn, args=fn_args) for _ in range(n)]
        for p in procs:
            p.start()

        def stop():
            for p in procs:
                p.join(300)
                if p.exitcode != 0:
                    raise RuntimeError(f"{fn.__name__}: a worker exited with {p.exitcode}")

        return stop

    return run_pipeline(lambda depth: ctx.Queue(maxsize=depth), start_stage, args)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=4000)
    ap.add_argument("--stage1", type=int, default=2, help="stage 1 workers")
    ap.add_argument("--stage2", type=int, default=2, help="stage 2 workers")
    ap.add_argument("--size", type=int, default=2048, help="samples per signal")
    ap.add_argument("--depth", type=int, default=64, help="items each inter-stage queue holds")
    args = ap.parse_args()
    if min(args.items, args.stage1, args.stage2, args.depth) < 1 or args.size < 8:
        ap.error("--items, --stage1, --stage2 and --depth must be >= 1, --size >= 8")
    from dragon.native.machine import System

    nodes = System().nnodes
    # The stdlib pipeline forks this process: run it before any thread of the
    # Dragon one exists (a fork after threads is unsafe), then the Dragon one.
    std = stdlib_pipeline(args)
    drg = dragon_pipeline(args)
    if abs(std["checksum"] - drg["checksum"]) > 1e-6 * abs(std["checksum"]):
        print(f"pipeline: checksums differ: stdlib {std['checksum']!r}, dragon {drg['checksum']!r}", file=sys.stderr)
        return 1
    print(f"pipeline: {args.items} items of {args.size} samples, {args.stage1}+{args.stage2} workers, "
          f"queues {args.depth} deep; {nodes} node(s)")
    print(f"| {'pipeline':<32} | {'nodes':>5} | {'seconds':>8} | {'items/s':>9} | {'vs stdlib':>9} | "
          f"{'source waited':>13} |")
    print(f"|{'-' * 34}|{'-' * 7}|{'-' * 10}|{'-' * 11}|{'-' * 11}|{'-' * 15}|")
    print(f"| {'stdlib multiprocessing (fork)':<32} | {1:>5} | {std['seconds']:>8.3f} | {std['items_per_s']:>9.0f} | "
          f"{1.0:>8.2f}x | {std['source_waits']:>13} |")
    print(f"| {'dragon ProcessGroup + Queue':<32} | {nodes:>5} | {drg['seconds']:>8.3f} | {drg['items_per_s']:>9.0f} | "
          f"{drg['items_per_s'] / std['items_per_s']:>8.2f}x | {drg['source_waits']:>13} |")
    print("(source waited: puts that found the first queue full and blocked until stage 1 made room)")
    print("RESULT " + json.dumps({"nodes": nodes, "items": args.items, "stdlib": std, "dragon": drg}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
