"""Locks, semaphores, conditions, events, barriers, Value and Array of the
dragon start method (mpbridge/synchronize.py): one node (embedded), a holder
killed while holding a Lock and Semaphore counts, a timeout on every
blocking call, and processes spread over a 4-node virtual cluster (system).
CPython's own tests of these objects run in test_cpython_multiprocessing.py."""
import json

import pytest

from conftest import no_residue_of

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
    # a descriptor of a pool this host does not have (another host's object)
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
    assert "/dragon-0123abcd-n9-pool" in out["foreign"] and "another host" in out["foreign"]
    assert not no_residue_of(out["run"])


ACROSS = """
def count(v, n, nodes):
    nodes.put(current().h_uid)
    for _ in range(n):
        with v.get_lock():
            v.value += 1

def rounds(b, arr, lock, n, bad):
    for r in range(n):
        with lock:
            arr[r] += 1
        b.wait(timeout=120)
        if arr[r] != b.parties:
            bad.value += 1

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
