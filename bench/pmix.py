#!/usr/bin/python3
"""PMIx: the cost of wiring up a real Open MPI job, dragon-orchestrate --pmi
pmix against Open MPI's own launcher and, when a Slurm cluster is up, against
Slurm's PMIx plugin, interleaved in one run.

Start to exit of MPI_Init + MPI_Barrier + MPI_Finalize (tests/mpi/
mpi_init_finalize built with mpicc.openmpi: Open MPI 4.1.4, OpenPMIx 4.2.2)
with --n ranks on one node of this machine (oversubscribed):
  - `dragon-orchestrate run -n N --pmi pmix`
  - `mpirun.openmpi --oversubscribe --allow-run-as-root -n N` (ORTE)
  - `srun --mpi=pmix -O -N1 -n N`, when `scripts/slurm-cluster.sh status` or
    `sinfo` says a cluster is up: then every case runs inside one `salloc -N1`
    (the first two without the SLURM_* variables, so that neither the runtime
    nor mpirun switches to Slurm's launcher). The cluster is not brought up.

--hang-check: how often `mpirun.openmpi -n 128` of the same program does not
end within --hang-timeout seconds (default 5 tries of 60 s; on a timeout the
whole session is killed, ranks included). A fact about the peer, reported
separately; it is not part of the timing table.

    bench/pmix.py [--n 32] [--runs 5] [--build DIR] [--hang-check [--hang-n 128]
                  [--hang-tries 5] [--hang-timeout 60]]
"""
import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid

from interleave import rounds, table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(ROOT, "scripts", "slurm-cluster.sh")
MPIRUN = shutil.which("mpirun.openmpi")
# mpirun refuses root without this (or OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1);
# ranks started directly by a PMIx server need nothing for root.
MPIRUN_ARGS = ["--oversubscribe", "--allow-run-as-root"]


def without_slurm(env):
    return {k: v for k, v in env.items() if not k.startswith("SLURM_")}


def tagged_pids(tag):
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if tag in f.read().split(b"\0"):
                    found.append(int(d))
        except OSError:
            continue
    return found


def run(argv, env, timeout=300):
    """Start to exit of argv in its own session; on a timeout the session and
    anything carrying its tag is killed and TimeoutExpired raised."""
    tag_value = uuid.uuid4().hex
    env = dict(env, DRAGON_BENCH_TAG=tag_value)
    tag = f"DRAGON_BENCH_TAG={tag_value}".encode()
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.communicate()
        for pid in tagged_pids(tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        raise
    t1 = time.perf_counter()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:8])}... failed ({p.returncode}): {err.decode(errors='replace')[-400:]}")
    return t1 - t0


def timing(args, slurm):
    build = os.path.abspath(args.build)
    orch = os.path.join(build, "bin", "dragon-orchestrate")
    prog = os.path.join(build, "bin", "ompi", "mpi_init_finalize")
    if not os.path.exists(prog):
        print(f"{prog} not built (mpicc.openmpi missing: scripts/install-deps.sh bench): nothing to time")
        return 1
    env = dict(os.environ)
    env.pop("DRAGON_LOG_LEVEL", None)
    local = without_slurm(env)
    n = str(args.n)
    dragon = f"dragon-orchestrate run -n {n} --pmi pmix"
    cases = {dragon: lambda: run([orch, "run", "-n", n, "--pmi", "pmix", "--", prog], local)}
    if MPIRUN:
        cases[f"mpirun.openmpi {' '.join(MPIRUN_ARGS)} -n {n}"] = lambda: run([MPIRUN, *MPIRUN_ARGS, "-n", n, prog], local)
    else:
        print("mpirun.openmpi not installed (scripts/install-deps.sh mpi)")
    if slurm:
        # -O: the test cluster's nodes have 2 CPUs each; srun refuses more tasks than CPUs without it.
        cases[f"srun --mpi=pmix -O -N1 -n {n} (job {env.get('SLURM_JOB_ID')})"] = lambda: run(
            ["srun", "--mpi=pmix", "-O", "-N1", f"-n{n}", prog], env)
    rows, failed = rounds(cases, args.runs)
    table(f"MPI_Init + MPI_Barrier + MPI_Finalize, {n} ranks on one node (Open MPI 4.1.4, OpenPMIx 4.2.2), "
          f"start to exit, {args.runs} runs each, interleaved, {os.cpu_count()} cores", "s", rows, dragon, failed)
    return 0


def hang_check(args):
    """How often mpirun.openmpi -n N fails to end in time: bounded tries, the session killed on a timeout."""
    prog = os.path.join(os.path.abspath(args.build), "bin", "ompi", "mpi_init_finalize")
    if not MPIRUN or not os.path.exists(prog):
        print("hang check skipped: mpirun.openmpi or the Open MPI mpi_init_finalize is missing")
        return
    env = without_slurm(dict(os.environ))
    hung, failed, times = 0, 0, []
    for _ in range(args.hang_tries):
        try:
            times.append(run([MPIRUN, *MPIRUN_ARGS, "-n", str(args.hang_n), prog], env, timeout=args.hang_timeout))
        except subprocess.TimeoutExpired:
            hung += 1
        except (RuntimeError, OSError):
            failed += 1
    done = f", the others ended in median {statistics.median(times):.2f} s" if times else ""
    print(f"mpirun.openmpi {' '.join(MPIRUN_ARGS)} -n {args.hang_n} mpi_init_finalize: {hung} of {args.hang_tries} "
          f"tries did not end within {args.hang_timeout} s (session killed), {failed} failed{done}")


def slurm_env():
    """The environment in which salloc finds a running cluster, or None."""
    env = dict(os.environ)
    if subprocess.run([CLUSTER, "status"], capture_output=True).returncode == 0:
        lines = subprocess.run([CLUSTER, "env"], capture_output=True, check=True).stdout.decode()
        for m in re.finditer(r"^export (\w+)=(.*)$", lines, re.M):
            env[m[1]] = m[2].strip("'\"")
        return env
    if shutil.which("sinfo") and subprocess.run(["sinfo", "-h"], capture_output=True, env=env,
                                                 timeout=10).returncode == 0:
        return env
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--hang-check", action="store_true", help="also count how often mpirun.openmpi -n 128 hangs")
    ap.add_argument("--hang-n", type=int, default=128)
    ap.add_argument("--hang-tries", type=int, default=5)
    ap.add_argument("--hang-timeout", type=float, default=60)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:  # in the allocation that salloc made for us
        return timing(args, slurm=True)
    env = slurm_env()
    if env is None:
        print("no Slurm cluster up (scripts/slurm-cluster.sh up): srun --mpi=pmix left out")
        rc = timing(args, slurm=False)
    else:
        rc = subprocess.run(["salloc", "-N1", "--quiet", sys.executable, os.path.abspath(__file__), "--inside",
                             "--n", str(args.n), "--runs", str(args.runs), "--build", args.build], env=env).returncode
    if args.hang_check:
        print()
        hang_check(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
