#!/usr/bin/python3
"""multiprocessing.Pool of the dragon start method against the standard
library's Pool (fork), concurrent.futures.ProcessPoolExecutor (fork), Dask
distributed (a LocalCluster of worker processes, one thread each) and
mpi4py.futures (MPIPoolExecutor under Open MPI's mpiexec), interleaved in
one run, every one with the same number of workers (issue 21).

 (1) tasks/s of 20 000 no-op apply_async (submit) calls, then every result;
 (2) items/s of map over 100 000 items, default chunking (Dask: client.map
     of 10 000 items; mpi4py: executor.map, its default chunksize of 1);
 (3) seconds from Pool() to the first result with 256 workers (dragon,
     stdlib Pool and the executor; Dask and mpi4py would need 256 worker
     processes of ~100 MB each: not run), and to every worker having run a
     task;
 (4) the floor under (1): one worker's round trip of a bare Queue message
     (dragon Queue, a task-sized pickle), as tasks/s;
 (5) (1) with the pool spread over 4 virtual nodes (ours only);
 (6) each worker's memory after a task, against a stdlib fork worker's
     (goal: at most 1.5x): PSS (its private pages plus its share of those it
     shares, from /proc/PID/smaps_rollup) and its private pages alone, in a
     pool of --workers and of 64 (where what the workers share with their
     zygote, or with the stdlib pool's parent, is split more ways).

    bench/pool.py [--runs 3] [--workers 2] [--quick]

Every case runs in its own interpreter (the dragon ones start their own
runtime), once per round after a warm-up round; the tables give medians,
minima and the ratio to the first row.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
N_APPLY = 20000
N_MAP = 100000
N_MAP_DASK = 10000


def noop():
    return None


def sq(x):
    return x * x


def pid_of_worker(_=None):
    return os.getpid()


def pid_after(t):
    time.sleep(t)
    return os.getpid()


def memory_kb(pid: int, what: str) -> int:
    """Pss, or the private (unshared) pages, of pid from smaps_rollup."""
    keys = ("Pss:",) if what == "pss" else ("Private_Clean:", "Private_Dirty:")
    total, seen = 0, 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(keys):
                total += int(line.split()[1])
                seen += 1
    if seen != len(keys):
        raise RuntimeError(f"no {what} for {pid}")
    return total


# ---- one measurement, in its own interpreter ---------------------------------------

def _pool_of(kind, workers):
    import multiprocessing as mp

    if kind == "dragon":
        import dragon  # noqa: F401

        return mp.get_context("dragon").Pool(workers)
    if kind == "fork":
        return mp.get_context("fork").Pool(workers)
    raise ValueError(kind)


def measure(kind: str, what: str, workers: int, n: int) -> float:
    if kind in ("dragon", "fork"):
        if what in ("first", "all"):
            t0 = time.perf_counter()
            p = _pool_of(kind, workers)
            if what == "first":
                p.apply(noop)
            else:  # every worker has run a task: rounds of 10 ms tasks until all have answered
                seen: set = set()
                while len(seen) < workers:
                    seen.update(p.map(pid_after, [0.01] * workers, chunksize=1))
            dt = time.perf_counter() - t0
            p.terminate()
            p.join()
            return dt
        with _pool_of(kind, workers) as p:
            p.map(sq, range(workers * 4), chunksize=1)  # every worker up
            if what == "apply":
                t0 = time.perf_counter()
                rs = [p.apply_async(noop) for _ in range(n)]
                for r in rs:
                    r.get()
                return n / (time.perf_counter() - t0)
            if what == "map":
                t0 = time.perf_counter()
                p.map(sq, range(n))
                return n / (time.perf_counter() - t0)
            if what in ("pss", "uss"):
                seen: set = set()
                while len(seen) < workers:
                    seen.update(p.map(pid_after, [0.01] * workers, chunksize=1))
                return sum(memory_kb(x, what) for x in seen) / len(seen)
        raise ValueError(what)
    if kind == "executor":
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        t0 = time.perf_counter()
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as ex:
            if what == "first":
                ex.submit(noop).result()
                return time.perf_counter() - t0
            list(ex.map(sq, range(workers * 4)))
            t0 = time.perf_counter()
            if what == "apply":
                fs = [ex.submit(noop) for _ in range(n)]
                for f in fs:
                    f.result()
            elif what == "map":
                list(ex.map(sq, range(n)))
            return n / (time.perf_counter() - t0)
    if kind == "dask":
        from dask.distributed import Client, LocalCluster

        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=50) as cluster, Client(cluster) as c:
            c.gather(c.map(sq, range(workers * 4), pure=False))
            t0 = time.perf_counter()
            if what == "apply":
                fs = [c.submit(noop, pure=False) for _ in range(n)]
            else:
                fs = c.map(sq, range(n), pure=False)
            c.gather(fs)
            return n / (time.perf_counter() - t0)
    if kind == "floor":
        import dragon  # noqa: F401
        import multiprocessing as mp

        ctx = mp.get_context("dragon")
        a, b = ctx.Queue(), ctx.Queue()
        w = ctx.Process(target=_echo, args=(a, b, n))
        w.start()
        task = (1, 0, noop, (), {})
        b.put(task)
        a.get()
        t0 = time.perf_counter()
        for _ in range(n):
            b.put([task])
            a.get()
        dt = time.perf_counter() - t0
        w.join()
        return n / dt
    raise ValueError(kind)


def _echo(a, b, n):
    for _ in range(n + 1):
        b.get()
        a.put([(1, 0, (True, None))])


def mpi4py_main(what: str, n: int) -> None:
    """Rank 0 under `mpiexec -n W+1 python -m mpi4py.futures`: the executor
    of the other ranks."""
    from mpi4py.futures import MPIPoolExecutor

    with MPIPoolExecutor() as ex:
        list(ex.map(sq, range(64)))
        t0 = time.perf_counter()
        if what == "apply":
            fs = [ex.submit(noop) for _ in range(n)]
            for f in fs:
                f.result()
        else:
            list(ex.map(sq, range(n)))
        print(json.dumps(n / (time.perf_counter() - t0)))


# ---- the driver -----------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--big", type=int, default=256, help="workers of (3)")
    ap.add_argument("--quick", action="store_true", help="fewer rounds and tasks (a smoke run)")
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--only", help="run only the sections whose number starts with this")
    ap.add_argument("--one", nargs=4, metavar=("KIND", "WHAT", "WORKERS", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--mpi4py", nargs=2, metavar=("WHAT", "N"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        kind, what, workers, n = a.one
        print(json.dumps(measure(kind, what, int(workers), int(n))))
        return 0
    if a.mpi4py:
        mpi4py_main(a.mpi4py[0], int(a.mpi4py[1]))
        return 0
    build = os.path.abspath(a.build)
    pypath = os.path.join(build, "python")
    if not os.path.exists(os.path.join(pypath, "dragon")):
        print(f"{pypath}/dragon not built (cmake --build build)")
        return 1
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (pypath, os.environ.get("PYTHONPATH")) if p))
    sys.path.insert(0, HERE)
    from interleave import rounds, table

    runs = 1 if a.quick else a.runs
    n_apply = 2000 if a.quick else N_APPLY
    n_map = 10000 if a.quick else N_MAP
    n_dask = 1000 if a.quick else N_MAP_DASK
    w = a.workers
    me = [sys.executable, os.path.realpath(__file__)]
    orch = os.path.join(build, "bin", "dragon-orchestrate")

    def one(kind, what, workers, n, prefix=(), timeout=600):
        def run():
            out = subprocess.run([*prefix, *me, "--one", kind, what, str(workers), str(n)], env=env,
                                 capture_output=True, text=True, timeout=timeout)
            if out.returncode != 0:
                raise RuntimeError(f"{kind} {what}: exit {out.returncode}: {out.stderr.strip()[-400:]}")
            return float(out.stdout.strip().splitlines()[-1])
        return run

    def mpi(what, workers, n):
        def run():
            out = subprocess.run(["mpiexec.openmpi", "--oversubscribe", "--allow-run-as-root", "-n", str(workers + 1),
                                  sys.executable, "-m", "mpi4py.futures", *me[1:], "--mpi4py", what, str(n)],
                                 env=env, capture_output=True, text=True, timeout=600)
            if out.returncode != 0:
                raise RuntimeError(f"mpi4py {what}: exit {out.returncode}: {out.stderr.strip()[-400:]}")
            return float(out.stdout.strip().splitlines()[-1])
        return run

    def section(num, title, unit, cases, base, label="pool"):
        if a.only and not num.startswith(a.only):
            return
        rows, failed = rounds(cases, runs)
        table(f"({num}) {title}", unit, rows, base, failed, vs=base, label=label)
        print(flush=True)

    print(f"{w} workers each; median of {runs} interleaved rounds after a warm-up\n", flush=True)
    section("1", f"{n_apply} no-op apply_async (submit) calls, then every result", "tasks/s", {
        "dragon Pool": one("dragon", "apply", w, n_apply),
        "stdlib Pool (fork)": one("fork", "apply", w, n_apply),
        "ProcessPoolExecutor (fork)": one("executor", "apply", w, n_apply),
        f"Dask LocalCluster ({n_dask} calls)": one("dask", "apply", w, n_dask),
        "mpi4py.futures MPIPoolExecutor": mpi("apply", w, n_apply),
        "floor: bare dragon Queue round trip per task": one("floor", "rtt", 1, n_apply),
    }, "dragon Pool")
    section("2", f"map of {n_map} items, default chunking", "items/s", {
        "dragon Pool": one("dragon", "map", w, n_map),
        "stdlib Pool (fork)": one("fork", "map", w, n_map),
        "ProcessPoolExecutor (fork)": one("executor", "map", w, n_map),
        f"Dask LocalCluster (client.map, {n_dask} items)": one("dask", "map", w, n_dask),
        "mpi4py.futures MPIPoolExecutor": mpi("map", w, n_map),
    }, "dragon Pool")
    section("3", f"Pool({a.big}) to its first result, and to every worker having run a task", "s", {
        "dragon Pool, first result": one("dragon", "first", a.big, 1),
        "stdlib Pool (fork), first result": one("fork", "first", a.big, 1),
        "ProcessPoolExecutor (fork), first result": one("executor", "first", a.big, 1),
        "dragon Pool, every worker": one("dragon", "all", a.big, 1),
        "stdlib Pool (fork), every worker": one("fork", "all", a.big, 1),
    }, "dragon Pool, first result")
    section("5", f"{n_apply} no-op apply_async calls, {2 * w} workers over 4 virtual nodes (--split-cpus)", "tasks/s", {
        "dragon Pool, 1 node": one("dragon", "apply", 2 * w, n_apply),
        "dragon Pool, 4 virtual nodes": one("dragon", "apply", 2 * w, n_apply,
                                            prefix=(orch, "run", "--launcher", "virtual", "--nodes", "4",
                                                    "--split-cpus", "--")),
    }, "dragon Pool, 1 node")
    for sub, (what, name) in zip("abcd", [(m, n) for n in (w, 64) for m in ("pss", "uss")]):
        title = "PSS" if what == "pss" else "private pages"
        section(f"6{sub}", f"memory of a worker after a task: {title}, {name} workers", "kB", {
            "dragon Pool": one("dragon", what, name, 0),
            "stdlib Pool (fork)": one("fork", what, name, 0),
        }, "stdlib Pool (fork)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
