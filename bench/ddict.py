#!/usr/bin/python3
"""The distributed dictionary (dragon.data.ddict) against a real Redis and
multiprocessing.Manager().dict() on this machine, interleaved in one run
(issue 22).

 (1) put and get ops/s of 1 KiB values with 1, 4 and 16 clients: ours on
     one node (2 managers) and over 2 virtual nodes with --split-cpus (one
     manager per node, clients spread over both), Redis (redis-server
     started by this benchmark on a loopback port, no persistence;
     python3-redis clients) and a Manager().dict() (its server process,
     DictProxy clients). Every client is its own process; all start their
     operations at the same instant; the rate is all clients' operations
     over the time from that instant to the last one's end.
 (2) GB/s of one client putting and getting a 64 MiB value.

    bench/ddict.py [--runs 3] [--quick] [--ops 1000]

Each round measures every case once (a warm-up round first); the table
gives medians, minima and the ratio to Redis.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
VALUE = b"x" * 1024
BIG = 64 << 20
CLIENTS = (1, 4, 16)
START_AFTER = 3.0    # seconds between launching the clients and their common start


# ---- clients (module level: fork and ProcessGroup members run them) ----------------

def _spin_until(t):
    while time.time() < t:
        time.sleep(0.001)


def ddict_client(ser, me, n, op, start, result_desc):
    import pickle
    import time as _t
    from dragon.channels import Channel
    from dragon.data.ddict import DDict

    d = DDict.attach(ser)
    v = b"x" * 1024
    keys = [f"k{me}-{i}" for i in range(n)]
    d.get("warm")  # connect before the clock starts
    while _t.time() < start:
        _t.sleep(0.001)
    t0 = max(_t.time(), start)
    if op == "put":
        for k in keys:
            d[k] = v
    else:
        for k in keys:
            d[k]
    t1 = _t.time()
    Channel.attach(result_desc).send(pickle.dumps((t0, t1)))
    d.detach()


def redis_client(port, me, n, op, start, q):
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    r.get("warm")
    keys = [f"k{me}-{i}" for i in range(n)]
    _spin_until(start)
    t0 = max(time.time(), start)
    if op == "put":
        for k in keys:
            r.set(k, VALUE)
    else:
        for k in keys:
            r.get(k)
    q.put((t0, time.time()))


def manager_client(d, me, n, op, start, q):
    keys = [f"k{me}-{i}" for i in range(n)]
    d.get("warm")
    _spin_until(start)
    t0 = max(time.time(), start)
    if op == "put":
        for k in keys:
            d[k] = VALUE
    else:
        for k in keys:
            d[k]
    q.put((t0, time.time()))


def _rate(times, total):
    t0 = min(t for t, _ in times)
    t1 = max(t for _, t in times)
    return total / (t1 - t0)


def _forked_clients(client, first_arg, clients, n, op):
    """ops/s of `clients` fork-context processes running client(first_arg,
    me, n, op, start, q), started together."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    q = ctx.Queue()
    start = time.time() + 1.0 + 0.05 * clients
    ps = [ctx.Process(target=client, args=(first_arg, me, n, op, start, q)) for me in range(clients)]
    for p in ps:
        p.start()
    times = [q.get(timeout=300) for _ in range(clients)]
    for p in ps:
        p.join()
    return _rate(times, clients * n)


# ---- the systems ----------------------------------------------------------------------

class Ours:
    """A DDict; clients are ProcessGroup members, spread over the dictionary's nodes."""

    def __init__(self, managers_per_node, n_nodes):
        from dragon.data.ddict import DDict

        self.n_nodes = n_nodes
        self.d = DDict(managers_per_node, n_nodes, 4 << 30)
        self.ser = self.d.serialize()

    def ops(self, clients, n, op):
        import pickle
        from dragon.channels import Channel
        from dragon.infrastructure.policy import Policy
        from dragon.native.process import ProcessTemplate
        from dragon.native.process_group import ProcessGroup

        res = Channel(capacity=64)
        start = time.time() + START_AFTER + 0.15 * clients
        with ProcessGroup() as pg:
            for me in range(clients):
                pol = Policy(placement=Policy.Placement.HOST_ID, host_id=me % self.n_nodes)
                pg.add_process(1, ProcessTemplate(ddict_client, args=(self.ser, me, n, op, start, res.descriptor),
                                                  policy=pol))
            pg.start()
            times = [pickle.loads(res.recv(300)) for _ in range(clients)]
            pg.join(60)
        res.destroy()
        return _rate(times, clients * n)

    def big(self, op):
        v = VALUE_BIG
        t = time.perf_counter()
        if op == "put":
            self.d["big"] = v
        else:
            got = self.d["big"]
            assert len(got) == BIG
        return BIG / (time.perf_counter() - t) / 1e9

    def close(self):
        self.d.destroy()


class Redis:
    def __init__(self):
        import redis

        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (scripts/install-deps.sh bench)")
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--protected-mode", "yes", "--loglevel", "warning"],
                                     stdout=subprocess.DEVNULL)
        self.r = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.time() + 10
        while True:
            try:
                self.r.ping()
                break
            except redis.ConnectionError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)

    def ops(self, clients, n, op):
        return _forked_clients(redis_client, self.port, clients, n, op)

    def big(self, op):
        t = time.perf_counter()
        if op == "put":
            self.r.set("big", VALUE_BIG)
        else:
            assert len(self.r.get("big")) == BIG
        return BIG / (time.perf_counter() - t) / 1e9

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


class MgrDict:
    def __init__(self):
        import multiprocessing as mp

        self.mgr = mp.get_context("fork").Manager()
        self.d = self.mgr.dict()

    def ops(self, clients, n, op):
        return _forked_clients(manager_client, self.d, clients, n, op)

    def big(self, op):
        t = time.perf_counter()
        if op == "put":
            self.d["big"] = VALUE_BIG
        else:
            assert len(self.d["big"]) == BIG
        return BIG / (time.perf_counter() - t) / 1e9

    def close(self):
        self.mgr.shutdown()


VALUE_BIG = None


def measure(system, n, clients=CLIENTS, big=True) -> dict:
    """One round of every case of one system: {case: value}."""
    out = {}
    for c in clients:
        for op in ("put", "get"):
            out[f"{op} 1 KiB, {c:2d} client{'s' if c > 1 else ' '}"] = system.ops(c, n, op)
    if big:
        for op in ("put", "get"):
            out[f"{op} 64 MiB, 1 client"] = system.big(op)
    return out


def inner_two_nodes(n, clients) -> None:
    """In a child interpreter with a 2-node embedded runtime: one round of
    ours over both nodes, printed as JSON."""
    global VALUE_BIG
    VALUE_BIG = os.urandom(BIG)
    import dragon

    assert len(dragon.current_runtime().machine()) == 2
    s = Ours(1, 2)
    try:
        print("RESULT " + json.dumps(measure(s, n, clients)), flush=True)
    finally:
        s.close()


def two_nodes(n, clients, build) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(build, "python")
    env["DRAGON_EMBEDDED_ARGS"] = "--launcher virtual --nodes 2 --split-cpus"
    p = subprocess.run([sys.executable, os.path.realpath(__file__), "--inner-two-nodes", "--ops", str(n),
                        "--clients", ",".join(map(str, clients))],
                       env=env, capture_output=True, text=True, timeout=1200)
    lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"the 2-node run failed ({p.returncode}): {p.stderr.strip()[-400:]}")
    return json.loads(lines[-1][7:])


def main() -> int:
    global VALUE_BIG
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one round, 500 operations per client")
    ap.add_argument("--ops", type=int, default=1000, help="operations per client per case")
    ap.add_argument("--clients", default=",".join(map(str, CLIENTS)))
    ap.add_argument("--build", default=os.path.join(os.path.dirname(HERE), "build"))
    ap.add_argument("--inner-two-nodes", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    clients = tuple(int(c) for c in a.clients.split(","))
    if a.quick:
        a.runs, a.ops = 1, 500
    if a.inner_two_nodes:
        inner_two_nodes(a.ops, clients)
        return 0
    sys.path.insert(0, os.path.join(a.build, "python"))
    os.environ["PYTHONPATH"] = os.path.join(a.build, "python")
    import dragon

    dragon.current_runtime()   # the embedded one-node runtime, started once
    VALUE_BIG = os.urandom(BIG)
    systems = {"dragon ddict, 1 node": None, "dragon ddict, 2 virtual nodes": None, "redis": None,
               "Manager().dict()": None}
    rows: dict = {}
    failed: dict = {}
    ours = Ours(2, 1)
    red = None
    try:
        red = Redis()
    except Exception as e:
        failed["redis"] = str(e)
    mgr = MgrDict()
    for rnd in range(a.runs + 1):
        for name in systems:
            if name in failed:
                continue
            try:
                if name == "dragon ddict, 1 node":
                    res = measure(ours, a.ops, clients)
                elif name == "dragon ddict, 2 virtual nodes":
                    res = two_nodes(a.ops, clients, a.build)
                elif name == "redis":
                    res = measure(red, a.ops, clients)
                else:
                    res = measure(mgr, a.ops, clients)
            except Exception as e:
                failed[name] = f"{type(e).__name__}: {e}"[-300:]
                continue
            if rnd == 0:
                continue   # warm-up
            for case, v in res.items():
                rows.setdefault(case, {}).setdefault(name, []).append(v)
    ours.close()
    if red is not None:
        red.close()
    mgr.close()
    cpus = os.cpu_count()
    print(f"\nDistributed dictionary: {a.runs} interleaved round(s), {a.ops} operations per client, "
          f"{cpus} cpus; median (min) per case; ratio to redis")
    names = list(systems)
    w = 26
    print(f"{'case':{w}}" + "".join(f"{n:>34}" for n in names))
    for case, by in rows.items():
        unit = "GB/s" if "MiB" in case else "ops/s"
        base = statistics.median(by["redis"]) if by.get("redis") else None
        cells = []
        for n in names:
            s = by.get(n)
            if not s:
                cells.append(f"{'(failed)' if n in failed else '-':>34}")
                continue
            med = statistics.median(s)
            fmt = f"{med:.3f} ({min(s):.3f})" if unit == "GB/s" else f"{med:.0f} ({min(s):.0f})"
            ratio = f" {med / base:5.2f}x" if base else ""
            cells.append(f"{fmt + ' ' + unit + ratio:>34}")
        print(f"{case:{w}}" + "".join(cells))
    for n, e in failed.items():
        print(f"{n}: failed: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
