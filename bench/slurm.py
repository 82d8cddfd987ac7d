#!/usr/bin/python3
"""256 x /bin/true over the 4 nodes of one Slurm allocation: srun against
dragon-orchestrate with its agents started fresh (by srun), and against a
further 256-process group in a runtime that is already running. All inside
the same allocation of the local 4-node Slurm cluster (scripts/slurm-cluster.sh,
brought up for the run and down after unless it was already up).

    bench/slurm.py [--n 256] [--runs 5] [--build DIR]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(ROOT, "scripts", "slurm-cluster.sh")


def timed(argv, env):
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    t1 = time.perf_counter()
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... failed ({r.returncode}): {r.stderr.decode()[-400:]}")
    return t1 - t0


def inside(args):
    """Runs in the allocation (salloc runs this script): the interleaved rounds."""
    env = dict(os.environ)
    env.pop("DRAGON_LOG_LEVEL", None)
    orch = os.path.join(args.build, "bin", "dragon-orchestrate")
    timer = os.path.join(args.build, "bin", "dragon-bench-group-timer")
    n = str(args.n)
    # -O: the test cluster's nodes have 2 CPUs each; srun refuses 64 tasks per node without it.
    cmds = {
        "srun": ["srun", "-O", "-N4", f"-n{n}", "/bin/true"],
        "fresh": [orch, "run", "-n", n, "--placement", "cyclic", "--", "/bin/true"],
    }
    times = {k: [] for k in cmds}
    for _ in range(args.runs):
        for k, argv in cmds.items():
            times[k].append(timed(argv, env))
    # Further groups in one running runtime: the first group warms up, the rest count.
    out = subprocess.run([orch, "run", "--", timer, n, str(args.runs + 1)], capture_output=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"group timer failed: {out.stderr.decode()[-400:]}")
    groups = [float(x) for x in re.findall(r"^group (\S+)$", out.stdout.decode(), re.M)][1:]
    srun = statistics.median(times["srun"])
    rows = [
        (f"srun -N4 -n{n} /bin/true", times["srun"], None),
        (f"dragon-orchestrate run -n {n} (agents started fresh)", times["fresh"], 1.5),
        (f"a {n}-process group in a running runtime", groups, 0.3),
    ]
    print(f"{n} x /bin/true over 4 Slurm nodes (multiple-slurmd on this host, 2 cores), "
          f"{args.runs} interleaved runs, same allocation (job {os.environ.get('SLURM_JOB_ID')})")
    print(f"{'launcher':<52} {'median s':>9} {'min s':>8} {'vs srun':>8}  goal")
    for name, xs, goal in rows:
        med = statistics.median(xs)
        ratio = med / srun
        verdict = "" if goal is None else f"<= {goal}x {'MET' if ratio <= goal else 'MISSED'}"
        print(f"{name:<52} {med:>9.3f} {min(xs):>8.3f} {ratio:>7.2f}x  {verdict}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        return inside(args)
    was_up = subprocess.run([CLUSTER, "status"], capture_output=True).returncode == 0
    if not was_up:
        subprocess.run([CLUSTER, "up"], check=True, stdout=subprocess.DEVNULL)
    try:
        env = dict(os.environ)
        lines = subprocess.run([CLUSTER, "env"], capture_output=True, check=True).stdout.decode()
        for m in re.finditer(r"^export (\w+)=(.*)$", lines, re.M):
            env[m[1]] = m[2].strip("'\"")
        r = subprocess.run(["salloc", "-N4", "--quiet", sys.executable, os.path.abspath(__file__), "--inside",
                            "--n", str(args.n), "--runs", str(args.runs), "--build", args.build], env=env)
        return r.returncode
    finally:
        if not was_up:
            subprocess.run([CLUSTER, "down"], stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    sys.exit(main())
