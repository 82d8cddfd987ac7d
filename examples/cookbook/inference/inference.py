"""An inference service: a numpy model served by a pool of worker processes
behind one request queue, with batching; a client measures requests/s and
latency with 1, 4 and 16 workers.

    python3 inference.py [--workers 1,4,16] [--requests 2000] [--inflight 64] [--batch 32]
    dragon-orchestrate run --launcher virtual --nodes 2 -- python3 inference.py

- The model is a 3-layer MLP (256 -> 512 -> 512 -> 10, ReLU, softmax) whose
  weights come from a seeded generator: every worker builds the same model
  in code, nothing is downloaded.
- Workers are one ProcessGroup spread round-robin over the nodes. Each takes
  a request from the shared queue (blocking), then whatever else is queued up
  to ``--batch`` requests, without waiting for more (``get_nowait``), runs
  the batch as one matrix product chain and answers each request on the
  reply queue.
- The client keeps ``--inflight`` requests outstanding (closed loop: a reply
  lets the next request go) and records each request's time from ``put`` to
  its reply. Replies are checked against the model run here.
- The peer, in the same run: the same model called in this process, one
  request at a time (no service, no batching).

The last line is ``RESULT {json}`` (what the tests and ``make bench`` read).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

SEED = 2024
LAYERS = (256, 512, 512, 10)


def build_model():
    rng = np.random.default_rng(SEED)
    return [(rng.standard_normal((a, b)).astype(np.float32) / np.sqrt(a), np.zeros(b, np.float32))
            for a, b in zip(LAYERS[:-1], LAYERS[1:])]


def forward(model, x: np.ndarray) -> np.ndarray:
    for i, (w, b) in enumerate(model):
        x = x @ w + b
        if i < len(model) - 1:
            np.maximum(x, 0, out=x)
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def make_input(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(LAYERS[0]).astype(np.float32)


def serve(requests, replies, batch: int, ready) -> None:
    """A worker: batches of requests through the model until None."""
    import queue

    model = build_model()
    forward(model, np.zeros((1, LAYERS[0]), np.float32))
    node = int(os.environ.get("DRAGON_NODE_ID", "0"))
    ready.put(node)
    while True:
        first = requests.get()
        if first is None:
            return
        reqs, stop = [first], False
        while len(reqs) < batch:
            try:
                r = requests.get_nowait()
            except queue.Empty:
                break
            if r is None:
                stop = True
                break
            reqs.append(r)
        probs = forward(model, np.stack([x for _, x in reqs]))
        for (rid, _), p in zip(reqs, probs):
            replies.put((rid, p, node, len(reqs)))
        if stop:
            return


def run_service(workers: int, args) -> dict:
    from dragon.infrastructure.policy import Policy
    from dragon.native.process import ProcessTemplate
    from dragon.native.process_group import ProcessGroup
    from dragon.native.queue import Queue

    requests, replies, ready = Queue(), Queue(), Queue()
    inputs = [make_input(i) for i in range(args.requests)]
    with ProcessGroup(policy=Policy(distribution=Policy.Distribution.ROUNDROBIN), name=f"serve{workers}") as pg:
        pg.add_process(workers, ProcessTemplate(serve, args=(requests, replies, args.batch, ready),
                                                  env={"OMP_NUM_THREADS": "1"}))  # one core per worker
        pg.start()
        worker_nodes = sorted(ready.get(timeout=300) for _ in range(workers))
        sent_at = {}
        latencies, batches, answered, out = [], [], 0, {}
        nxt = 0
        t0 = time.perf_counter()
        while nxt < min(args.inflight, args.requests):
            sent_at[nxt] = time.perf_counter()
            requests.put((nxt, inputs[nxt]))
            nxt += 1
        while answered < args.requests:
            rid, p, node, size = replies.get(timeout=300)
            latencies.append(time.perf_counter() - sent_at.pop(rid))
            batches.append(size)
            answered += 1
            if rid % 97 == 0:
                out[rid] = p
            if nxt < args.requests:
                sent_at[nxt] = time.perf_counter()
                requests.put((nxt, inputs[nxt]))
                nxt += 1
        elapsed = time.perf_counter() - t0
        for _ in range(workers):
            requests.put(None)
        pg.join(300)
    model = build_model()
    for rid, p in out.items():
        if not np.allclose(p, forward(model, inputs[rid][None, :])[0], atol=1e-5):
            raise AssertionError(f"request {rid}: the service's answer differs from the model's")
    lat = np.array(latencies) * 1e3
    return {"workers": workers, "requests_per_s": args.requests / elapsed, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "mean_batch": float(np.mean(batches)),
            "worker_nodes": worker_nodes, "checked": len(out)}


def run_inline(args) -> dict:
    model = build_model()
    inputs = [make_input(i) for i in range(args.requests)]
    forward(model, inputs[0][None, :])
    lat = []
    t0 = time.perf_counter()
    for x in inputs:
        t = time.perf_counter()
        forward(model, x[None, :])
        lat.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - t0
    lat = np.array(lat) * 1e3
    return {"workers": 0, "requests_per_s": args.requests / elapsed, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "mean_batch": 1.0, "worker_nodes": [], "checked": 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,4,16", help="worker counts to measure, comma-separated")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--inflight", type=int, default=64, help="requests the client keeps outstanding")
    ap.add_argument("--batch", type=int, default=32, help="largest batch a worker runs")
    args = ap.parse_args()
    try:
        counts = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        ap.error(f"--workers: expected numbers separated by commas, got {args.workers!r}")
    if not counts or min(counts) < 1 or args.requests < 1 or args.inflight < 1 or args.batch < 1:
        ap.error("--workers, --requests, --inflight and --batch must be >= 1")
    from dragon.native.machine import System

    nodes = System().nnodes
    inline = run_inline(args)
    rows = [run_service(w, args) for w in counts]
    print(f"inference: MLP {'-'.join(map(str, LAYERS))}, {args.requests} requests, {args.inflight} in flight, "
          f"batches up to {args.batch}; {nodes} node(s)")
    print(f"| {'server':<26} | {'requests/s':>10} | {'p50 ms':>8} | {'p99 ms':>8} | {'mean batch':>10} | {'vs inline':>9} |")
    print(f"|{'-' * 28}|{'-' * 12}|{'-' * 10}|{'-' * 10}|{'-' * 12}|{'-' * 11}|")
    for r in [inline] + rows:
        name = "inline, one at a time" if r["workers"] == 0 else f"{r['workers']} workers on nodes {sorted(set(r['worker_nodes']))}"
        print(f"| {name:<26} | {r['requests_per_s']:>10.0f} | {r['p50_ms']:>8.2f} | {r['p99_ms']:>8.2f} | "
              f"{r['mean_batch']:>10.1f} | {r['requests_per_s'] / inline['requests_per_s']:>8.2f}x |")
    print("RESULT " + json.dumps({"nodes": nodes, "inline": inline, "service": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
