#!/usr/bin/python3
"""The Python package (python/dragon) against its peers, interleaved in one run.

 (1) A ProcessGroup of --n (256) /bin/true, start to join, inside a running
     runtime: dragon.native.ProcessGroup (from creation to join() returning)
     against the C++ API (build/bin/dragon-bench-group-timer, start to join).
     Both run as the head program of `dragon-orchestrate run`, each time a new
     runtime; every invocation starts 1 + --groups groups and the first is
     dropped (warm-up), the rest's median is the round's value. Also: Python
     in an embedded runtime started once (dragon.start_runtime()), and the
     CLI end to end (runtime start included: not comparable, for reference).
 (2) --callables (64) members running a trivial Python function: ProcessGroup
     against multiprocessing.Process with the "spawn" and "fork" start
     methods (creation to all joined), and a ProcessGroup of as many
     `python3 -c pass` (the interpreter's own start, the floor of (2)); then
     the CPU time of one child of each kind (a member's argv and environment
     run directly; multiprocessing children from os.times()).
 (3) Round trip of a 64-byte message between this process and one child:
     two dragon channels (a Python-callable member echoes) against a
     multiprocessing.Pipe (fork child echoes) with send_bytes/recv_bytes and
     with send/recv (pickled); median round trip of --rtt-n per round.

    bench/python.py [--runs 5] [--quick] [--build DIR]
    bench/python.py --inner group --n 256 --groups 2   (run by (1) under dragon-orchestrate run)
"""
# Only what every child needs is imported at the top: multiprocessing's spawn
# children re-import this file as their main module, and heavier imports here
# would be charged to spawn.
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MSG = b"x" * 64


# ---- what the children run (module level: spawn re-imports this file, so no
# dragon import here; the dragon callables are pickled by value) -----------------

def noop():
    pass


def channel_echo(inbox, outbox, n):
    for _ in range(n):
        outbox.send(inbox.recv())


def pipe_echo(conn, n, raw):
    if raw:
        for _ in range(n):
            conn.send_bytes(conn.recv_bytes())
    else:
        for _ in range(n):
            conn.send(conn.recv())
    conn.close()


# ---- (1) a group of /bin/true -------------------------------------------------------

def python_group(n):
    """Seconds from ProcessGroup creation to join() of n /bin/true (this runtime)."""
    from dragon.native.process import Popen, ProcessTemplate
    from dragon.native.process_group import ProcessGroup

    t0 = time.perf_counter()
    pg = ProcessGroup()
    pg.add_process(n, ProcessTemplate("/bin/true", stdout=Popen.DEVNULL))
    pg.start()
    pg.join()
    dt = time.perf_counter() - t0
    pg.close()
    return dt


def inner_group(n, groups):
    """--inner group: under dragon-orchestrate run, prints "group <s>" per group."""
    for _ in range(1 + groups):
        print(f"group {python_group(n):.6f}", flush=True)
    return 0


def run_groups(argv, env):
    """Runs a group timer; the median of its groups but the first."""
    import statistics
    import subprocess

    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... failed ({r.returncode}): "
                           f"{r.stderr.decode(errors='replace')[-400:]}")
    times = [float(l.split()[1]) for l in r.stdout.decode().splitlines() if l.startswith("group ")]
    if len(times) < 2:
        raise RuntimeError(f"expected 'group <s>' lines, got {r.stdout.decode()[-300:]!r}")
    return statistics.median(times[1:])


def timed(argv, env):
    import subprocess

    t0 = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, timeout=300)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... failed ({r.returncode}): {r.stderr.decode()[-400:]}")
    return dt


# ---- (2) Python callables -----------------------------------------------------------

def dragon_callables(n):
    from dragon.native.process import ProcessTemplate
    from dragon.native.process_group import ProcessGroup

    t0 = time.perf_counter()
    pg = ProcessGroup()
    pg.add_process(n, ProcessTemplate(noop))
    pg.start()
    pg.join()
    dt = time.perf_counter() - t0
    pg.close()
    return dt


def dragon_interpreters(n):
    from dragon.native.process import ProcessTemplate
    from dragon.native.process_group import ProcessGroup

    t0 = time.perf_counter()
    pg = ProcessGroup()
    pg.add_process(n, ProcessTemplate(sys.executable, args=("-c", "pass")))
    pg.start()
    pg.join()
    dt = time.perf_counter() - t0
    pg.close()
    return dt


def mp_processes(method, n, cpu=None):
    """Seconds from creation to all joined of n multiprocessing Processes;
    appends the children's CPU ms per child to `cpu`."""
    import multiprocessing

    ctx = multiprocessing.get_context(method)
    c0 = os.times()
    t0 = time.perf_counter()
    procs = [ctx.Process(target=noop) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    dt = time.perf_counter() - t0
    c1 = os.times()
    if cpu is not None:
        cpu.append((c1.children_user + c1.children_system - c0.children_user - c0.children_system) * 1e3 / n)
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"multiprocessing {method}: {len(bad)} children failed (exit codes {bad[:4]})")
    return dt


# ---- (3) round trips ----------------------------------------------------------------

def child_cpu_ms(argv, env, k=5):
    """Median CPU (user + system) ms of k runs of argv, run directly."""
    import statistics
    import subprocess

    out = []
    for _ in range(k):
        p = subprocess.Popen(argv, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise RuntimeError(f"{argv[:2]} exited with {p.returncode}")
        out.append((ru.ru_utime + ru.ru_stime) * 1e3)
    return statistics.median(out)


def member_boot_cpu_ms():
    """CPU ms of a Python-callable member of noop from its interpreter's start
    to its exit (the member's argv and environment, run outside the runtime)."""
    from dragon.native.process import ProcessTemplate

    t = ProcessTemplate(noop)
    env = dict(os.environ)
    env.update(kv.split("=", 1) for kv in t.environment(None))
    return child_cpu_ms(t.argv(), env)


def rtt_dragon(n, warm):
    """Median µs of n round trips over two channels of this node, the echo
    a Python-callable member."""
    import statistics

    from dragon.channels import Channel
    from dragon.native.process import ProcessTemplate
    from dragon.native.process_group import ProcessGroup

    ping, pong = Channel(capacity=4), Channel(capacity=4)
    pg = ProcessGroup()
    pg.add_process(1, ProcessTemplate(channel_echo, args=(ping, pong, warm + n)))
    pg.start()
    try:
        for _ in range(warm):
            ping.send(MSG)
            pong.recv(60)
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            ping.send(MSG)
            m = pong.recv()
            ts.append(time.perf_counter() - t0)
        assert m == MSG
        pg.join(60)
    finally:
        pg.close()
        ping.destroy()
        pong.destroy()
    return statistics.median(ts) * 1e6


def rtt_pipe(n, warm, raw):
    import multiprocessing
    import statistics

    ctx = multiprocessing.get_context("fork")
    here, there = ctx.Pipe()
    p = ctx.Process(target=pipe_echo, args=(there, warm + n, raw))
    p.start()
    there.close()
    send, recv = (here.send_bytes, here.recv_bytes) if raw else (here.send, here.recv)
    for _ in range(warm):
        send(MSG)
        recv()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        send(MSG)
        m = recv()
        ts.append(time.perf_counter() - t0)
    assert m == MSG
    p.join(60)
    here.close()
    return statistics.median(ts) * 1e6


# ---- driver -------------------------------------------------------------------------

def cpu_busy(seconds=1.0):
    """Percent of all CPUs busy over `seconds` (/proc/stat), before we start."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))


def goal(text, ratio, ok):
    print(f"  goal: {text}: {ratio:.2f}x ({'met' if ok else 'MISSED'})")


def ratio(rows, a, b):
    import statistics

    if not rows.get(a) or not rows.get(b):
        return None
    return statistics.median(rows[a]) / statistics.median(rows[b])


def main():
    import argparse
    import statistics
    import subprocess

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 runs, fewer round trips")
    ap.add_argument("--n", type=int, default=256, help="members of the /bin/true group (1)")
    ap.add_argument("--groups", type=int, default=2, help="timed groups per runtime in (1), after one warm-up")
    ap.add_argument("--callables", type=int, default=64, help="Python-callable members (2)")
    ap.add_argument("--rtt-n", type=int, default=5000, help="round trips per run (3)")
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--inner", choices=["group"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner == "group":
        return inner_group(args.n, args.groups)
    if args.quick:
        args.runs, args.rtt_n = min(args.runs, 2), min(args.rtt_n, 2000)

    sys.path.insert(0, HERE)
    from interleave import rounds, table

    build = os.path.abspath(args.build)
    pypath = os.path.join(build, "python")
    orch = os.path.join(build, "bin", "dragon-orchestrate")
    timer = os.path.join(build, "bin", "dragon-bench-group-timer")
    for f in (orch, timer, os.path.join(pypath, "dragon", "__init__.py")):
        if not os.path.exists(f):
            print(f"{f} not built (cmake --build build)")
            return 1
    sys.path.insert(0, pypath)
    env = dict(os.environ)
    env.pop("DRAGON_LOG_LEVEL", None)
    env["PYTHONPATH"] = pypath + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    os.environ["PYTHONPATH"] = env["PYTHONPATH"]  # the spawn children and members find the package
    catch = (RuntimeError, OSError, subprocess.TimeoutExpired, AssertionError)
    py = "/usr/bin/python3"

    import dragon
    from dragon import DragonError

    catch += (DragonError,)
    dragon.start_runtime()  # once, before anything is timed (the embedded runtime of (1)..(3))
    cores = os.cpu_count()
    busy0 = cpu_busy()
    t_start = time.perf_counter()

    # (1)
    n, g = args.n, args.groups
    cpp = "C++ API (group-timer) under dragon-orchestrate run"
    pyr = "Python ProcessGroup under dragon-orchestrate run"
    cases = {
        cpp: lambda: run_groups([orch, "run", "--", timer, str(n), str(1 + g)], env),
        pyr: lambda: run_groups([orch, "run", "--", py, os.path.abspath(__file__), "--inner", "group",
                                 "--n", str(n), "--groups", str(g)], env),
        "Python ProcessGroup, embedded runtime (dragon.start_runtime)":
            lambda: statistics.median([python_group(n) for _ in range(g)]),
        f"ref.: dragon-orchestrate run -n {n} /bin/true, end to end (+ runtime)": lambda: timed(
            [orch, "run", "-n", str(n), "--", "/bin/true"], env),
    }
    rows, failed = rounds(cases, args.runs, catch)
    table(f"(1) ProcessGroup of {n} /bin/true, start to join inside a running runtime "
          f"({args.runs} runs, interleaved, {cores} cores)", "s", rows, cpp, failed, vs="C++")
    r = ratio(rows, pyr, cpp)
    if r is not None and cpp not in failed and pyr not in failed:
        goal("Python within 1.2x of C++ (both under dragon-orchestrate run)", r, r <= 1.2)
        for name in (cpp, pyr):
            print(f"  per run, {name.split(' under')[0]}: " + " ".join(f"{v:.3f}" for v in rows[name]))
    print()

    # (2)
    m = args.callables
    dr = f"dragon ProcessGroup, {m} Python-callable members"
    sp = f"multiprocessing spawn, {m} Process"
    fk = f"multiprocessing fork, {m} Process"
    cpu = {"spawn": [], "fork": []}
    cases = {
        dr: lambda: dragon_callables(m),
        sp: lambda: mp_processes("spawn", m, cpu["spawn"]),
        fk: lambda: mp_processes("fork", m, cpu["fork"]),
        f"floor: dragon ProcessGroup, {m} x `python3 -c pass`": lambda: dragon_interpreters(m),
    }
    rows, failed = rounds(cases, args.runs, catch)
    table(f"(2) {m} processes of a trivial Python function, creation to all joined "
          f"({args.runs} runs, interleaved)", "s", rows, dr, failed)
    if dr not in failed:
        if sp not in failed:
            rs = ratio(rows, dr, sp)
            goal("dragon well below spawn (dragon / spawn)", rs, rs <= 0.75)
        if fk not in failed:
            print(f"  dragon / fork: {ratio(rows, dr, fk):.2f}x")
    try:
        boot = f"{member_boot_cpu_ms():.1f}"
    except (RuntimeError, OSError, DragonError) as e:
        boot = f"failed ({e})"
    bare = child_cpu_ms([py, "-c", "pass"], env)
    per = ", ".join(f"{k} child {statistics.median(v):.1f} ms" for k, v in cpu.items() if v)
    print(f"  CPU per child: dragon member of noop {boot} ms (`python3 -c pass` {bare:.1f} ms, run directly); {per}")
    print()

    # (3)
    k, warm = args.rtt_n, max(100, args.rtt_n // 10)
    dc = "dragon channels (2 local, a callable member echoes)"
    pb = "multiprocessing.Pipe send_bytes/recv_bytes (fork child)"
    cases = {
        dc: lambda: rtt_dragon(k, warm),
        pb: lambda: rtt_pipe(k, warm, True),
        "multiprocessing.Pipe send/recv, pickled (fork child)": lambda: rtt_pipe(k, warm, False),
    }
    rows, failed = rounds(cases, args.runs, catch)
    table(f"(3) round trip of 64 B, parent <-> one child, median of {k} per run "
          f"({args.runs} runs, interleaved)", "us", rows, dc, failed)
    if dc not in failed and pb not in failed:
        rp = ratio(rows, pb, dc)
        goal("dragon at least 2x faster than Pipe send_bytes (Pipe / dragon)", rp, rp >= 2.0)
    for name in (dc, pb):
        if rows.get(name):
            print(f"  per run, {name.split(' (')[0]}: " + " ".join(f"{v:.1f}" for v in rows[name]))
    print(f"\n(total {time.perf_counter() - t_start:.0f} s; the CPUs were {busy0:.0f}% busy with other work "
          "before the first case: a busy core turns (3)'s spinning into sleeps and wake-ups)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
