#!/usr/bin/python3
"""Why the 1 MiB Queue of bench/mp_bench.py (3b) was bimodal (issue 19):
page faults per message in the consumer under glibc's initial malloc
thresholds (held fixed), its dynamic ones, and dragon's settings
(dragon.infrastructure.memory), interleaved in one run.

Each case runs in its own interpreter (the settings are made at import):
an embedded runtime, one producer child putting --n 1 MiB numpy arrays into
a dragon Queue, this process getting them. Faults are counted with
getrusage around the channel receive and the unpickling separately.

    bench/mp_queue_faults.py [--runs 3] [--n 256] [--build DIR]
"""
import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))


def produce(q, n, size):
    import numpy as np

    item = np.zeros(size // 8, dtype=np.float64)
    for _ in range(n):
        q.put(item)


def inner(n: int) -> None:
    import multiprocessing as mp
    import pickle
    import resource

    import numpy  # noqa: F401  (the consumer is ready before the producer starts)

    import dragon

    def flt():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    dragon.start_runtime()
    ctx = mp.get_context("dragon")
    size = 1 << 20
    q = ctx.Queue()
    p = ctx.Process(target=produce, args=(q, n, size))
    p.start()
    q.get()
    fr = fl = 0
    t0 = time.perf_counter()
    for _ in range(n - 1):
        a = flt()
        d = q._ch.recv(None)
        b = flt()
        pickle.loads(d)
        fl += flt() - b
        fr += b - a
    dt = time.perf_counter() - t0
    p.join()
    dragon.stop_runtime()
    print(f"RESULT {(n - 1) * size / dt / 1e9:.4f} {fr / (n - 1):.1f} {fl / (n - 1):.1f}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--inner", action="store_true")
    a = ap.parse_args()
    pypath = os.path.join(os.path.abspath(a.build), "python")
    sys.path.insert(0, pypath)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (pypath, os.environ.get("PYTHONPATH")) if p)
    if a.inner:
        inner(a.n)
        return 0
    # glibc's dynamic scheme starts at a 128 KiB mmap threshold and moves it
    # as the program frees: where a run ends up depends on the heap's layout.
    # Its starting point, held fixed, is the slow mode made deterministic.
    cases = {"glibc's initial thresholds, fixed (mmap 128 KiB)": {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"},
             "glibc's dynamic thresholds (DRAGON_MALLOC_TUNE=0)": {"DRAGON_MALLOC_TUNE": "0"},
             "dragon's malloc settings (default)": {}}
    got = {k: [] for k in cases}
    for _ in range(a.runs):
        for name, extra in cases.items():
            env = dict(os.environ, **extra)
            r = subprocess.run([sys.executable, __file__, "--inner", "--n", str(a.n), "--build", a.build], env=env,
                               capture_output=True, text=True, timeout=600)
            lines = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
            if r.returncode != 0 or not lines:
                print(f"{name}: failed ({r.returncode}): {r.stderr.strip()[-300:]}")
                continue
            got[name].append(tuple(float(x) for x in lines[-1].split()[1:]))
    print("Queue of 1 MiB numpy arrays, one producer child to this process: consumer page faults per message")
    print(f"{'malloc':55s} {'median GB/s':>12s} {'recv faults':>12s} {'loads faults':>13s} {'vs first':>11s}")
    base = None
    for name, rs in got.items():
        if not rs:
            continue
        rs.sort()
        med = rs[len(rs) // 2]
        base = base or med[0]
        print(f"{name:55s} {med[0]:12.3f} {med[1]:12.0f} {med[2]:13.0f} {med[0] / base:10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
