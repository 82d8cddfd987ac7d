#!/usr/bin/python3
"""Start-up plus teardown of a one-process job: dragon-orchestrate against its peers.

Runs every command N times in one interleaved session (so load drifts hit all
alike), and prints median, p90 and the ratio to dragon-orchestrate.

    bench/startup.py [--runs N] [--build DIR]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time


def time_once(argv):
    devnull = os.open(os.devnull, os.O_RDWR)
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
        (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1)])
    _, status = os.waitpid(pid, 0)
    t1 = time.perf_counter_ns()
    os.close(devnull)
    if os.waitstatus_to_exitcode(status) != 0:
        return None  # counted and reported: a failing peer is a fact worth printing
    return (t1 - t0) / 1e6


def slurm_up():
    if not shutil.which("srun") or not shutil.which("sinfo"):
        return False, "srun not installed"
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, timeout=5, text=True)
    except subprocess.TimeoutExpired:
        return False, "sinfo timed out"
    if r.returncode != 0 or "idle" not in r.stdout and "mixed" not in r.stdout:
        return False, "no Slurm cluster up"
    return True, ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30, help="timed runs per command (default 30)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "build"))
    args = ap.parse_args()

    orch = os.path.abspath(os.path.join(args.build, "bin", "dragon-orchestrate"))
    true = shutil.which("true") or "/bin/true"
    cases = [("dragon-orchestrate run -- true", [orch, "run", "--", true])]
    skipped = []
    hydra = shutil.which("mpiexec.hydra")
    if hydra:
        cases.append(("mpiexec.hydra -n 1 true", [hydra, "-n", "1", true]))
    else:
        skipped.append(("mpiexec.hydra -n 1 true", "mpich not installed"))
    up, why = slurm_up()
    if up:
        cases.append(("srun -n 1 true", [shutil.which("srun"), "-n", "1", true]))
    else:
        skipped.append(("srun -n 1 true", why))
    cases.append(("floor: posix_spawn true", [true]))

    samples = {name: [] for name, _ in cases}
    failures = {name: 0 for name, _ in cases}
    for _ in range(args.warmup):
        for _, argv in cases:
            time_once(argv)  # warm-up failures are not counted
    for _ in range(args.runs):  # interleaved
        for name, argv in cases:
            t = time_once(argv)
            if t is None:
                failures[name] += 1
            else:
                samples[name].append(t)

    if not samples[cases[0][0]]:
        print("dragon-orchestrate failed every run", file=sys.stderr)
        return 1
    base = statistics.median(samples[cases[0][0]])
    print(f"start-up + teardown of a 1-process job, {args.runs} runs each, interleaved, {os.cpu_count()} cores")
    print(f"{'command':34} {'median ms':>10} {'p90 ms':>8} {'vs dragon':>10}")
    for name, _ in cases:
        s = sorted(samples[name])
        note = f"  ({failures[name]} of {args.runs} runs failed)" if failures[name] else ""
        if not s:
            print(f"{name:34} {'-':>10} {'-':>8} {'-':>10}{note}")
            continue
        med = statistics.median(s)
        p90 = s[min(len(s) - 1, int(0.9 * len(s)))]
        print(f"{name:34} {med:10.2f} {p90:8.2f} {med / base:9.2f}x{note}")
    for name, why in skipped:
        print(f"{name:34} {'-':>10} {'-':>8} {'-':>10}  ({why})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
