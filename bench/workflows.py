#!/usr/bin/python3
"""Workflows: end-to-end rate of a DAG of trivial steps run by
`dragon-orchestrate run flow.yaml`, against Snakemake (Debian's snakemake,
local executor) and GNU make -j, on the same cores, interleaved in one run.

The DAG: a root step, --steps - 2 independent steps after it, a sink after
all of them; every step is `touch <file>` (the file is what Snakemake and
make need as a target). Each tool gets the same cores (--cores / -j N, N =
this machine's cpus; Dragon uses the runtime's cpus, the same ones). The
time is end to end: the tool's own start-up (for Dragon: the runtime's), DAG
building, every process, teardown. With --mpi-steps M, a second table: M
independent steps of a 4-rank MPICH hello (tests/mpi/mpi_hello), Dragon with
--pmi simple against Snakemake and make running mpiexec.hydra -n 4.

    bench/workflows.py [--steps 1000] [--mpi-steps 100] [--runs 3] [--build DIR]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

from interleave import rounds


def timed(argv, cwd, env=None, timeout=1800):
    t0 = time.perf_counter()
    r = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=timeout)
    t = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({r.returncode}): {r.stderr.decode(errors='replace')[-400:]}")
    return t


def fresh(d):
    """An empty work folder for one run (the tools must not find earlier outputs)."""
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def write_dragon(d, n, cmd):
    with open(os.path.join(d, "flow.yaml"), "w") as f:
        f.write("name: bench\nparameters:\n  i: [" + ", ".join(str(i) for i in range(n - 2)) + "]\nsteps:\n")
        f.write(f"  - {{name: root, type: {cmd['type']}, command: {cmd['cmd']}, args: {cmd['args']('root')}{cmd['extra']}}}\n")
        f.write(f"  - {{name: work, type: {cmd['type']}, command: {cmd['cmd']}, args: {cmd['args']('w-${i}')}, "
                f"depends: [root]{cmd['extra']}}}\n")
        f.write(f"  - {{name: sink, type: {cmd['type']}, command: {cmd['cmd']}, args: {cmd['args']('sink')}, "
                f"depends: [work]{cmd['extra']}}}\n")


def write_snakefile(d, n, shell):
    with open(os.path.join(d, "Snakefile"), "w") as f:
        f.write(f"IDS = range({n - 2})\n\n")
        f.write("rule sink:\n    input: expand('out/w-{i}', i=IDS)\n    output: 'out/sink'\n"
                f"    shell: '{shell('out/sink')}'\n\n")
        f.write("rule work:\n    input: 'out/root'\n    output: 'out/w-{i}'\n"
                f"    shell: '{shell('{output}')}'\n\n")
        f.write(f"rule root:\n    output: 'out/root'\n    shell: '{shell('out/root')}'\n")


def write_makefile(d, n, shell):
    ws = " ".join(f"out/w-{i}" for i in range(n - 2))
    with open(os.path.join(d, "Makefile"), "w") as f:
        f.write(f"all: out/sink\nout/sink: {ws}\n\t{shell('$@')}\n")
        f.write(f"out/w-%: out/root\n\t{shell('$@')}\nout/root:\n\tmkdir -p out\n\t{shell('$@')}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--mpi-steps", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "build"))
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    orch = os.path.join(build, "bin", "dragon-orchestrate")
    cpus = len(os.sched_getaffinity(0))
    snakemake = shutil.which("snakemake")
    make = shutil.which("make")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMPI_MCA_")}
    top = tempfile.mkdtemp(prefix="dragon-bench-wf-")

    def suite(title, n, dragon_cmd, shell, dragon_extra_args=()):
        dirs = {k: os.path.join(top, k) for k in ("dragon", "snakemake", "make")}

        def dragon():
            d = fresh(dirs["dragon"])
            os.makedirs(os.path.join(d, "out"))
            write_dragon(d, n, dragon_cmd)
            return timed([orch, "run", "--progress", "none", *dragon_extra_args, "flow.yaml"], d, env)

        def snake():
            d = fresh(dirs["snakemake"])
            os.makedirs(os.path.join(d, "out"))
            write_snakefile(d, n, shell)
            return timed([snakemake, "--cores", str(cpus), "--quiet", "-s", "Snakefile"], d, env)

        def mk():
            d = fresh(dirs["make"])
            write_makefile(d, n, shell)
            return timed([make, "-s", f"-j{cpus}"], d, env)

        cases = {"dragon-orchestrate run flow.yaml": dragon}
        if snakemake:
            cases[f"snakemake --cores {cpus} (local)"] = snake
        if make:
            cases[f"make -j{cpus}"] = mk
        rows, failed = rounds(cases, args.runs)
        print(f"\n{title}: {n} steps, {cpus} cpus, {args.runs} runs (median)")
        w = 40
        print(f"{'tool':{w}} {'seconds':>9} {'steps/s':>9} {'dragon speed-up':>16}")
        base = statistics.median(rows["dragon-orchestrate run flow.yaml"]) if rows.get(
            "dragon-orchestrate run flow.yaml") and "dragon-orchestrate run flow.yaml" not in failed else None
        for name, vals in rows.items():
            if name in failed:
                print(f"{name:{w}} (failed: {failed[name]})")
                continue
            med = statistics.median(vals)
            ratio = f"{med / base:15.2f}x" if base else f"{'-':>16}"
            print(f"{name:{w}} {med:9.3f} {n / med:9.1f} {ratio}")

    suite("Trivial steps (touch) in a fan-out/fan-in DAG", args.steps,
          {"type": "process", "cmd": "touch", "args": lambda f: f'["out/{f}"]', "extra": ""},
          lambda f: f"touch {f}")
    hello = os.path.join(build, "bin", "mpi", "mpi_hello")
    hydra = shutil.which("mpiexec.hydra")
    if args.mpi_steps > 0 and os.path.exists(hello) and hydra:
        suite("4-rank MPICH hello steps (Dragon --pmi simple, the others mpiexec.hydra -n 4)", args.mpi_steps,
              {"type": "mpi", "cmd": hello, "args": lambda f: f'["{f}"]', "extra": ", nprocs: 4, pmi: simple"},
              lambda f: f"{hydra} -n 4 {hello} > /dev/null && touch {f}")
    elif args.mpi_steps > 0:
        print("\n(MPI steps skipped: build/bin/mpi/mpi_hello or mpiexec.hydra missing: scripts/install-deps.sh mpi)")
    shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
