#!/usr/bin/python3
"""PMI: the cost of wiring up real MPI jobs, dragon-orchestrate --pmi against
MPICH's own launcher (mpiexec.hydra), interleaved in one run.

 (a) start to exit of MPI_Init + MPI_Barrier + MPI_Finalize (tests/mpi/
     mpi_init_finalize, MPICH 4.0.2) with --n ranks on this machine
     (oversubscribed): `dragon-orchestrate run -n N --pmi simple` against
     `mpiexec.hydra -n N`.
 (b) PMI fence time seen by the ranks: build/bin/shim_fence_bench (the Cray-PMI
     shim's barrier/allgather) with --fence-n ranks over 4 virtual nodes under
     `--pmi cray`, against mpiexec.hydra with 4 proxies on loopback addresses
     (-launcher fork -hosts 127.0.0.1..4), which serves the same shim PMI-1
     over PMI_FD. Rank 0 prints `fence_us median=<x> min=<y>`. Skipped when
     shim_fence_bench is not built.

    bench/pmi.py [--n 64] [--fence-n 256] [--runs 5] [--build DIR]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

from interleave import rounds, table


def run(argv, env=None, timeout=600):
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=timeout)
    t1 = time.perf_counter()
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:8])}... failed ({r.returncode}): {r.stderr.decode(errors='replace')[-400:]}")
    return t1 - t0, r.stdout.decode(errors="replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--fence-n", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "build"))
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    b = os.path.join(build, "bin")
    orch = os.path.join(b, "dragon-orchestrate")
    init_fin = os.path.join(b, "mpi", "mpi_init_finalize")
    fence = os.path.join(b, "shim_fence_bench")
    hydra = shutil.which("mpiexec.hydra")
    env = dict(os.environ)
    env.pop("DRAGON_LOG_LEVEL", None)
    if not hydra:
        print("mpiexec.hydra not installed (scripts/install-deps.sh bench): nothing to compare against")

    # (a) MPI_Init + MPI_Finalize of n ranks
    n = args.n
    if not os.path.exists(init_fin):
        print(f"{init_fin} not built (mpicc.mpich missing: scripts/install-deps.sh bench): part (a) skipped")
    else:
        cases = {f"dragon-orchestrate run -n {n} --pmi simple": lambda: run(
            [orch, "run", "-n", str(n), "--pmi", "simple", "--", init_fin], env)[0]}
        if hydra:
            cases[f"mpiexec.hydra -n {n}"] = lambda: run([hydra, "-n", str(n), init_fin], env)[0]
        rows, failed = rounds(cases, args.runs)
        table(f"MPI_Init + MPI_Barrier + MPI_Finalize, {n} ranks (MPICH 4.0.2), start to exit, "
              f"{args.runs} runs each, interleaved, {os.cpu_count()} cores", "s", rows, next(iter(rows)), failed)
    print()

    # (b) fence time inside the ranks
    m = args.fence_n
    if not os.path.exists(fence):
        print(f"{fence} not built yet (the Cray-PMI shim's benchmark): part (b) skipped")
        return 0
    fence_env = dict(env)
    fence_env["LD_LIBRARY_PATH"] = os.path.join(build, "lib") + (
        ":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")

    def fence_us(argv, e):
        _, out = run(argv, e)
        mm = re.search(r"fence_us median=([\d.]+) min=([\d.]+)", out)
        if not mm:
            raise RuntimeError(f"no 'fence_us median=.. min=..' line in: {out[-300:]!r}")
        return float(mm[1]), float(mm[2])

    per_node = -(-m // 4)
    hosts = ",".join(f"127.0.0.{i + 1}:{per_node}" for i in range(4))
    fcases = {f"dragon-orchestrate --nodes 4 (virtual) -n {m} --pmi cray": lambda: fence_us(
        [orch, "run", "--launcher", "virtual", "--nodes", "4", "-n", str(m), "--pmi", "cray", "--", fence], env)}
    if hydra:
        fcases[f"mpiexec.hydra 4 proxies (fork, loopback) -n {m}, PMI_FD"] = lambda: fence_us(
            [hydra, "-launcher", "fork", "-hosts", hosts, "-n", str(m), fence], fence_env)
    rows, failed = rounds(fcases, args.runs)
    medians = {k: [v[0] for v in s] for k, s in rows.items()}
    table(f"PMI fence inside shim_fence_bench, {m} ranks over 4 nodes, rank 0's median per run "
          f"(median and min over {args.runs} runs)", "us", medians, next(iter(medians)), failed)
    best = {k: min(v[1] for v in s) for k, s in rows.items() if s}
    for k, v in best.items():
        print(f"  fastest single fence, {k}: {v:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
