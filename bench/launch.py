#!/usr/bin/python3
"""Launch N processes as one group and wait for them: dragon-orchestrate against
the posix_spawn floor, mpiexec.hydra and Python multiprocessing (fork), all in
one interleaved run; then the time until all of a large group are running.

    bench/launch.py [--n 1000] [--runs 5] [--running-n 4096] [--build DIR]
"""
import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def timed(argv):
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t1 = time.perf_counter()
    if r.returncode != 0:
        raise RuntimeError(f"{argv[:4]}... failed ({r.returncode}): {r.stderr.decode()[-300:]}")
    return t1 - t0


def noop():
    pass


def mp_fork(n):
    ctx = multiprocessing.get_context("fork")
    t0 = time.perf_counter()
    procs = [ctx.Process(target=noop) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return time.perf_counter() - t0


def all_running(argv_prefix, n, sleeper, seconds=3):
    """Seconds from launch until all n sleepers have written to the FIFO."""
    d = tempfile.mkdtemp()
    fifo = os.path.join(d, "up")
    os.mkfifo(fifo)
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv_prefix + [sleeper, fifo, str(seconds)], stdout=subprocess.DEVNULL)
        fd = os.open(fifo, os.O_RDONLY)
        keep = os.open(fifo, os.O_WRONLY)  # so the FIFO does not hit EOF between writers
        got = 0
        while got < n:
            got += len(os.read(fd, 65536))
        t = time.perf_counter() - t0
        os.close(keep)
        os.close(fd)
        if p.wait() != 0:
            raise RuntimeError("launcher failed")
        return t
    finally:
        shutil.rmtree(d)


def table(title, rows, base_name):
    base = statistics.median(rows[base_name])
    print(title)
    print(f"{'launcher':54} {'median s':>9} {'min s':>7} {'vs dragon':>10}")
    for name, s in rows.items():
        med = statistics.median(s)
        print(f"{name:54} {med:9.3f} {min(s):7.3f} {med / base:9.2f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--running-n", type=int, default=4096)
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "build"))
    args = ap.parse_args()
    b = os.path.abspath(os.path.join(args.build, "bin"))
    orch, floor, sleeper = f"{b}/dragon-orchestrate", f"{b}/dragon-bench-spawn-floor", f"{b}/dragon-bench-sleeper"
    true = shutil.which("true")
    n = args.n

    cases = {
        f"dragon-orchestrate run -n {n} true": lambda: timed([orch, "run", "-n", str(n), "--", true]),
        f"floor: posix_spawn loop of {n} true": lambda: timed([floor, str(n), true]),
        f"multiprocessing fork, {n} no-op Process": lambda: mp_fork(n),
    }
    # The same group over a virtual cluster of 4 agents on this machine: the
    # cost of placement over nodes, one batched start per node, and output
    # and exits through node 0 (the same 2 cores run all of it).
    cases[f"dragon-orchestrate --nodes 4 (virtual) -n {n} true"] = lambda: timed(
        [orch, "run", "--launcher", "virtual", "--nodes", "4", "-n", str(n), "--", true])
    hydra = shutil.which("mpiexec.hydra")
    if hydra:
        cases[f"mpiexec.hydra -n {n} true"] = lambda: timed([hydra, "-n", str(n), true])
    rows = {k: [] for k in cases}
    for name, f in cases.items():  # warm-up
        f()
    for _ in range(args.runs):
        for name, f in cases.items():
            rows[name].append(f())
    table(f"start and join {n} processes, {args.runs} runs each, interleaved, {os.cpu_count()} cores",
          rows, next(iter(rows)))
    if not hydra:
        print(f"{'mpiexec.hydra':54} (not installed)")

    m = args.running_n
    run_rows = {
        f"dragon-orchestrate run -n {m}": [all_running([orch, "run", "-n", str(m), "--"], m, sleeper)
                                           for _ in range(max(1, args.runs // 2))],
    }
    print()
    table(f"time until all {m} processes are running", run_rows, next(iter(run_rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
