"""multiprocessing.Pool of the dragon start method (python/dragon/mpbridge/
pool.py, docs/multiprocessing.md "Pool"): the standard library's API over a
ProcessGroup of workers, with the faults the standard library hangs on
(a worker killed in a task, a task that does not unpickle in the worker)
turned into errors the caller sees, workers over every node, and nothing
left behind by terminate or Ctrl-C."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import ORCH, PY, env_for_scripts, pid_alive, shm_of, wait_gone

PRELUDE = """
import json, os, signal, sys, time, traceback
import dragon
import multiprocessing as mp
from multiprocessing import pool as mpool

def sq(x): return x * x
def add(a, b): return a + b
def noop(): return None
def boom(x): raise ValueError(f"boom {x}")
def where(_=None): return (os.getpid(), os.environ.get("DRAGON_NODE_ID"))
def where_slowly(_=None): time.sleep(0.2); return where()
def slow(t): time.sleep(t); return os.getpid()
def sleeper(t, path): open(path, "a").write(f"{os.getpid()}\\n"); time.sleep(t)
def makes_lambda(): return lambda: 1
def setmark(v): os.environ["POOLMARK"] = v
def getmark(): return os.environ.get("POOLMARK")
def bad_init(): raise KeyError("no such thing")
def inner_pool(n):
    with mp.Pool(2) as p:
        return sum(p.map(sq, range(n)))
"""

ONE_NODE = """
if __name__ == "__main__":
    mp.set_start_method("dragon")
    out = {}
    with mp.Pool(2) as p:
        out["pids"] = [w.pid for w in p._pool]
        out["alive"] = [w.is_alive() for w in p._pool]
        out["map"] = p.map(sq, range(1000), chunksize=7)
        out["imap"] = list(p.imap(sq, range(50)))
        out["imap_unordered"] = sorted(p.imap_unordered(sq, range(50), chunksize=3))
        out["starmap"] = p.starmap(add, [(1, 2), (3, 4)])
        got = []
        rs = [p.apply_async(sq, (i,), callback=got.append) for i in range(200)]
        out["apply_async"] = [r.get(60) for r in rs]
        out["callbacks"] = sorted(got)
        errs = []
        r = p.apply_async(boom, (7,), error_callback=errs.append)
        r.wait(60)
        out["ready"], out["successful"] = r.ready(), r.successful()
        try:
            r.get()
        except ValueError as e:
            out["error"] = str(e)
            out["remote_tb"] = "in boom" in str(e.__cause__)
        out["error_callback"] = [str(e) for e in errs]
        # an unpicklable task raises in the caller, the pool goes on
        try:
            p.apply(sq, (lambda: 1,))
        except Exception as e:
            out["bad_task"] = type(e).__name__
        try:
            p.apply(makes_lambda)
        except Exception as e:
            out["bad_result"] = type(e).__name__
        # a task whose function the workers cannot import, in one batch with
        # good ones: only it fails
        sys.path.insert(0, os.path.join(os.getcwd(), "late"))
        os.makedirs("late", exist_ok=True)
        open("late/latemod.py", "w").write("def f(x): return -x\\n")
        import latemod
        rs = [p.apply_async(sq, (i,)) for i in range(10)] + [p.apply_async(latemod.f, (1,))] + \\
             [p.apply_async(sq, (i,)) for i in range(10, 20)]
        outs = []
        for r in rs:
            try:
                outs.append(r.get(60))
            except Exception as e:
                outs.append(type(e).__name__)
        out["mixed_batch"] = outs
        # a worker killed in the middle of a task: an error, not a hang
        r = p.apply_async(slow, (60,))
        time.sleep(1.0)
        for w in p._pool:
            victim = w.pid
            os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        try:
            r.get(30)
            out["killed"] = "no error"
        except mpool.TimeoutError:
            out["killed"] = "hang"
        except Exception as e:
            out["killed"] = type(e).__name__
            out["killed_msg"] = str(e)
        out["after_kill"] = p.map(sq, range(20))
        out["pids_after_kill"] = [w.pid for w in p._pool]
        # a pool in a pool's task
        out["nested"] = p.apply(inner_pool, (10,))
    # maxtasksperchild: workers replaced, every result in
    with mp.Pool(2, maxtasksperchild=3) as p:
        first = set(w.pid for w in p._pool)
        out["maxtasks_results"] = p.map(sq, range(30), chunksize=1)
        seen = set(p.map(slow, [0.01] * 12, chunksize=1))
        out["maxtasks_new_pids"] = len(seen - first) > 0
    # initializer
    with mp.Pool(2, initializer=setmark, initargs=("yes",)) as p:
        out["initializer"] = p.apply(getmark)
    # an initializer that raises: every task fails with its exception (no
    # endless restarts, as the standard library's), close and join end it
    p = mp.Pool(2, initializer=bad_init)
    rs = [p.apply_async(sq, (i,)) for i in range(5)]
    outs = []
    for r in rs:
        try:
            outs.append(r.get(60))
        except Exception as e:
            outs.append(f"{type(e).__name__}: {e}")
    out["bad_init"] = outs
    out["bad_init_later"] = p.map_async(sq, range(3)).wait(60) is None
    p.close(); p.join()
    # terminate mid-task: every worker gone
    p = mp.Pool(3)
    path = os.path.join(os.getcwd(), "sleepers")
    for _ in range(3):
        p.apply_async(sleeper, (60, path))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not os.path.exists(path) or len(open(path).read().split()) < 3):
        time.sleep(0.05)
    out["terminated_pids"] = [int(x) for x in open(path).read().split()]
    p.terminate(); p.join()
    # concurrent.futures with the dragon context
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(2, mp_context=mp.get_context("dragon")) as ex:
        out["executor"] = list(ex.map(sq, range(10)))
        out["executor_pid"] = ex.submit(where).result()[0] != os.getpid()
    # the native pool
    from dragon.native.pool import Pool as NativePool
    with NativePool(2) as p:
        out["native"] = p.map(sq, range(5))
    out["run"] = dragon.current_runtime().run_id
    print(json.dumps(out), flush=True)
"""


def _last_json(stdout):
    return json.loads([l for l in stdout.splitlines() if l.startswith("{")][-1])


def test_pool_api_and_faults(script):
    p = script(PRELUDE, ONE_NODE).run(timeout=600)
    out = _last_json(p.stdout)
    assert None not in out["pids"] and all(out["alive"])
    assert out["map"] == [x * x for x in range(1000)]
    assert out["imap"] == [x * x for x in range(50)]
    assert out["imap_unordered"] == [x * x for x in range(50)]
    assert out["starmap"] == [3, 7]
    assert out["apply_async"] == [x * x for x in range(200)]
    assert out["callbacks"] == [x * x for x in range(200)]
    assert out["ready"] and not out["successful"]
    assert out["error"] == "boom 7" and out["remote_tb"]
    assert out["error_callback"] == ["boom 7"]
    assert out["bad_task"] == "PicklingError"
    assert out["bad_result"] == "MaybeEncodingError"
    assert out["mixed_batch"] == [i * i for i in range(10)] + ["ModuleNotFoundError"] + [i * i for i in range(10, 20)]
    assert out["killed"] == "WorkerLost", out
    assert "SIGKILL" in out["killed_msg"]
    assert out["after_kill"] == [x * x for x in range(20)]
    assert not set(out["pids_after_kill"]) & set(out["pids"])
    assert out["nested"] == sum(x * x for x in range(10))
    assert out["maxtasks_results"] == [x * x for x in range(30)]
    assert out["maxtasks_new_pids"]
    assert out["initializer"] == "yes"
    assert out["bad_init"] == ["KeyError: 'no such thing'"] * 5
    assert len(out["terminated_pids"]) == 3
    assert not any(pid_alive(x) for x in out["terminated_pids"])
    assert out["executor"] == [x * x for x in range(10)] and out["executor_pid"]
    assert out["native"] == [0, 1, 4, 9, 16]
    assert not shm_of(out["run"])


NODES = """
if __name__ == "__main__":
    mp.set_start_method("dragon")
    from dragon.infrastructure.policy import Policy
    from dragon.native.machine import cpu_count
    out = {"cpus": cpu_count()}
    with mp.Pool() as p:
        out["processes"] = len(p._pool)
        out["placed"] = sorted(set(w.node for w in p._pool))
        # Tasks run on both nodes: the workers starting last take batches
        # queued behind the first ones, and once all are up every map
        # reaches them (a few rounds: a loaded node starts its workers late).
        seen = set()
        for _ in range(10):
            seen |= set(n for _, n in p.map(where_slowly, range(4 * len(p._pool)), chunksize=1))
            if len(seen) == 2:
                break
        out["nodes"] = sorted(seen)
    with Policy(placement=Policy.Placement.HOST_ID, host_id=1):
        with mp.Pool(3) as p:
            out["policy_nodes"] = sorted(set(n for _, n in p.map(where, range(12), chunksize=1)))
    print(json.dumps(out), flush=True)
"""


@pytest.mark.system
def test_pool_over_nodes(script):
    p = script(PRELUDE, NODES).run(under=["--launcher", "virtual", "--nodes", "2"], timeout=600)
    out = _last_json(p.stdout)
    assert out["processes"] == out["cpus"]  # processes=None: every cpu the runtime was granted
    assert out["placed"] == [0, 1]
    assert out["nodes"] == ["0", "1"]
    assert out["policy_nodes"] == ["1"]


SCALE = """
if __name__ == "__main__":
    mp.set_start_method("dragon")
    n = int(sys.argv[1])
    t0 = time.monotonic()
    with mp.Pool(n) as p:
        res = p.map(sq, range(100000))
        placed = sorted(set(w.node for w in p._pool))
        # Tasks run on every node once the workers there are up: the map
        # above may be done by node 0's workers alone while the others still
        # start (1024 of them on 2 cpus), so map until each node answered.
        seen = set()
        for _ in range(10):
            seen |= set(x for _, x in p.map(where_slowly, range(4 * n), chunksize=1))
            if len(seen) == 4:
                break
        nodes = sorted(seen)
        pids = [w.pid for w in p._pool]
    print(json.dumps({"ok": res == [x * x for x in range(100000)], "placed": placed, "nodes": nodes, "pids": pids,
                      "run": dragon.current_runtime().run_id}), flush=True)
"""


@pytest.mark.system
def test_pool_1024_workers_over_4_nodes(script):
    p = script(PRELUDE, SCALE).run("1024", under=["--launcher", "virtual", "--nodes", "4"], timeout=900)
    out = _last_json(p.stdout)
    assert out["ok"]
    assert out["placed"] == [0, 1, 2, 3]
    assert out["nodes"] == ["0", "1", "2", "3"]
    assert len(set(out["pids"])) == 1024
    assert wait_gone(out["pids"], 30)
    assert not shm_of(out["run"])


CTRL_C = """
if __name__ == "__main__":
    mp.set_start_method("dragon")
    path = sys.argv[1]
    with mp.Pool(4) as p:
        rs = [p.apply_async(sleeper, (120, path)) for _ in range(4)]
        print("busy", flush=True)
        for r in rs:
            r.get()
"""


def test_pool_ctrl_c_leaves_nothing(script, tmp_path):
    s = script(PRELUDE, CTRL_C)
    path = str(tmp_path / "pids")
    proc = subprocess.Popen([ORCH, "run", "--patience", "1", "--", PY, str(s.path), path], cwd=tmp_path,
                            env=env_for_scripts(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if os.path.exists(path) and len(open(path).read().split()) >= 4:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        pids = [int(x) for x in open(path).read().split()]
        assert len(pids) == 4
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert wait_gone(pids, 15), [x for x in pids if pid_alive(x)]


MAIN_ONCE = """
import os, sys, time
import multiprocessing as mp
import dragon

IMPORTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imports")
with open(IMPORTS, "a") as f:  # once per import of this module, by whom
    f.write(f"{os.getpid()} {__name__}\\n")

COUNT = 41

def task(x):
    main = sys.modules["__main__"]
    return (x + COUNT + 1, main.__name__, getattr(main, "__file__", None), os.getpid())

if __name__ == "__main__":
    mp.set_start_method("dragon")
    with mp.Pool(4) as p:
        seen, out = set(), []
        while len(seen) < 4:
            rows = p.map(task, range(8), chunksize=1)
            out += rows
            seen.update(r[3] for r in rows)
    print("RESULT", sorted({(r[0], r[1], r[2]) for r in out[:8]}))
"""


def test_pool_workers_share_the_main_module(script, tmp_path):
    """The workers' zygote imports the parent's main script once, as
    __mp_main__ (docs/runtime.md, "Fast start"): every worker finds it
    there (tasks defined in it work, their module is the script) instead
    of importing it again."""
    s = script(MAIN_ONCE)
    out = s.run().stdout
    line = [l for l in out.splitlines() if l.startswith("RESULT")][-1]
    rows = eval(line[len("RESULT "):])
    assert {r[0] for r in rows} == {x + 42 for x in range(8)}
    assert {r[1] for r in rows} == {"__mp_main__"} and {r[2] for r in rows} == {str(s.path)}
    imports = open(tmp_path / "imports").read().split("\n")
    names = sorted(l.split()[1] for l in imports if l)
    # the parent as __main__, the zygote as __mp_main__ once: not once per worker
    assert names == ["__main__", "__mp_main__"], imports
