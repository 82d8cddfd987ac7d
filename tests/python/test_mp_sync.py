"""Locks, semaphores, conditions, events, barriers, Value and Array of the
dragon start method (mpbridge/synchronize.py): one node (embedded), a holder
killed while holding a Lock and Semaphore counts, a timeout on every
blocking call, processes spread over a 4-node virtual cluster (system), and
node 1 reaching node 0's objects through node 0's agent as another host
would (DRAGON_SYNC_THROUGH_HOME=1), including a holder killed there and a
home node lost under a waiter. CPython's own tests of these objects run
under mp/run_cpython.py (the dragon-2hosts configuration among others)."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import ORCH, PY, env_for_scripts, no_residue_of, pid_alive

PRELUDE = """
import ctypes, json, os, signal, sys, time, threading
import dragon
import multiprocessing as mp
from dragon.native.machine import current
"""


def last_json(stdout):
    return json.loads([l for l in stdout.splitlines() if l.startswith("{")][-1])


ONE_NODE = """
def hold_and_die(lock, sem, ready):
    lock.acquire(); sem.acquire(); sem.acquire()
    ready.set()
    time.sleep(600)

def hammer(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1

def hammer_then_die(v, done, ready):
    # contends like the others, then is killed holding the lock
    for i in range(2000):
        with v.get_lock():
            v.value += 1
            done.value += 1
    v.get_lock().acquire()
    ready.set()
    time.sleep(600)

def via_queue(q, res):
    lock, v, arr = q.get()
    with lock:
        v.value += 1
        arr[3] = 7.5
    res.put("ok")

def notifier(cond, v):
    time.sleep(0.2)
    with cond:
        v.value = 42
        cond.notify_all()

if __name__ == "__main__":
    mp.set_start_method("dragon")
    out = {}
    lock, rlock = mp.Lock(), mp.RLock()
    out["types"] = [type(o).__module__ for o in (lock, rlock, mp.Semaphore(), mp.Event(), mp.Barrier(2))]
    # a timeout on every blocking call
    t = {}
    lock.acquire()
    t["lock"] = lock.acquire(timeout=0.1) is False and lock.acquire(False) is False
    lock.release()
    try:
        lock.release(); t["lock_over"] = False
    except ValueError:
        t["lock_over"] = True
    sem = mp.Semaphore(2)
    t["sem"] = sem.acquire() and sem.acquire() and sem.acquire(timeout=0.1) is False and sem.get_value() == 0
    bs = mp.BoundedSemaphore(1)
    try:
        bs.release(); t["bsem_over"] = False
    except ValueError:
        t["bsem_over"] = True
    with rlock:
        with rlock:
            t["rlock_reentrant"] = rlock._semlock._count() == 2
    cond = mp.Condition()
    with cond:
        t["cond_wait"] = cond.wait(0.1) is False
        t["cond_wait_for"] = cond.wait_for(lambda: False, 0.1) is False
    ev = mp.Event()
    t["event"] = ev.wait(0.1) is False
    ev.set(); t["event_set"] = ev.wait(0) is True and ev.is_set()
    b = mp.Barrier(2, timeout=0.1)
    try:
        b.wait(); t["barrier"] = False
    except threading.BrokenBarrierError:
        t["barrier"] = b.broken
    b.reset(); t["barrier_reset"] = not b.broken and b.n_waiting == 0
    out["timeouts"] = t
    # objects through a queue (the stdlib allows this only while spawning)
    q, res = mp.Queue(), mp.Queue()
    v = mp.Value("i", 1); arr = mp.Array("d", 5); raw = mp.RawArray(ctypes.c_int, [1, 2, 3])
    p = mp.Process(target=via_queue, args=(q, res)); p.start()
    q.put((lock, v, arr.get_obj()))
    out["via_queue"] = [res.get(timeout=60), v.value, arr[3], list(raw)]
    p.join(60)
    # Condition.wait_for woken by another process
    cv = mp.Value("i", 0)
    c = mp.Condition()
    p = mp.Process(target=notifier, args=(c, cv)); p.start()
    with c:
        out["wait_for"] = c.wait_for(lambda: cv.value == 42, timeout=60)
    p.join(60)
    # a holder killed while holding the lock and two semaphore counts
    lk, s3, ready = mp.Lock(), mp.Semaphore(3), mp.Event()
    h = mp.Process(target=hold_and_die, args=(lk, s3, ready)); h.start()
    out["ready"] = ready.wait(60)
    out["held"] = [lk.acquire(timeout=0.3), s3.get_value()]
    h.kill(); h.join(60)
    # the third count is free; the next one needs the dead holder's two back
    out["after_death"] = [lk.acquire(timeout=30), s3.acquire(timeout=30), s3.acquire(timeout=30), s3.get_value()]
    # the lock-free fast path under contention, a contender killed holding the lock
    hv, hdone, hready = mp.Value("q", 0), mp.RawValue("q", 0), mp.Event()
    ws = [mp.Process(target=hammer, args=(hv, 3000)) for _ in range(3)]
    victim = mp.Process(target=hammer_then_die, args=(hv, hdone, hready))
    for w in ws + [victim]:
        w.start()
    out["victim_ready"] = hready.wait(60)
    victim.kill(); victim.join(60)
    for w in ws:
        w.join(60)
    out["contended"] = [[w.exitcode for w in ws], hv.value - hdone.value, hdone.value, hv.get_lock().acquire(timeout=30)]
    # a descriptor of a pool this host does not have, of another run
    from dragon.mpbridge.synchronize import _attach
    try:
        _attach(("/dragon-0123abcd-n9-pool", 1, 4096, 1)); out["foreign"] = None
    except RuntimeError as e:
        out["foreign"] = str(e)
    out["run"] = dragon.current_runtime().run_id
    print(json.dumps(out), flush=True)
"""


def test_sync_objects_on_one_node(script):
    p = script(PRELUDE, ONE_NODE).run(timeout=300)
    out = last_json(p.stdout)
    assert out["types"] == ["dragon.mpbridge.synchronize"] * 5
    assert out["timeouts"] == {k: True for k in out["timeouts"]} and len(out["timeouts"]) == 11
    assert out["via_queue"] == ["ok", 2, 7.5, [1, 2, 3]]
    assert out["wait_for"] is True
    assert out["ready"] is True and out["held"] == [False, 1]
    # the dead holder's lock and its two counts came back
    assert out["after_death"] == [True, True, True, 1]
    # the workers finished past the killed holder; their count is exact; the lock came back
    assert out["victim_ready"] is True
    assert out["contended"] == [[0, 0, 0], 9000, 2000, True]
    assert "/dragon-0123abcd-n9-pool" in out["foreign"] and "belongs to run 0123abcd" in out["foreign"]
    assert not no_residue_of(out["run"])


FIRST = """
import json
import multiprocessing as mp  # before dragon: its module functions are bound already
import dragon

if __name__ == "__main__":
    mp.set_start_method("dragon")
    made = {n: getattr(mp, n)() for n in ("Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Event",
                                          "Queue", "SimpleQueue")}
    made.update(Barrier=mp.Barrier(2), Pipe=mp.Pipe()[0], Value=mp.Value("i", 1).get_lock(),
                Array=mp.Array("i", 2).get_lock(), RawValue=mp.RawValue("i", 1)._wrapper)
    print(json.dumps({n: type(o).__module__ for n, o in made.items()}), flush=True)
"""


def test_the_module_functions_make_dragon_objects_when_multiprocessing_was_imported_first(script):
    out = last_json(script(FIRST).run(timeout=120).stdout)
    assert len(out) == 13 and all(m.startswith("dragon.") for m in out.values()), out


# A barrier's rounds, each checked: every party counted itself in before any left.
ROUNDS = """
def rounds(b, arr, lock, n, bad):
    for r in range(n):
        with lock:
            arr[r] += 1
        b.wait(timeout=120)
        if arr[r] != b.parties:
            bad.value += 1
"""

ACROSS = ROUNDS + """
def count(v, n, nodes):
    nodes.put(current().h_uid)
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def waiter(c, v, target, res):
    with c:
        ok = c.wait_for(lambda: v.value >= target, timeout=120)
    res.put((current().h_uid, ok, v.value))

def bump(c, v):
    for _ in range(5):
        time.sleep(0.05)
        with c:
            v.value += 1
            c.notify_all()

if __name__ == "__main__":
    mp.set_start_method("dragon")
    out = {"me": current().h_uid}
    v = mp.Value("q", 0)
    nodes = mp.Queue()
    ps = [mp.Process(target=count, args=(v, 2000, nodes)) for _ in range(16)]
    for p in ps: p.start()
    for p in ps: p.join(600)
    out["counter"] = [v.value, [p.exitcode for p in ps], sorted({nodes.get(timeout=60) for _ in ps})]
    R = 20
    b = mp.Barrier(32)
    arr = mp.Array("i", R, lock=False)
    lock = mp.Lock()
    bad = mp.Value("i", 0)
    ps = [mp.Process(target=rounds, args=(b, arr, lock, R, bad)) for _ in range(32)]
    for p in ps: p.start()
    for p in ps: p.join(900)
    out["barrier"] = [list(arr), bad.value, [p.exitcode for p in ps], b.broken]
    c, cv, res = mp.Condition(), mp.Value("i", 0), mp.Queue()
    ws = [mp.Process(target=waiter, args=(c, cv, 5, res)) for _ in range(3)]
    for p in ws: p.start()
    bumper = mp.Process(target=bump, args=(c, cv)); bumper.start()
    got = [res.get(timeout=300) for _ in ws]
    for p in ws + [bumper]: p.join(120)
    out["wait_for"] = sorted(got)
    out["run"] = dragon.current_runtime().run_id
    print(json.dumps(out), flush=True)
"""


@pytest.mark.system
def test_sync_objects_across_four_virtual_nodes(script):
    p = script(PRELUDE, ACROSS).run(under=["--launcher", "virtual", "--nodes", "4"], timeout=1500)
    out = last_json(p.stdout)
    value, codes, nodes = out["counter"]
    assert value == 16 * 2000 and codes == [0] * 16
    assert len(nodes) == 4  # the 16 counters ran on all four nodes
    arr, bad, codes, broken = out["barrier"]
    assert arr == [32] * 20 and bad == 0 and codes == [0] * 32 and broken is False
    assert [ok for _, ok, _ in out["wait_for"]] == [True] * 3
    assert all(v >= 5 for _, _, v in out["wait_for"])
    assert len({n for n, _, _ in out["wait_for"]}) >= 2  # waiters on more than one node
    assert not no_residue_of(out["run"])


THROUGH_HOME = ROUNDS + """
from dragon.infrastructure.policy import Policy

class Pt(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_double)]

def on(node):
    return Policy(placement=Policy.Placement.HOST_ID, host_id=node)

def count(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1

def kinds(lock, rlock, sem, bsem, ev, arr, raw, s, pt, big, q):
    r = {"node": current().h_uid, "semlock": type(lock._semlock).__name__}
    r["lock_timeout"] = lock.acquire(timeout=0.3)  # the parent holds it
    rlock.acquire(); rlock.acquire()
    r["rlock"] = [rlock._semlock._count(), rlock._semlock._is_mine()]
    rlock.release(); rlock.release()
    try:
        rlock.release()
    except AssertionError:
        r["rlock_not_owned"] = True
    r["sem"] = [sem.get_value(), sem.acquire(timeout=0.2), sem.get_value()]
    try:
        bsem.release()
    except ValueError:
        r["bounded"] = True
    t0 = time.monotonic()
    r["ev_wait"] = [ev.wait(0.2), time.monotonic() - t0 >= 0.19]
    arr[1] = 5.5; arr[-1] = 9; arr[2:4] = [7, 8]
    r["arr"] = [arr[:], len(arr), arr[-1]]
    raw[0] = 11
    s.value = b"far away"
    r["s"] = [s.value.decode(), len(s.raw)]
    pt.x = 3
    r["pt"] = [pt.x, pt.y]
    big.raw = b"xy" * (3 << 19)  # 3 MiB: written, then read, in 1 MiB pieces
    r["big"] = [len(big[:]), big[-1].decode(), big[1 << 20:(1 << 20) + 4].decode()]
    q.put(r)

def hold_and_die(lock, sem, ready):
    lock.acquire(); sem.acquire()
    ready.set()
    time.sleep(600)

def take_and_exit(sem):
    sem.acquire()  # a signal, used: not given back at a normal exit


def waiter(c, v, res):
    with c:
        res.put(c.wait_for(lambda: v.value >= 3, timeout=120))

if __name__ == "__main__":
    mp.set_start_method("dragon")
    out = {"me": current().h_uid}
    # a counter from both nodes (node 1's processes through node 0's agent)
    v = mp.Value("q", 0)
    with on(1):
        far = [mp.Process(target=count, args=(v, 500)) for _ in range(4)]
    near = [mp.Process(target=count, args=(v, 500)) for _ in range(2)]
    for p in far + near: p.start()
    for p in far + near: p.join(300)
    out["counter"] = [v.value, [p.exitcode for p in far + near], sorted({p._popen.node for p in far + near})]
    # every kind, from node 1
    lock, rlock, sem, bsem, ev = mp.Lock(), mp.RLock(), mp.Semaphore(2), mp.BoundedSemaphore(1), mp.Event()
    arr, raw, s, pt, q = mp.Array("d", 5), mp.RawArray("i", 3), mp.Array("c", 16), mp.Value(Pt), mp.Queue()
    big = mp.RawArray("c", 3 << 20)
    pt.y = 2.5
    lock.acquire()
    with on(1):
        k = mp.Process(target=kinds, args=(lock, rlock, sem, bsem, ev, arr, raw, s, pt, big, q))
    k.start()
    out["kinds"] = q.get(timeout=120)
    k.join(60)
    lock.release()
    out["kinds_here"] = [list(arr), list(raw), s.value.decode(), pt.x, sem.get_value(), big.raw == b"xy" * (3 << 19)]
    # a holder on node 1 killed: its lock and count come back
    lock, sem, ready = mp.Lock(), mp.Semaphore(1), mp.Event()
    with on(1):
        h = mp.Process(target=hold_and_die, args=(lock, sem, ready))
    h.start()
    out["ready"] = ready.wait(60)
    out["held"] = [lock.acquire(False), sem.get_value()]
    h.kill(); h.join(60)
    t0 = time.monotonic()
    out["after_death"] = [lock.acquire(timeout=30), sem.acquire(timeout=30), round(time.monotonic() - t0, 1)]
    # a count taken on node 1 by a process that exits normally stays taken
    sem2 = mp.Semaphore(1)
    with on(1):
        t = mp.Process(target=take_and_exit, args=(sem2,))
    t.start(); t.join(60)
    time.sleep(0.5)
    out["used_signal"] = [t.exitcode, sem2.get_value()]
    # a barrier and a condition over both nodes
    R = 10
    b, barr, block, bad = mp.Barrier(4), mp.Array("i", R, lock=False), mp.Lock(), mp.Value("i", 0)
    with on(1):
        ps = [mp.Process(target=rounds, args=(b, barr, block, R, bad)) for _ in range(2)]
    ps += [mp.Process(target=rounds, args=(b, barr, block, R, bad)) for _ in range(2)]
    for p in ps: p.start()
    for p in ps: p.join(300)
    out["barrier"] = [list(barr), bad.value, [p.exitcode for p in ps], b.broken]
    c, cv, res = mp.Condition(), mp.Value("i", 0), mp.Queue()
    with on(1):
        w = mp.Process(target=waiter, args=(c, cv, res))
    w.start()
    for _ in range(3):
        time.sleep(0.1)
        with c:
            cv.value += 1
            c.notify_all()
    out["wait_for"] = res.get(timeout=120)
    w.join(60)
    out["run"] = dragon.current_runtime().run_id
    print(json.dumps(out), flush=True)
"""


@pytest.mark.system
def test_sync_objects_through_their_home_node_as_from_another_host(script):
    # DRAGON_SYNC_THROUGH_HOME=1: node 1's processes reach node 0's objects
    # through node 0's agent, as a process of another host must.
    p = script(PRELUDE, THROUGH_HOME).run(under=["--launcher", "virtual", "--nodes", "2"], timeout=900,
                                          env={"DRAGON_SYNC_THROUGH_HOME": "1"})
    out = last_json(p.stdout)
    assert out["me"] == 0
    assert out["counter"] == [3000, [0] * 6, [0, 1]]
    k = out["kinds"]
    assert k["node"] == 1 and k["semlock"] == "_RemoteSemLock", k
    assert k["lock_timeout"] is False and k["rlock"] == [2, True] and k["rlock_not_owned"] is True
    assert k["sem"] == [2, True, 1] and k["bounded"] is True and k["ev_wait"] == [False, True]
    assert k["arr"] == [[0.0, 5.5, 7.0, 8.0, 9.0], 5, 9.0]
    assert k["s"] == ["far away", 16]
    assert k["pt"] == [3, 2.5]
    assert k["big"] == [3 << 20, "y", "xyxy"]
    assert out["kinds_here"] == [[0.0, 5.5, 7.0, 8.0, 9.0], [11, 0, 0], "far away", 3, 1, True]
    assert out["ready"] is True and out["held"] == [False, 0]
    assert out["after_death"][:2] == [True, True], out["after_death"]
    assert out["used_signal"] == [0, 0]
    arr, bad, codes, broken = out["barrier"]
    assert arr == [4] * 10 and bad == 0 and codes == [0] * 4 and broken is False
    assert out["wait_for"] is True
    assert not no_residue_of(out["run"])


LOST_HOME = """
from dragon.infrastructure.policy import Policy

def home(q):
    lock = mp.Lock()  # node 1's
    lock.acquire()
    q.put(lock)
    time.sleep(600)

if __name__ == "__main__":
    mp.set_start_method("dragon")
    q = mp.Queue()
    with Policy(placement=Policy.Placement.HOST_ID, host_id=1):
        h = mp.Process(target=home, args=(q,))
    h.start()
    lock = q.get(timeout=60)
    print("waiting", flush=True)
    t0 = time.monotonic()
    try:
        out = {"acquired": lock.acquire(timeout=120)}
    except Exception as e:
        out = {"mro": [c.__name__ for c in type(e).__mro__], "msg": str(e)}
    out["seconds"] = round(time.monotonic() - t0, 1)
    try:
        lock.release()
    except Exception as e:
        out["later"] = type(e).__name__
    print(json.dumps(out), flush=True)
    os._exit(0)
"""


def children_of(pid):
    out = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open(f"/proc/{e}/stat") as f:
                    if int(f.read().split(")")[-1].split()[1]) == pid:
                        out.append(int(e))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    return out


def agent_of_node(fe_pid, node):
    """Node `node`'s agent among the front end's children (it holds that node's lock file)."""
    for pid in children_of(fe_pid):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(f"-n{node}-lock"):
                    return pid
        except (FileNotFoundError, PermissionError):
            continue
    return None


@pytest.mark.system
def test_a_waiter_on_a_lost_home_node_gets_a_connection_error_naming_it(script):
    s = script(PRELUDE, LOST_HOME)
    fe = subprocess.Popen([ORCH, "run", "--launcher", "virtual", "--nodes", "2", "--", PY, str(s.path)], cwd=s.cwd,
                          env=env_for_scripts({"DRAGON_SYNC_THROUGH_HOME": "1"}), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
    victim = None
    try:
        line = fe.stdout.readline()
        assert line == "waiting\n", line + fe.stderr.read()
        time.sleep(0.5)  # node 0's process waits at node 1 now
        victim = agent_of_node(fe.pid, 1)
        assert victim
        os.kill(victim, signal.SIGKILL)
        out_text, err = fe.communicate(timeout=120)
        out = last_json(out_text)
        assert "ConnectionError" in out.get("mro", []), (out, err)
        assert "node 1" in out["msg"] or "lane" in out["msg"], out
        assert out["later"] == "DragonConnectionError", out  # and so does the next operation
    finally:
        if fe.poll() is None:
            os.killpg(fe.pid, signal.SIGKILL)
            fe.wait()
        if victim and pid_alive(victim):
            os.kill(victim, signal.SIGKILL)
