#!/usr/bin/python3
"""multiprocessing with the dragon start method against the standard
library's fork, forkserver and spawn, interleaved in one run (issue 19).

 (1) --procs (64) Processes of a no-op target, from the first start() to
     the last join().
 (2) Round trip of a small pickled object ((1, "x" * 20)) and of 64 bytes
     (send_bytes/recv_bytes) between this process and one child over a
     Pipe: the child echoes --rtt-n times; the median is reported.
 (3) Queue, one producer child to this process: 64 B objects (msgs/s) and
     1 MiB numpy arrays (GB/s).
 (4) The same Queue with its producer on another node of a 2-node virtual
     cluster (--split-cpus), GB/s, against raw TCP over loopback (one
     socket, 1 MiB writes) measured in the same run.
 (5) Locks and friends (issue 20), dragon against fork: (5a) an
     uncontended Lock acquire+release in this process (ns); (5b) Event.set
     to a waiting child's wake-up (half an Event ping-pong, us); (5c)
     Barrier rounds/s with 8 and (5d) 32 parties (this process one of
     them); (5e) Value increments/s under its lock by 8 processes.
     (5b-5e) also across a 2-node virtual cluster (--split-cpus, a runtime
     of its own in a child interpreter): node 1's processes reach node 0's
     objects through node 0's agent, as another host's must
     (DRAGON_SYNC_THROUGH_HOME=1), or map node 0's pool, as the same
     host's do. (5f) A process of node 1 takes and releases node 0's Lock,
     us per pair, those two ways, against the floor of two TCP round trips
     over loopback.

The dragon cases run in an embedded runtime started once before the rounds
(its start is bench/startup.py's business); (4) runs in a child interpreter
with a 2-node embedded runtime.

    bench/mp_bench.py [--runs 5] [--quick] [--build DIR] [--only 3b]

(Not bench/multiprocessing.py: a file of that name in bench/ would be what
every benchmark here gets for `import multiprocessing`.)
"""
import argparse
import os
import socket
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
SMALL = (1, "x" * 20)
MSG = b"x" * 64


# ---- what the children run (module level: spawn re-imports this file) -----------

def noop():
    pass


def echo(conn, n, raw):
    if raw:
        for _ in range(n):
            conn.send_bytes(conn.recv_bytes())
    else:
        for _ in range(n):
            conn.send(conn.recv())
    conn.close()


def produce(q, n, size):
    if size <= 64:
        item = b"x" * size
    else:
        import numpy as np

        item = np.zeros(size // 8, dtype=np.float64)
    for _ in range(n):
        q.put(item)


def tcp_sink(port, total):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(1 << 20)
    got = 0
    while got < total:
        n = s.recv_into(buf)
        if not n:
            break
        got += n
    s.sendall(b"k")
    s.close()


def tcp_pong(port, n):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(n):
        s.sendall(s.recv(1))
    s.close()


def lock_pairs(lock, n, q):
    from dragon.native.machine import current

    for _ in range(200):  # warm: the lane opens, the home's block is learnt
        lock.acquire()
        lock.release()
    t0 = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    q.put((current().h_uid, (time.perf_counter() - t0) / n * 1e6))


# ---- cases ---------------------------------------------------------------------

def event_pong(ping, pong, n):
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong.set()


def barrier_party(b, n):
    for _ in range(n):
        b.wait()


def increment(v, n, go, done):
    go.wait()
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    done.release()


def lock_case(ctx, n):
    def run():
        lock = ctx.Lock()
        acquire, release = lock.acquire, lock.release
        t0 = time.perf_counter()
        for _ in range(n):
            acquire()
            release()
        return (time.perf_counter() - t0) / n * 1e9
    return run


def event_case(ctx, n):
    def run():
        ping, pong = ctx.Event(), ctx.Event()
        p = ctx.Process(target=event_pong, args=(ping, pong, n + 10))
        p.start()
        times = []
        for i in range(n + 10):
            t0 = time.perf_counter()
            ping.set()
            pong.wait()
            pong.clear()
            if i >= 10:
                times.append(time.perf_counter() - t0)
        p.join()
        times.sort()
        return times[len(times) // 2] / 2 * 1e6
    return run


def barrier_case(ctx, parties, n):
    def run():
        b = ctx.Barrier(parties)
        ps = [ctx.Process(target=barrier_party, args=(b, n + 1)) for _ in range(parties - 1)]
        for p in ps:
            p.start()
        b.wait()  # everyone runs: time the rounds, not the starts
        t0 = time.perf_counter()
        for _ in range(n):
            b.wait()
        dt = time.perf_counter() - t0
        for p in ps:
            p.join()
        return n / dt
    return run


def value_case(ctx, procs, n):
    def run():
        v, go, done = ctx.Value("q", 0), ctx.Event(), ctx.Semaphore(0)
        ps = [ctx.Process(target=increment, args=(v, n, go, done)) for _ in range(procs)]
        for p in ps:
            p.start()
        time.sleep(0.5)  # let them reach go.wait(): time the increments, not the starts
        t0 = time.perf_counter()
        go.set()
        for _ in ps:
            done.acquire()
        dt = time.perf_counter() - t0
        for p in ps:
            p.join()
        if v.value != procs * n:
            raise RuntimeError(f"{ctx.get_start_method()}: counter {v.value}, want {procs * n}")
        return procs * n / dt
    return run


def procs_case(ctx, n):
    def run():
        t0 = time.perf_counter()
        ps = [ctx.Process(target=noop) for _ in range(n)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        dt = time.perf_counter() - t0
        if any(p.exitcode != 0 for p in ps):
            raise RuntimeError(f"{ctx.get_start_method()}: exit codes {[p.exitcode for p in ps]}")
        return dt
    return run


def rtt_case(ctx, n, raw):
    def run():
        a, b = ctx.Pipe()
        p = ctx.Process(target=echo, args=(b, n + 10, raw))
        p.start()
        b.close()
        times = []
        for i in range(n + 10):
            t0 = time.perf_counter()
            if raw:
                a.send_bytes(MSG)
                a.recv_bytes()
            else:
                a.send(SMALL)
                a.recv()
            if i >= 10:
                times.append(time.perf_counter() - t0)
        p.join()
        a.close()
        times.sort()
        return times[len(times) // 2] * 1e6
    return run


def queue_case(ctx, n, size):
    def run():
        q = ctx.Queue()
        p = ctx.Process(target=produce, args=(q, n, size))
        p.start()
        q.get()  # the child runs: time the stream, not its start
        t0 = time.perf_counter()
        for _ in range(n - 1):
            q.get()
        dt = time.perf_counter() - t0
        p.join()
        return (n - 1) / dt if size <= 64 else (n - 1) * size / dt / 1e9
    return run


def remote_queue_case(n, size):
    """(4) in a child interpreter with a 2-node runtime."""
    import subprocess

    def run():
        env = dict(os.environ)
        env["DRAGON_EMBEDDED_ARGS"] = "--launcher virtual --nodes 2 --split-cpus"
        for k in ("DRAGON_AGENT_SOCKET", "DRAGON_PUID"):
            env.pop(k, None)
        p = subprocess.run([sys.executable, __file__, "--inner", "remote", "--n", str(n), "--size", str(size)],
                           env=env, capture_output=True, text=True, timeout=300)
        lines = [l for l in p.stdout.splitlines() if l.startswith("GBPS ")]
        if p.returncode != 0 or not lines:
            raise RuntimeError(f"remote queue run failed ({p.returncode}): {p.stderr.strip()[-300:]}")
        return float(lines[-1].split()[1])
    return run


def inner_remote(n, size) -> None:
    import multiprocessing as mp

    import dragon  # noqa: F401
    from dragon.infrastructure.policy import Policy

    ctx = mp.get_context("dragon")
    q = ctx.Queue()
    with Policy(placement=Policy.Placement.HOST_ID, host_id=1):
        p = ctx.Process(target=produce, args=(q, n, size))
    p.start()
    assert p._popen.node == 1, p._popen.node
    q.get()
    t0 = time.perf_counter()
    for _ in range(n - 1):
        q.get()
    dt = time.perf_counter() - t0
    p.join()
    print(f"GBPS {(n - 1) * size / dt / 1e9:.4f}", flush=True)


def across_case(case, n, through_home, parties=0):
    """(5b-5f) across 2 virtual nodes, in a child interpreter with its own
    2-node runtime: node 1's processes reach node 0's objects through node
    0's agent (as another host's must, DRAGON_SYNC_THROUGH_HOME=1) or by
    mapping node 0's pool (the same host)."""
    import subprocess

    def run():
        env = dict(os.environ)
        env["DRAGON_EMBEDDED_ARGS"] = "--launcher virtual --nodes 2 --split-cpus"
        env["DRAGON_SYNC_THROUGH_HOME"] = "1" if through_home else "0"
        for k in ("DRAGON_AGENT_SOCKET", "DRAGON_PUID"):
            env.pop(k, None)
        p = subprocess.run([sys.executable, __file__, "--inner", "across", "--case", case, "--n", str(n),
                            "--parties", str(parties)], env=env, capture_output=True, text=True, timeout=600)
        lines = [l for l in p.stdout.splitlines() if l.startswith("VALUE ")]
        if p.returncode != 0 or not lines:
            raise RuntimeError(f"{case} across 2 nodes failed ({p.returncode}): {p.stderr.strip()[-300:]}")
        return float(lines[-1].split()[1])
    return run


def inner_across(case, n, parties) -> None:
    import multiprocessing as mp

    import dragon  # noqa: F401
    from dragon.infrastructure.policy import Policy

    ctx = mp.get_context("dragon")
    on_node_1 = Policy(placement=Policy.Placement.HOST_ID, host_id=1)
    if case == "lock":
        lock, q = ctx.Lock(), ctx.Queue()
        with on_node_1:
            p = ctx.Process(target=lock_pairs, args=(lock, n, q))
        p.start()
        node, value = q.get()
        p.join()
        assert node == 1, node
    elif case == "event":  # the waiter on node 1
        with on_node_1:
            value = event_case(ctx, n)()
    elif case == "barrier":  # parties placed over both nodes
        value = barrier_case(ctx, parties, n)()
    else:  # value: incrementers over both nodes
        value = value_case(ctx, parties, n)()
    print(f"VALUE {value:.3f}", flush=True)


def tcp_rtt_case(n):
    """Two 1-byte TCP round trips over loopback (a remote acquire and a release), us."""
    import multiprocessing as mp

    def run():
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        p = mp.get_context("fork").Process(target=tcp_pong, args=(srv.getsockname()[1], 2 * n + 200))
        p.start()
        c, _ = srv.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(200):
            c.sendall(b"x")
            c.recv(1)
        t0 = time.perf_counter()
        for _ in range(2 * n):
            c.sendall(b"x")
            c.recv(1)
        dt = time.perf_counter() - t0
        c.close()
        srv.close()
        p.join()
        return dt / n * 1e6
    return run


def tcp_case(total_mib):
    import multiprocessing as mp

    def run():
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        p = mp.get_context("fork").Process(target=tcp_sink, args=(port, total_mib << 20))
        p.start()
        c, _ = srv.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        chunk = b"\0" * (1 << 20)
        t0 = time.perf_counter()
        for _ in range(total_mib):
            c.sendall(chunk)
        c.recv(1)
        dt = time.perf_counter() - t0
        c.close()
        srv.close()
        p.join()
        return (total_mib << 20) / dt / 1e9
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer rounds and items (a smoke run)")
    ap.add_argument("--procs", type=int, default=64)
    ap.add_argument("--rtt-n", type=int, default=2000)
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--only", help="run only the sections whose label starts with this (1, 2a, 3b, 4...)")
    ap.add_argument("--inner")
    ap.add_argument("--n", type=int)
    ap.add_argument("--size", type=int)
    ap.add_argument("--case")
    ap.add_argument("--parties", type=int, default=0)
    a = ap.parse_args()
    pypath = os.path.join(os.path.abspath(a.build), "python")
    if not os.path.exists(os.path.join(pypath, "dragon")):
        print(f"{pypath}/dragon not built (cmake --build build)")
        return 1
    sys.path.insert(0, pypath)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (pypath, os.environ.get("PYTHONPATH")) if p)
    if a.inner == "remote":
        inner_remote(a.n, a.size)
        return 0
    if a.inner == "across":
        inner_across(a.case, a.n, a.parties)
        return 0
    import multiprocessing as mp

    from interleave import rounds, table

    import dragon

    dragon.start_runtime()
    runs = 2 if a.quick else a.runs
    rtt_n = 200 if a.quick else a.rtt_n
    small_n = 20000 if a.quick else 200000
    big_n = 64 if a.quick else 512
    methods = ["dragon", "fork", "forkserver", "spawn"]
    ctxs = {m: mp.get_context(m) for m in methods}

    def section(title, unit, cases, base, label):
        if a.only and not title.startswith(f"({a.only}"):
            return
        rows, failed = rounds(cases, runs)
        table(title, unit, rows, base, failed, vs=base, label=label)
        print()

    section(f"(1) {a.procs} Processes of a no-op target, first start() to last join()", "s",
            {m: procs_case(ctxs[m], a.procs) for m in methods}, "fork", "start method")
    section("(2a) Pipe round trip, a small pickled object (send/recv)", "us",
            {m: rtt_case(ctxs[m], rtt_n, False) for m in ("dragon", "fork")}, "fork", "start method")
    section("(2b) Pipe round trip, 64 B (send_bytes/recv_bytes)", "us",
            {m: rtt_case(ctxs[m], rtt_n, True) for m in ("dragon", "fork")}, "fork", "start method")
    section("(3a) Queue, one producer to one consumer, 64 B objects", "msg/s",
            {m: queue_case(ctxs[m], small_n, 64) for m in ("dragon", "fork")}, "fork", "start method")
    section("(3b) Queue, one producer to one consumer, 1 MiB numpy arrays", "GB/s",
            {m: queue_case(ctxs[m], big_n, 1 << 20) for m in ("dragon", "fork")}, "fork", "start method")
    two = ("dragon", "fork")
    section("(5a) uncontended Lock acquire+release", "ns",
            {m: lock_case(ctxs[m], 20000 if a.quick else 1000000) for m in two}, "fork", "start method")
    far = "dragon, 2 nodes, node 1 through node 0's agent"  # as another host's processes
    near = "dragon, 2 nodes, node 0's pool mapped"  # as the same host's
    events = 100 if a.quick else 1000
    section("(5b) Event.set to a waiting process's wake-up", "us",
            {**{m: event_case(ctxs[m], events) for m in two},
             far: across_case("event", events, True), near: across_case("event", events, False)},
            "fork", "start method")
    for lab, parties in (("5c", 8), ("5d", 32)):
        n = 50 if a.quick else 300
        section(f"({lab}) Barrier of {parties} parties, rounds", "rounds/s",
                {**{m: barrier_case(ctxs[m], parties, n) for m in two},
                 far: across_case("barrier", n // 5, True, parties), near: across_case("barrier", n, False, parties)},
                "fork", "start method")
    section("(5e) Value increments under its lock, 8 processes", "incr/s",
            {**{m: value_case(ctxs[m], 8, 2000 if a.quick else 20000) for m in two},
             far: across_case("value", 200 if a.quick else 2000, True, 8),
             near: across_case("value", 2000 if a.quick else 20000, False, 8)},
            "fork", "start method")
    dragon.stop_runtime()
    pairs = 500 if a.quick else 5000
    section("(5f) node 0's Lock acquire+release from node 1 of 2 virtual nodes (--split-cpus)", "us",
            {"floor: 2 TCP round trips over loopback, 1 B": tcp_rtt_case(pairs),
             far: across_case("lock", pairs, True), near: across_case("lock", pairs, False)},
            "floor: 2 TCP round trips over loopback, 1 B", "case")
    section("(4) Queue across 2 virtual nodes (--split-cpus), 1 MiB numpy arrays, against raw TCP", "GB/s",
            {"raw TCP over loopback, 1 MiB writes": tcp_case(big_n),
             "dragon Queue, producer on node 1": remote_queue_case(big_n, 1 << 20)},
            "raw TCP over loopback, 1 MiB writes", "transport")
    return 0


if __name__ == "__main__":
    sys.exit(main())
