"""multiprocessing with the dragon start method: Process, Pipe, Queues and
connection.wait, on one node (embedded) and with their ends on different
nodes of a 4-node virtual cluster (system). CPython's own tests run in
mp/run_cpython.py."""
import json

import pytest

from conftest import no_residue_of

PRELUDE = """
import json, os, signal, sys, time
import dragon
import multiprocessing as mp
from multiprocessing.connection import wait
"""


def last_json(stdout):
    return json.loads([l for l in stdout.splitlines() if l.startswith("{")][-1])


PROCESS = """
def ok(): pass
def exits(n): sys.exit(n)
def raises(): raise RuntimeError("boom in child")
def sleeps(): time.sleep(60)
def names(q):
    p = mp.parent_process()
    q.put([mp.current_process().name, p.name if p else None, p.pid if p else None, os.environ.get("DRAGON_PUID")])

class Sub(mp.Process):
    def __init__(self, q):
        super().__init__(name="sub-1")
        self.q = q
    def run(self):
        self.q.put(("sub", self.name))

def grandchild(q):
    c = mp.Process(target=names, args=(q,), name="grand")
    c.start(); c.join()
    q.put(("child-exit", c.exitcode))

if __name__ == "__main__":
    mp.set_start_method("dragon")
    out = {}
    ps = {"ok": mp.Process(target=ok), "exit3": mp.Process(target=exits, args=(3,)),
          "raises": mp.Process(target=raises), "kill": mp.Process(target=sleeps),
          "term": mp.Process(target=sleeps)}
    for p in ps.values():
        p.start()
    out["pids"] = all(isinstance(p.pid, int) and p.pid > 0 and p.ident == p.pid for p in ps.values())
    out["alive"] = ps["kill"].is_alive()
    ps["kill"].kill(); ps["term"].terminate()
    for p in ps.values():
        p.join(60)
    out["codes"] = {k: p.exitcode for k, p in ps.items()}
    # sentinels in wait, and join(timeout) on a live child
    s = mp.Process(target=sleeps, daemon=True); s.start()
    t0 = time.monotonic(); s.join(0.2); out["join_timeout"] = s.exitcode is None and s.is_alive()
    e = mp.Process(target=exits, args=(0,)); e.start()
    out["wait"] = wait([s.sentinel, e.sentinel], 60) == [e.sentinel]
    e.join()
    out["active"] = [c.name for c in mp.active_children()] == [s.name]
    q = mp.Queue()
    n = mp.Process(target=names, args=(q,), name="named"); n.start()
    out["names"] = q.get(timeout=60); n.join()
    out["me"] = [mp.current_process().name, os.getpid()]
    sub = Sub(q); sub.start(); out["sub"] = q.get(timeout=60); sub.join()
    g = mp.Process(target=grandchild, args=(q,)); g.start()
    out["grand"] = [q.get(timeout=60), q.get(timeout=60)]; g.join()
    out["cpu_count"] = mp.cpu_count()
    out["machine_cpus"] = sum(n["cpus"] for n in dragon.current_runtime().machine())
    p = mp.Process(target=ok); p.start(); p.join(); p.close()
    try:
        p.is_alive()
    except ValueError:
        out["closed"] = True
    # the other start methods are untouched
    fctx = mp.get_context("fork")
    fa, fb = fctx.Pipe()
    out["fork_pipe"] = type(fa).__module__
    fp = fctx.Process(target=exits, args=(5,)); fp.start(); fp.join()
    out["fork_code"] = fp.exitcode
    out["dragon_pipe"] = type(mp.Pipe()[0]).__module__
    out["daemon_pid"] = s.pid
    out["run"] = dragon.current_runtime().run_id
    print(json.dumps(out), flush=True)
"""


def test_process_lifecycle_and_exit_codes(script):
    p = script(PRELUDE, PROCESS).run(timeout=240)
    out = last_json(p.stdout)
    assert out["pids"] is True and out["alive"] is True
    assert out["codes"] == {"ok": 0, "exit3": 3, "raises": 1, "kill": -9, "term": -15}
    assert "RuntimeError: boom in child" in p.stderr  # the child's traceback, as the stdlib prints it
    assert out["join_timeout"] is True and out["wait"] is True and out["active"] is True
    assert out["names"][0] == "named"
    assert out["names"][1:3] == out["me"]  # parent_process() is this interpreter
    assert out["names"][3]  # the child is a process of the runtime
    assert out["sub"] == ["sub", "sub-1"]
    assert out["grand"][0][0] == "grand" and out["grand"][1] == ["child-exit", 0]
    assert out["cpu_count"] == out["machine_cpus"] >= 1
    assert out.get("closed") is True
    assert out["fork_pipe"] == "multiprocessing.connection" and out["fork_code"] == 5
    assert out["dragon_pipe"] == "dragon.infrastructure.connection"
    assert not no_residue_of(out["run"])


PIPES = """
def echo(conn):
    while True:
        try:
            m = conn.recv()
        except EOFError:
            return
        conn.send(m)

def writer(w, n):
    for i in range(n):
        w.send_bytes(b"%d" % i)
    w.close()

if __name__ == "__main__":
    mp.set_start_method("dragon")
    out = {}
    a, b = mp.Pipe()
    e = mp.Process(target=echo, args=(b,)); e.start(); b.close()
    objs = [None, 0, "x" * 100, b"", list(range(1000)), {"k": (1, 2.5)}]
    got = []
    for o in objs:
        a.send(o); got.append(a.recv())
    out["echo"] = got == objs
    big = os.urandom(5 << 20)
    r3, w3 = mp.Pipe(duplex=False)
    w3.send_bytes(big, 7, 1 << 20)
    out["big"] = r3.recv_bytes() == big[7:7 + (1 << 20)]
    a.close(); e.join(60); out["echo_exit"] = e.exitcode
    r, w = mp.Pipe(duplex=False)
    p = mp.Process(target=writer, args=(w, 100)); p.start(); w.close()
    vals = []
    while True:
        try:
            vals.append(int(r.recv_bytes()))
        except EOFError:
            break
    out["eof_after"] = vals == list(range(100))
    p.join()
    r2, w2 = mp.Pipe(duplex=False)
    try:
        w2.send(lambda: 1)
    except Exception as ex:
        out["unpicklable"] = type(ex).__name__
    w2.send("still fine"); out["usable"] = r2.recv()
    buf = bytearray(10)
    w2.send_bytes(b"0123456789abc")
    try:
        r2.recv_bytes_into(buf)
    except mp.BufferTooShort as ex:
        out["too_short"] = ex.args[0] == b"0123456789abc"
    out["poll_empty"] = r2.poll(0.05)
    try:
        r2.send(1)
    except OSError:
        out["readonly"] = True
    print(json.dumps(out), flush=True)
"""


def test_pipes_eof_errors_and_objects(script):
    out = last_json(script(PRELUDE, PIPES).run(timeout=180).stdout)
    assert out["echo"] is True and out["echo_exit"] == 0 and out["big"] is True
    assert out["eof_after"] is True
    assert out["unpicklable"] in ("PicklingError", "AttributeError")
    assert out["usable"] == "still fine"
    assert out["too_short"] is True and out["poll_empty"] is False and out["readonly"] is True


FILENO = """
import array, select, selectors, tempfile
from multiprocessing import reduction

def write_to(conn, data):
    fd = reduction.recv_handle(conn)
    os.write(fd, data)
    os.close(fd)
    conn.send("written")

def sends_plain(conn):
    conn.send("not a descriptor")

def is_eventfd(fd):
    try:
        return "eventfd" in os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False

if __name__ == "__main__":
    mp.set_start_method("dragon")
    out = {}
    a, b = mp.Pipe()
    fd = a.fileno()
    out["same_fd"] = a.fileno() == fd and isinstance(fd, int) and is_eventfd(fd)
    out["quiet"] = select.select([a], [], [], 0.05)[0] == []
    b.send_bytes(b"x")
    out["ready"] = select.select([a], [], [], 10)[0] == [a]
    sel = selectors.DefaultSelector(); sel.register(a, selectors.EVENT_READ)
    out["selector"] = [k.fileobj for k, _ in sel.select(10)] == [a]
    out["data"] = a.recv_bytes() == b"x"
    deadline = time.monotonic() + 10
    while select.select([fd], [], [], 0)[0] and time.monotonic() < deadline:
        time.sleep(0.001)  # the watcher makes it quiet again after the recv
    out["quiet_after_recv"] = select.select([fd], [], [], 0)[0] == []
    sel.close()
    # recv_bytes_into counts bytes, as the stdlib's, whatever the item size
    b.send_bytes(array.array("i", range(4)))
    buf = array.array("i", [0] * 10)
    out["into"] = [a.recv_bytes_into(buf, 8), list(buf[:6])]
    # a descriptor through the connection, to a child
    path = tempfile.mktemp()
    p = mp.Process(target=write_to, args=(b, b"through the pipe")); p.start()
    with open(path, "wb") as f:
        reduction.send_handle(a, f.fileno(), p.pid)
    out["child"] = a.recv() if a.poll(60) else f"no answer in 60 s (exit code {p.exitcode})"
    p.join(60)
    with open(path, "rb") as f:
        out["written"] = f.read().decode()
    os.unlink(path)
    q = mp.Process(target=sends_plain, args=(b,)); q.start()
    try:
        if a.poll(60):
            reduction.recv_handle(a)
    except RuntimeError as e:
        out["not_a_handle"] = str(e)
    q.join(60)
    # the end: readable, then EOFError; closed: no fileno, its eventfd goes
    b.close()
    out["eof_ready"] = select.select([a], [], [], 10)[0] == [a]
    try:
        if a.poll(60):  # (true at the end too)
            a.recv()
    except EOFError:
        out["eof"] = True
    a.close()
    try:
        a.fileno()
    except OSError:
        out["closed_fileno"] = True
    deadline = time.monotonic() + 10
    while is_eventfd(fd) and time.monotonic() < deadline:
        time.sleep(0.01)
    out["fd_released"] = not is_eventfd(fd)
    print(json.dumps(out), flush=True)
"""


def test_fileno_is_a_readiness_descriptor_and_handles_pass_over_connections(script):
    # fileno() is readable exactly while recv would not block (select,
    # selectors), and reduction.send_handle/recv_handle pass a descriptor
    # over a Dragon connection (via the sender's resource sharer).
    out = last_json(script(PRELUDE, FILENO).run(timeout=180).stdout)
    assert out["same_fd"] and out["quiet"] and out["ready"] and out["selector"] and out["data"]
    assert out["quiet_after_recv"] is True
    assert out["into"] == [16, [0, 0, 0, 1, 2, 3]]
    assert out["child"] == "written" and out["written"] == "through the pipe"
    assert "str, not a descriptor" in out.get("not_a_handle", ""), out
    assert out["eof_ready"] and out.get("eof") and out["closed_fileno"] and out["fd_released"], out


ACROSS = """
import numpy as np
from dragon.native.machine import System, Node, current
NODES = 4
N_PROD, N_CONS, PER = 4, 4, 300

def produce(q, k):
    for i in range(PER):
        q.put((k, i, current().h_uid, b"p" * (i * 131 % 5000)))

def consume(q, res, n):
    seen = []
    for _ in range(n):
        k, i, node, pad = q.get(timeout=120)
        assert len(pad) == i * 131 % 5000
        seen.append((k, i))
    res.put((current().h_uid, seen))

def big_echo(conn):
    a = conn.recv()
    conn.send(a * 2)
    conn.send_bytes(conn.recv_bytes())

def jq_worker(jq):
    while True:
        item = jq.get()
        if item is None:
            jq.task_done(); return
        jq.task_done()

def sizes_from_afar(q, sq, jq, bq, res):
    # q, sq, jq, bq are node 0's: every size is asked of node 0 over the lane
    r = {"node": current().h_uid, "q": [q.qsize(), q.empty()], "sq": sq.empty(), "bq_full": bq.full()}
    for i in range(3):
        q.put(i)
    r["q_after_puts"] = q.qsize()  # its own puts, arrived
    for _ in range(2):
        jq.get(); jq.task_done()
    jq.join()  # every task done: returns
    r["jq_joined"] = True
    sq.put("x")
    r["sq_after_put"] = sq.empty()
    res.put(r)

def dup_over_free_fds(conn):
    # CPython's test_large_fd_transfer: fileno(), then dup2 onto every free
    # number below 256. Whatever descriptor reaching the (node 0) channel
    # takes must be open by then, not opened by the watcher in between.
    for i in range(256):
        try:
            os.fstat(i)
        except OSError:
            os.dup2(conn.fileno(), i)
    conn.send(current().h_uid)

def wait_target(conn, delay):
    time.sleep(delay)
    conn.send(("done", current().h_uid))

if __name__ == "__main__":
    mp.set_start_method("dragon")
    out = {}
    s = System()
    out["nnodes"] = s.nnodes
    out["hosts"] = [Node(h).hostname for h in s.nodes]
    out["me"] = current().h_uid
    q, res = mp.Queue(), mp.Queue()
    total = N_PROD * PER
    share = [total // N_CONS] * N_CONS
    cons = [mp.Process(target=consume, args=(q, res, n)) for n in share]
    prods = [mp.Process(target=produce, args=(q, k)) for k in range(N_PROD)]
    for p in cons + prods:
        p.start()
    out["nodes_used"] = sorted({p._popen.node for p in cons + prods})
    seen = []
    cnodes = []
    for _ in cons:
        node, part = res.get(timeout=180)
        cnodes.append(node)
        seen += part
    for p in cons + prods:
        p.join(60)
    out["exactly_once"] = sorted(map(tuple, seen)) == [(k, i) for k in range(N_PROD) for i in range(PER)]
    out["codes"] = [p.exitcode for p in cons + prods]
    # large objects, both ends on different nodes
    a, b = mp.Pipe()
    from dragon.infrastructure.policy import Policy
    with Policy(placement=Policy.Placement.HOST_ID, host_id=2):
        e = mp.Process(target=big_echo, args=(b,))
    e.start()
    arr = np.arange(4 << 20, dtype=np.float64)  # 32 MiB
    a.send(arr)
    back = a.recv()
    out["numpy"] = bool((back == arr * 2).all())
    blob = os.urandom(64 << 20)
    a.send_bytes(blob)
    out["blob"] = a.recv_bytes() == blob
    e.join(60); out["echo_node"] = e._popen.node
    # joinable queue and simple queue across nodes
    jq = mp.JoinableQueue()
    ws = [mp.Process(target=jq_worker, args=(jq,)) for _ in range(3)]
    for w in ws: w.start()
    for i in range(200): jq.put(i)
    for w in ws: jq.put(None)
    jq.join()
    for w in ws: w.join(60)
    out["joinable"] = [w.exitcode for w in ws]
    sq = mp.SimpleQueue()
    out["sq_empty"] = sq.empty()
    sp = mp.Process(target=produce, args=(sq, 9)); sp.start(); sp.join()
    out["sq"] = [sq.get()[1] for _ in range(PER)] == list(range(PER))
    # qsize/empty/full and JoinableQueue.join asked from another node
    q, sq, jq, bq, r = mp.Queue(), mp.SimpleQueue(), mp.JoinableQueue(), mp.Queue(3), mp.Queue()
    for i in range(5): q.put(i)
    sq.put(1)
    jq.put("a"); jq.put("b")
    for i in range(3): bq.put(i)
    with Policy(placement=Policy.Placement.HOST_ID, host_id=3):
        far = mp.Process(target=sizes_from_afar, args=(q, sq, jq, bq, r))
    far.start()
    out["far"] = r.get(timeout=120)
    far.join(60)
    out["q_here"] = q.qsize()
    # fileno() of a channel on another node, then dup2 over free numbers
    pairs = [mp.Pipe() for _ in range(12)]
    with Policy(placement=Policy.Placement.HOST_ID, host_id=1):
        ds = [mp.Process(target=dup_over_free_fds, args=(b,)) for a, b in pairs]
    for d in ds: d.start()
    out["dup_nodes"] = sorted({a.recv() for a, b in pairs if a.poll(60)})
    for d in ds: d.join(60)
    out["dup_codes"] = [d.exitcode for d in ds]
    # wait over pipes of other nodes, a process sentinel and a socket
    import socket
    s1, s2 = socket.socketpair()
    pairs = [mp.Pipe(duplex=False) for _ in range(3)]
    ws = [mp.Process(target=wait_target, args=(w, 0.3 * (i + 1))) for i, (r, w) in enumerate(pairs)]
    for w in ws: w.start()
    readers = [r for r, w in pairs]
    first = wait(readers + [s1], 60)
    out["wait_first"] = readers.index(first[0]) if first and first[0] in readers else -1
    s2.send(b"x")
    out["wait_socket"] = s1 in wait(readers + [s1], 60)
    got = set()
    while len(got) < 3:
        for r in wait(readers, 60):
            got.add(r.recv()[1]); readers.remove(r)
    out["wait_nodes"] = sorted(got)
    for w in ws: w.join(60)
    out["run"] = dragon.current_runtime().run_id
    print(json.dumps(out), flush=True)
"""


@pytest.mark.system
def test_queues_and_pipes_across_four_virtual_nodes(script):
    p = script(PRELUDE, ACROSS).run(under=["--launcher", "virtual", "--nodes", "4"], timeout=600)
    out = last_json(p.stdout)
    assert out["nnodes"] == 4 and len(out["hosts"]) == 4
    assert out["nodes_used"] == [0, 1, 2, 3]
    assert out["exactly_once"] is True and out["codes"] == [0] * 8
    assert out["numpy"] is True and out["blob"] is True and out["echo_node"] == 2 != out["me"]
    assert out["joinable"] == [0, 0, 0]
    assert out["sq_empty"] is True and out["sq"] is True
    assert out["far"] == {"node": 3, "q": [5, False], "sq": False, "bq_full": True, "q_after_puts": 8,
                          "jq_joined": True, "sq_after_put": False}
    assert out["q_here"] == 8
    assert out["dup_nodes"] == [1] and out["dup_codes"] == [0] * 12, out
    assert out["wait_first"] == 0 and out["wait_socket"] is True
    assert len(out["wait_nodes"]) >= 2
    assert not no_residue_of(out["run"])


FAULTS = """
def put_forever(q):
    blob = b"z" * (256 << 10)
    while True:
        q.put(blob)

if __name__ == "__main__":
    mp.set_start_method("dragon")
    out = {}
    from dragon.native.queue import Queue as NativeQueue
    nq = NativeQueue(maxsize=8)
    try:
        nq.put(lambda: 0)  # DragonHPC's Queue raises in the caller
    except Exception as ex:
        out["unpicklable"] = type(ex).__name__
    nq.put("fine"); out["after"] = nq.get(timeout=10)
    q = mp.Queue(maxsize=8)
    q.put(lambda: 0)  # the stdlib's Queue reports it on stderr and drops it
    q.put("next"); out["mp_after"] = q.get(timeout=10)
    ps = [mp.Process(target=put_forever, args=(q,)) for _ in range(2)]
    for p in ps: p.start()
    n = 0
    for _ in range(40):
        assert len(q.get(timeout=60)) == 256 << 10
    for p in ps: p.kill()
    for p in ps: p.join(60)
    # whatever is left is whole messages only
    while True:
        try:
            m = q.get(timeout=0.5)
        except Exception:
            break
        assert len(m) == 256 << 10, len(m)
        n += 1
    out["left_whole"] = n
    out["codes"] = [p.exitcode for p in ps]
    q.put("still works"); out["still"] = q.get(timeout=10)
    out["run"] = dragon.current_runtime().run_id
    print(json.dumps(out), flush=True)
"""


@pytest.mark.system
def test_killed_producers_leave_whole_messages(script):
    p = script(PRELUDE, FAULTS).run(under=["--launcher", "virtual", "--nodes", "2"], timeout=300)
    out = last_json(p.stdout)
    assert out["unpicklable"] in ("PicklingError", "AttributeError")
    assert out["after"] == "fine" and out["still"] == "still works" and out["mp_after"] == "next"
    assert "Can't pickle" in p.stderr
    assert out["codes"] == [-9, -9]
    # Whole messages only (asserted by the script); more than maxsize may be
    # left: a remote producer's sends already in its lane are delivered.
    assert out["left_whole"] >= 0
    assert not no_residue_of(out["run"])


GIB = """
import numpy as np

def produce(q):
    a = np.ones(1 << 27, dtype=np.float64)  # 1 GiB
    a[::4096] = np.arange(a[::4096].size)
    q.put(a)
    q.put(b"")

if __name__ == "__main__":
    mp.set_start_method("dragon")
    from dragon.infrastructure.policy import Policy
    q = mp.Queue()
    with Policy(placement=Policy.Placement.HOST_ID, host_id=1):
        p = mp.Process(target=produce, args=(q,))
    p.start()
    a = q.get(timeout=300)
    ok = a.nbytes == 1 << 30 and bool((a[::4096] == np.arange(a[::4096].size)).all()) and float(a[1]) == 1.0
    empty = q.get(timeout=60)
    p.join(60)
    print(json.dumps({"ok": ok, "empty": empty == b"", "node": p._popen.node, "code": p.exitcode,
                      "run": dragon.current_runtime().run_id}), flush=True)
"""


@pytest.mark.system
def test_a_gib_object_and_an_empty_one_through_a_queue_across_nodes(script):
    # The default 64 MiB pools: the GiB streams through them in chunks.
    p = script(PRELUDE, GIB).run(under=["--launcher", "virtual", "--nodes", "2"], timeout=600)
    out = last_json(p.stdout)
    assert out == {"ok": True, "empty": True, "node": 1, "code": 0, "run": out["run"]}
    assert not no_residue_of(out["run"])


class _Registered:
    def __init__(self, v):
        self.v = v


def _reduce_as_tagged(o):
    return (_Registered, (("tagged", o.v),))


def _reduce_as_other(o):
    return (_Registered, (("other", o.v),))


class _Bytes(bytes):
    pass


def test_pickles_honour_reducers_registered_at_any_time():
    # _dumps keeps a merged dispatch table (ForkingPickler's cost per call,
    # paid once): a reducer registered or replaced after the first pickle
    # takes effect all the same, as with ForkingPickler.dumps.
    import copyreg
    import pickle
    from multiprocessing.reduction import ForkingPickler

    from dragon.infrastructure.connection import _dumps

    assert pickle.loads(_dumps(_Registered(1))).v == 1
    try:
        ForkingPickler.register(_Registered, _reduce_as_tagged)
        assert pickle.loads(_dumps(_Registered(2))).v == ("tagged", 2)
        ForkingPickler.register(_Registered, _reduce_as_other)  # replaced: same size of table
        assert pickle.loads(_dumps(_Registered(3))).v == ("other", 3)
    finally:
        ForkingPickler._extra_reducers.pop(_Registered, None)
    assert pickle.loads(_dumps(_Registered(4))).v == 4
    try:
        copyreg.pickle(_Registered, _reduce_as_tagged)
        assert pickle.loads(_dumps(_Registered(5))).v == ("tagged", 5)
    finally:
        copyreg.dispatch_table.pop(_Registered, None)
    assert bytes(_dumps(_Registered(6))) == bytes(ForkingPickler.dumps(_Registered(6), 5))

    def override(self, obj):  # as dragon.jupyter installs one (functions of a notebook by value)
        return (_Registered, (("override", obj.v),)) if isinstance(obj, _Registered) else NotImplemented

    had = ForkingPickler.__dict__.get("reducer_override")
    ForkingPickler.reducer_override = override
    try:
        assert pickle.loads(_dumps(_Registered(7))).v == ("override", 7)
    finally:
        if had is None:
            del ForkingPickler.reducer_override
        else:
            ForkingPickler.reducer_override = had
    assert pickle.loads(_dumps(_Registered(8))).v == 8
    # Exact bytes, str, int, float, bool and None skip the pickler above
    # (pickle.dumps): the same pickle, as no table or override is asked
    # about them; a subclass is not one of them.
    ForkingPickler.reducer_override = override
    try:
        for o in (b"x" * 64, "s\u00e9", 1 << 70, -3, 2.5, True, None, b"", _Bytes(b"sub")):
            assert bytes(_dumps(o)) == bytes(ForkingPickler.dumps(o, 5)), o
    finally:
        del ForkingPickler.reducer_override


class _PicklesInside:
    """Its reducer pickles another object while the outer pickle is being made."""

    def __init__(self, inner):
        self.inner = inner

    def __reduce__(self):
        from dragon.infrastructure.connection import _dumps

        return (_unpickle_inside, (bytes(_dumps(self.inner)),))


def _unpickle_inside(blob):
    import pickle

    return _PicklesInside(pickle.loads(blob))


def test_kept_pickler_serves_nested_large_and_threaded_pickles():
    import pickle
    import threading

    from dragon.infrastructure import connection as c

    nested = pickle.loads(c._dumps([_PicklesInside({"k": 1}), "after"]))
    assert nested[0].inner == {"k": 1} and nested[1] == "after"
    big = [b"y" * (c.SMALL_PICKLE + 1)]  # (a list: bytes alone go to pickle.dumps)
    out = c._dumps(big)
    assert isinstance(out, memoryview) and pickle.loads(out) == big  # its own buffer, not copied
    assert pickle.loads(c._dumps(big[0])) == big[0]
    assert pickle.loads(c._dumps(("small", 1))) == ("small", 1)  # and the kept one still serves
    with pytest.raises(Exception):
        c._dumps(["half", lambda: 1])  # fails halfway: nothing of it stays in the kept buffer
    assert pickle.loads(c._dumps(("clean", 2))) == ("clean", 2)
    errors = []

    def many(tag):
        for i in range(2000):
            obj = (tag, i, "x" * (i % 50))
            if pickle.loads(c._dumps(obj)) != obj:
                errors.append(obj)

    threads = [threading.Thread(target=many, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


FORK_BOMB = """
import sys
import dragon
import multiprocessing

def foo():
    print("123")

# CPython's mp_fork_bomb.py with `import dragon` added: no __main__ guard, so
# the child, running this module as __mp_main__, must fail, not start another.
multiprocessing.set_start_method(sys.argv[1] if len(sys.argv) > 1 else "dragon")
p = multiprocessing.Process(target=foo)
p.start()
p.join()
sys.exit(p.exitcode)
"""


def test_no_fork_bomb_without_a_main_guard(script):
    # CPython's TestNoForkBomb, which skips.txt lists for dragon (its fresh
    # `python -I` never imports dragon): the same check with the import.
    p = script(FORK_BOMB).run("dragon", check=False, timeout=120)
    assert p.returncode != 0
    assert p.stdout == ""
    assert "RuntimeError" in p.stderr


WRITERS = """
import pickle, threading

if __name__ == "__main__":
    mp.set_start_method("dragon")
    a, b = mp.Pipe(duplex=False)
    a.fileno()  # its watcher applies records too, beside the recv below
    got = []

    def reader():
        try:
            while True:
                got.append(a.recv_bytes())
        except EOFError:
            got.append(None)

    t = threading.Thread(target=reader); t.start()
    for i in range(2000):  # a writer copy announced, a message, the copy closed
        c = pickle.loads(pickle.dumps(b))
        c.send_bytes(b"%d" % i)
        c.close()
    b.close()
    t.join(30)
    print(json.dumps({"eof": not t.is_alive() and got[-1:] == [None], "n": len(got) - 1}), flush=True)
"""


def test_writer_counts_stay_exact_with_two_threads_reading_one_end(script):
    # A recv thread and the fileno() watcher both apply writer records of
    # one end; the count must stay exact, or EOF never comes (a hang).
    out = last_json(script(PRELUDE, WRITERS).run(timeout=180).stdout)
    assert out == {"eof": True, "n": 2000}
