"""The distributed dictionary (dragon.data.ddict, docs/ddict.md): the mapping
interface, checkpoints and the rest of DragonHPC's API on one node
(embedded), clients on every node of a 4-node virtual cluster (ProcessGroup
members and multiprocessing children) with concurrent writers, values from
0 bytes to 256 MiB, and the faults: full, unpicklable, a dead manager, and
nothing left behind."""
import json

import pytest

from conftest import no_residue_of, pid_alive, wait_gone

PRELUDE = """
import json, os, pickle, signal, sys, threading, time
import dragon
from dragon.data.ddict import (DDict, DDictCheckpointSync, DDictError, DDictFull, DDictKeyError,
                               DDictManagerDied, DDictTimeout)
from dragon.native.process_group import ProcessGroup
from dragon.native.process import ProcessTemplate
from dragon.infrastructure.policy import Policy
"""


def last_json(stdout):
    return json.loads([l for l in stdout.splitlines() if l.startswith("{")][-1])


MAPPING = """
class Point:
    def __init__(self, x): self.x = x
    def __eq__(self, o): return isinstance(o, Point) and o.x == self.x
    def __hash__(self): return hash(self.x)
    def __repr__(self): return f"Point({self.x})"

def child(dd):
    dd["from_child"] = len(dd)

if __name__ == "__main__":
    out = {}
    d = DDict(2, 1, 512 << 20)
    keys = ["s", b"b", 7, 2.5, (1, "t"), frozenset({3}), None, Point(4), "", b""]
    for i, k in enumerate(keys):
        d[k] = {"i": i, "k": k}
    out["get_all"] = all(d[k] == {"i": i, "k": k} for i, k in enumerate(keys))
    out["len"] = len(d)
    out["keys"] = sorted(map(repr, d.keys())) == sorted(map(repr, keys))
    out["values"] = sorted(v["i"] for v in d.values()) == list(range(len(keys)))
    out["items"] = all(d[k] == v for k, v in d.items())
    out["in"] = [("s" in d), ("nope" in d), (Point(4) in d), (Point(5) in d)]
    out["get_default"] = [d.get("nope"), d.get("nope", 3), d.get("s")["i"]]
    out["pop"] = [d.pop("s")["i"], d.pop("s", "gone")]
    try:
        d.pop("s"); out["pop_missing"] = None
    except KeyError as e:
        out["pop_missing"] = type(e).__name__
    del d[b"b"]
    try:
        del d[b"b"]; out["del_missing"] = None
    except KeyError:
        out["del_missing"] = "KeyError"
    try:
        d["missing"]; out["getitem_missing"] = None
    except KeyError as e:
        out["getitem_missing"] = repr(e.args[0])
    d[7] = "overwritten"
    out["overwrite"] = d[7]
    d.update({"u1": 1, "u2": [2]}, u3=3)
    d.update([("u4", 4)])
    c = d.copy()
    out["copy"] = type(c).__name__ == "dict" and c["u2"] == [2] and c["u3"] == 3 and c["u4"] == 4 and len(c) == len(d)
    out["iter"] = sorted(map(repr, iter(d))) == sorted(map(repr, d.keys()))
    # bytes values come back as bytes; other buffers as bytes too; 0 bytes
    d["raw"] = b"\\x00\\xffraw"; d["ba"] = bytearray(b"ba"); d["empty"] = b""; d["none"] = None
    out["raw"] = [d["raw"] == b"\\x00\\xffraw", d["ba"] == b"ba", d["empty"] == b"", d["none"] is None]
    d.clear()
    out["cleared"] = [len(d), d.keys()]
    # unpicklable key and value raise in the caller; nothing changed
    d["keep"] = 1
    for bad in (lambda: 1, threading.Lock()):
        for where in ("key", "value"):
            try:
                if where == "key":
                    d[bad] = 1
                else:
                    d["k2"] = bad
                out[f"unpicklable_{where}"] = None
            except (pickle.PicklingError, TypeError, AttributeError) as e:
                out[f"unpicklable_{where}"] = type(e).__name__
    out["after_unpicklable"] = [len(d), d["keep"]]
    # sizes: 0 B to 64 MiB through every path (inline slot, pool block, pieces)
    sizes = [0, 1, 1000, 1500, 65536, (1 << 20) + 1, 8 << 20, (8 << 20) + 3, 64 << 20]
    ok = []
    for n in sizes:
        v = os.urandom(n)
        d[("size", n)] = v
        ok.append(d[("size", n)] == v)
    out["sizes"] = ok
    import numpy as np
    a = np.arange(3 << 20, dtype=np.float64)   # 24 MiB, pickled
    d["np"] = a
    out["numpy"] = bool((d["np"] == a).all())
    st = d.stats
    out["stats"] = [sorted(s) for s in st][0]
    out["stats_used"] = sum(s["used_bytes"] for s in st) > 64 << 20
    out["num_managers"] = d.num_managers
    # serialize / attach in a ProcessGroup member and in a multiprocessing child
    s = d.serialize()
    def member(ser):
        e = DDict.attach(ser)
        e["from_member"] = (os.getpid(), e["keep"])
        e.detach()
    with ProcessGroup() as pg:
        pg.add_process(1, ProcessTemplate(member, args=(s,)))
        pg.start(); pg.join(120)
    out["member"] = d["from_member"][1]
    import multiprocessing as mp
    mp.set_start_method("dragon")
    p = mp.Process(target=child, args=(d,)); p.start(); p.join(120)
    out["child"] = [p.exitcode, "from_child" in d]
    try:
        DDict.attach("not a ddict")
        out["bad_attach"] = None
    except ValueError as e:
        out["bad_attach"] = str(e)
    pids = [m["pid"] for m in d._meta["managers"]]
    d.destroy()
    out["pids"] = pids
    out["run"] = dragon.current_runtime().run_id
    print(json.dumps(out), flush=True)
"""


MIRROR = """
def reader(ser, q, back):
    # Told a key's value right after its put returned, a reader on the
    # manager's node must read that value or a later one (the mirror changes
    # before the reply), never an earlier one.
    d = DDict.attach(ser)
    stale = 0
    while True:
        item = q.get()
        if item is None:
            break
        k, v = item
        a, b = d[k], d.get(k)   # that value or a later one (the writer goes on)
        if not (a >= v and b >= a and k in d and d.get(("never", k), "dflt") == "dflt"):
            stale += 1
    back.put(stale)
    d.detach()

if __name__ == "__main__":
    import multiprocessing as mp
    mp.set_start_method("dragon")
    out = {}
    d = DDict(2, 1, 64 << 20)
    for k in range(50):
        d[("k", k)] = {"v": k}
    d["bytes"] = b"\\x00raw"
    out["mirrors"] = [m["mirror"] is not None for m in d._meta["managers"]]
    before = [s["ops"] for s in d.stats]
    hits = [d[("k", k)] == {"v": k} for k in range(50)]
    misses = [d.get(("nope", k), "dflt") == "dflt" and ("nope", k) not in d for k in range(20)]
    try:
        d["nope"]; out["keyerror"] = None
    except KeyError:
        out["keyerror"] = True
    out["reads"] = [all(hits), all(misses), d["bytes"] == b"\\x00raw"]
    after = [s["ops"] for s in d.stats]
    out["manager_ops_for_reads"] = [a - b - 1 for a, b in zip(after, before)]   # (- the stats call itself)
    # a value too large for the mirror, and a removed key: asked, and right
    d["large"] = b"L" * (2 << 20)
    del d[("k", 3)]
    out["large"] = [d["large"] == b"L" * (2 << 20), ("k", 3) in d, d.get(("k", 3), "gone")]
    # ordering across processes
    q, back = mp.Queue(), mp.Queue()
    ps = [mp.Process(target=reader, args=(d.serialize(), q, back)) for _ in range(2)]
    for p in ps: p.start()
    for i in range(300):
        k = ("o", i % 7)
        d[k] = i
        q.put((k, i))
    for p in ps: q.put(None)
    out["stale"] = [back.get(timeout=60) for p in ps]
    for p in ps: p.join(60)
    out["codes"] = [p.exitcode for p in ps]
    # a new checkpoint: a client there asks until the mirror shows it
    c1 = DDict.attach(d.serialize()); c1.checkpoint()
    c1[("k", 1)] = "at 1"
    try:
        d[("k", 1)]; old = None
    except DDictCheckpointSync:
        old = "sync"   # (its manager keeps checkpoint 1 only now)
    out["chkpt"] = [c1[("k", 1)], old, c1.get(("k", 2), "not carried")]
    c1.detach()
    names = [m["mirror"][0] for m in d._meta["managers"]]
    d.destroy()
    out["mirror_files_left"] = [os.path.exists("/dev/shm" + n) for n in names]
    try:   # no read is answered from a mirror once destroy() returned
        d[("k", 5)]; out["after_destroy"] = None
    except DDictManagerDied:
        out["after_destroy"] = "died"
    out["run"] = dragon.current_runtime().run_id
    print(json.dumps(out), flush=True)
"""


def test_reads_on_the_managers_node_come_from_its_mirror(script):
    p = script(PRELUDE, MIRROR).run(timeout=300)
    out = last_json(p.stdout)
    assert out["mirrors"] == [True, True]
    assert out["reads"] == [True, True, True] and out["keyerror"] is True
    assert out["manager_ops_for_reads"] == [0, 0]   # 50 hits, 20 misses, 20 `in`: no request
    assert out["large"] == [True, False, "gone"]
    assert out["chkpt"] == ["at 1", "sync", "not carried"]
    assert out["stale"] == [0, 0] and out["codes"] == [0, 0]
    assert out["mirror_files_left"] == [False, False] and out["after_destroy"] == "died"
    assert not no_residue_of(out["run"])


def test_mapping_on_one_node(script):
    p = script(PRELUDE, MAPPING).run(timeout=300)
    out = last_json(p.stdout)
    assert out["get_all"] is True and out["len"] == 10 and out["keys"] is True
    assert out["values"] is True and out["items"] is True
    assert out["in"] == [True, False, True, False]
    assert out["get_default"] == [None, 3, 0]
    assert out["pop"] == [0, "gone"] and out["pop_missing"] == "DDictKeyError"
    assert out["del_missing"] == "KeyError" and out["getitem_missing"] == "'missing'"
    assert out["overwrite"] == "overwritten" and out["copy"] is True and out["iter"] is True
    assert out["raw"] == [True, True, True, True]
    assert out["cleared"] == [0, []]
    assert out["unpicklable_key"] in ("PicklingError", "TypeError", "AttributeError")
    assert out["unpicklable_value"] in ("PicklingError", "TypeError", "AttributeError")
    assert out["after_unpicklable"] == [1, 1]
    assert out["sizes"] == [True] * 9 and out["numpy"] is True
    assert "used_bytes" in out["stats"] and "capacity_bytes" in out["stats"] and out["stats_used"] is True
    assert out["num_managers"] == 2
    assert out["member"] == 1 and out["child"] == [0, True]
    assert "not a serialized DDict" in out["bad_attach"]
    assert wait_gone(out["pids"])
    assert not no_residue_of(out["run"])


BEYOND = """
if __name__ == "__main__":
    out = {}
    # checkpoints: a key written at c is seen at c; pput keys are carried forward
    for wss in (1, 2, 3):
        d = DDict(1, 1, 16 << 20, working_set_size=wss)
        d["a"] = 0; d.pput("p", 0)
        seen = []
        for c in range(1, 5):
            d.checkpoint()
            d["a"] = c
            seen.append([d["a"], d["p"], d.current_checkpoint_id])
        d.rollback()   # back to 3: kept only if wss >= 2
        try:
            back = [d["a"], d["p"]]
        except DDictCheckpointSync as e:
            back = ["sync", "working set" in str(e)]
        old = DDict.attach(d.serialize())   # a client still at checkpoint 0
        try:
            old_read = old["a"]
        except DDictCheckpointSync:
            old_read = "sync"
        except KeyError:
            old_read = "missing"
        out[f"wss{wss}"] = {"seen": seen, "back": back, "old": old_read,
                            "kept": d.stats[0]["checkpoints"]}
        old.detach()
        d.destroy()
    # a non-persistent key is not seen at a later checkpoint
    d = DDict(1, 1, 16 << 20, working_set_size=2)
    d["np"] = 1; d.checkpoint()
    out["nonpersistent_later"] = d.get("np", "absent")
    d.destroy()
    # wait_for_keys: a reader waits until the key is written at its checkpoint
    d = DDict(2, 1, 16 << 20, wait_for_keys=True, timeout=30)
    def reader(ser, q):
        e = DDict.attach(ser)
        q.send(pickle.dumps(("got", e["later"])))
    from dragon.channels import Channel
    ch = Channel(capacity=4)
    with ProcessGroup() as pg:
        pg.add_process(1, ProcessTemplate(reader, args=(d.serialize(), ch)))
        pg.start()
        time.sleep(1.0)
        early = ch._ch.queued()
        d["later"] = "v"
        out["wait_for_keys"] = [early, pickle.loads(ch.recv(60))]
        pg.join(60)
    short = DDict.attach(d.serialize(), timeout=0.5)
    try:
        short["never"]; out["wait_timeout"] = None
    except DDictTimeout as e:
        out["wait_timeout"] = "manager" in str(e)
    out["get_default_no_wait"] = d.get("never", "dflt")
    short.detach(); ch.destroy(); d.destroy()
    # bput/bget, freeze, manager(i), local_keys
    d = DDict(3, 1, 30 << 20)
    d.bput("b", [1, 2])
    out["bget"] = d.bget("b")
    out["bput_every_manager"] = [d.manager(i).get("b") for i in range(3)]
    out["bput_counted_once"] = [len(d), d.keys()]
    for i in range(30):
        d[i] = i
    out["manager_views"] = sorted(k for i in range(3) for k in d.manager(i).keys() if k != "b") == list(range(30))
    out["manager_len"] = sum(len(d.manager(i)) for i in range(3))
    v = d.manager(1); v["only1"] = 1
    out["manager_put"] = ["only1" in d.manager(1), d.manager(0).get("only1"), d.manager(2).get("only1")]
    out["local_keys"] = len(d.local_keys())
    d.freeze()
    out["frozen"] = d.is_frozen
    try:
        d["x"] = 1; out["frozen_put"] = None
    except DDictError as e:
        out["frozen_put"] = "frozen" in str(e)
    out["frozen_read"] = d[5]
    d.unfreeze(); d["x"] = 1
    out["unfrozen"] = [d.is_frozen, d["x"]]
    ro = DDict.attach(d.serialize(), read_only=True)
    try:
        ro["y"] = 1; out["read_only"] = None
    except DDictError as e:
        out["read_only"] = "read-only" in str(e)
    ro.detach()
    d.destroy()
    # full: a clear error naming the manager and its size; nothing lost
    d = DDict(1, 1, 1 << 20)
    d["a"] = b"a" * 1000
    try:
        d["big"] = b"x" * (2 << 20); out["full"] = None
    except DDictFull as e:
        out["full"] = str(e)
    d["a"] = b"b" * 1000
    try:
        d["a"] = b"c" * (2 << 20)
    except DDictFull:
        pass
    out["after_full"] = [d["a"] == b"b" * 1000, "big" in d, len(d)]
    d.destroy()
    # a dead manager: a clear error naming it, not a hang
    d = DDict(2, 1, 16 << 20)
    d["k"] = 1
    m = d._meta["managers"][1]
    os.kill(m["pid"], signal.SIGKILL)
    # (until it has ended, reads on its node may still come from its read mirror)
    t_end = time.monotonic() + 10
    while time.monotonic() < t_end:
        try:
            if open(f"/proc/{m['pid']}/stat").read().split(")")[-1].split()[0] == "Z":
                break
        except OSError:
            break
        time.sleep(0.005)
    errs = []
    t0 = time.monotonic()
    for i in range(40):
        try:
            d.get(i)
        except DDictManagerDied as e:
            errs.append(str(e))
            break
    out["dead"] = errs[:1]
    out["dead_secs_ok"] = time.monotonic() - t0 < 30
    # the other manager's shard is still served
    from dragon.data.ddict import wire
    survivors = []
    for i in [i for i in range(40) if d._of(wire.key_bytes(i)) == 0]:
        try:
            survivors.append([i, d.get(i, "absent")])
        except DDictManagerDied as e:
            survivors.append([i, str(e)])
    out["survivors"] = survivors
    pids = [x["pid"] for x in d._meta["managers"]]
    d.destroy()
    out["pids"] = pids
    out["run"] = dragon.current_runtime().run_id
    print(json.dumps(out), flush=True)
"""


def test_checkpoints_and_the_rest_on_one_node(script):
    p = script(PRELUDE, BEYOND).run(timeout=400)
    out = last_json(p.stdout)
    for wss in (1, 2, 3):
        o = out[f"wss{wss}"]
        assert o["seen"] == [[c, 0, c] for c in range(1, 5)]
        assert len(o["kept"]) == wss and o["kept"][-1] == 4
        assert o["old"] == "sync"
    assert out["wss1"]["back"] == ["sync", True]
    assert out["wss2"]["back"] == [3, 0] and out["wss3"]["back"] == [3, 0]
    assert out["nonpersistent_later"] == "absent"
    assert out["wait_for_keys"] == [0, ["got", "v"]]
    assert out["wait_timeout"] is True and out["get_default_no_wait"] == "dflt"
    assert out["bget"] == [1, 2] and out["bput_every_manager"] == [[1, 2]] * 3
    assert out["bput_counted_once"] == [1, ["b"]]
    assert out["manager_views"] is True and out["manager_len"] == 31  # the broadcast key counts once
    assert out["manager_put"] == [True, None, None]
    assert out["local_keys"] == 32
    assert out["frozen"] is True and out["frozen_put"] is True and out["frozen_read"] == 5
    assert out["unfrozen"] == [False, 1] and out["read_only"] is True
    assert "manager 0 (node 0) is full" in out["full"] and "1048576 bytes" in out["full"]
    assert out["after_full"] == [True, False, 1]
    assert out["dead"] and "manager 1 of DDict" in out["dead"][0] and "not running" in out["dead"][0]
    # manager 0 outlives manager 1: every key of its shard is still answered
    assert len(out["survivors"]) >= 5 and all(v == "absent" for _, v in out["survivors"])
    assert out["dead_secs_ok"] is True
    assert wait_gone(out["pids"])
    assert not no_residue_of(out["run"])


ACROSS = """
def client(ser, me, rounds):
    d = DDict.attach(ser)
    node = dragon.current_runtime().node_id
    for i in range(rounds):
        d[("own", me, i)] = (me, i, node)
        d[("shared", i % 5)] = (me, i)          # every client writes the same five keys
    got = [d[("own", me, i)] for i in range(rounds)]
    assert got == [(me, i, node) for i in range(rounds)], got
    d[("done", me)] = {"node": node, "local_managers": d.local_managers, "local_keys": len(d.local_keys())}
    d.detach()

def mp_child(d, me):
    d[("mp", me)] = dragon.current_runtime().node_id

def big_writer(ser, n):
    d = DDict.attach(ser)
    v = bytes(range(256)) * (n // 256)
    d["big"] = v
    d["big_node"] = dragon.current_runtime().node_id

if __name__ == "__main__":
    out = {}
    rt = dragon.current_runtime()
    out["nnodes"] = len(rt.machine())
    d = DDict(2, 4, 4 << 30, timeout=300)
    out["manager_nodes"] = [m["node"] for m in d._meta["managers"]]
    ser = d.serialize()
    rounds = 60
    with ProcessGroup() as pg:
        for k in range(8):   # two clients on each node
            pg.add_process(1, ProcessTemplate(client, args=(ser, k, rounds),
                                              policy=Policy(placement=Policy.Placement.HOST_ID, host_id=k // 2)))
        pg.start(); pg.join(300)
        out["codes"] = [c for _, c in pg.exit_status]
    done = {k[1]: v for k, v in d.items() if isinstance(k, tuple) and k[0] == "done"}
    out["client_nodes"] = sorted(v["node"] for v in done.values())
    out["local_managers"] = sorted({tuple(v["local_managers"]) for v in done.values()})
    out["own"] = all(d[("own", me, i)] == (me, i, me // 2) for me in range(8) for i in range(rounds))
    shared = [d[("shared", j)] for j in range(5)]
    out["shared_valid"] = all(s[1] % 5 == j and 0 <= s[0] < 8 for j, s in enumerate(shared))
    out["len"] = len(d)
    out["keys_per_manager"] = [s["keys"] for s in d.stats]
    out["local_keys_sum"] = sum(v["local_keys"] for v in done.values() if v["node"] in (0, 1, 2, 3)) // 2
    import multiprocessing as mp
    mp.set_start_method("dragon")
    ps = [mp.Process(target=mp_child, args=(d, k)) for k in range(4)]
    for p in ps: p.start()
    for p in ps: p.join(120)
    out["mp"] = [[p.exitcode for p in ps], sorted(d[("mp", k)] for k in range(4))]
    # 256 MiB written from node 3, read on node 0 (and its manager elsewhere)
    n = 256 << 20
    with ProcessGroup() as pg:
        pg.add_process(1, ProcessTemplate(big_writer, args=(ser, n),
                                          policy=Policy(placement=Policy.Placement.HOST_ID, host_id=3)))
        pg.start(); pg.join(600)
    big = d["big"]
    out["big"] = [len(big) == n, big == bytes(range(256)) * (n // 256), d["big_node"]]
    del big
    out["big_manager_node"] = d._meta["managers"][__import__("zlib").crc32(b"sbig") % 8]["node"]
    pids = [m["pid"] for m in d._meta["managers"]]
    d.destroy()
    out["pids"] = pids
    out["run"] = rt.run_id
    print(json.dumps(out), flush=True)
"""


@pytest.mark.system
def test_clients_on_every_node_of_four_virtual_nodes(script):
    p = script(PRELUDE, ACROSS).run(under=["--launcher", "virtual", "--nodes", "4"], timeout=900)
    out = last_json(p.stdout)
    assert out["nnodes"] == 4
    assert out["manager_nodes"] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert out["codes"] == [0] * 8
    assert out["client_nodes"] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert out["local_managers"] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert out["own"] is True and out["shared_valid"] is True
    assert out["len"] == 8 * 60 + 5 + 8
    assert sum(out["keys_per_manager"]) == out["len"] and all(k > 0 for k in out["keys_per_manager"])
    assert out["mp"][0] == [0] * 4 and all(0 <= n < 4 for n in out["mp"][1])
    assert out["big"] == [True, True, 3] and out["big_manager_node"] not in (0, 3)  # three nodes involved
    assert wait_gone(out["pids"])
    assert not no_residue_of(out["run"])


CPP = """
if __name__ == "__main__":
    import subprocess
    exe = sys.argv[1]
    nodes = len(dragon.current_runtime().machine())
    d = DDict(1, nodes, 256 << 20)
    d["input"] = b"7"
    d["to_erase"] = b"x"
    d["py_big"] = b"p" * (5 << 20)
    from dragon.native.process import Popen
    with ProcessGroup() as pg:
        pg.add_process(1, ProcessTemplate(exe, args=(d.serialize(),), stdout=Popen.PIPE,
                                          policy=Policy(placement=Policy.Placement.HOST_ID, host_id=nodes - 1)))
        pg.start(); pg.join(120)
        cpp = json.loads(pg.read_output(0, "out").decode().strip().splitlines()[-1])
    out = {"cpp": cpp, "result": d["result"].decode(), "cpp_big": d["cpp_big"] == b"z" * (3 << 20),
           "to_erase": "to_erase" in d, "nodes": nodes, "run": dragon.current_runtime().run_id}
    d.destroy()
    print(json.dumps(out), flush=True)
"""


@pytest.mark.parametrize("nodes", [1, pytest.param(2, marks=pytest.mark.system)])
def test_cpp_client_shares_the_dictionary(script, nodes):
    from conftest import BUILD
    exe = BUILD / "bin" / "dragon-ddict-example"
    assert exe.exists(), f"{exe} is not built (cmake --build build --target dragon-ddict-example)"
    under = ["--launcher", "virtual", "--nodes", "2"] if nodes == 2 else None
    p = script(PRELUDE, CPP).run(str(exe), under=under, timeout=300)
    out = last_json(p.stdout)
    assert out["nodes"] == nodes
    assert out["result"] == f"49 (squared by C++ on node {nodes - 1})"
    assert out["cpp"] == {"py_big": 5 << 20, "size": 5, "keys": 5, "contains": True, "erased": True}
    assert out["cpp_big"] is True and out["to_erase"] is False
    assert not no_residue_of(out["run"])


LEFT = """
if __name__ == "__main__":
    d = DDict(2, len(dragon.current_runtime().machine()), 64 << 20)
    d["k"] = b"v" * (3 << 20)       # pieces: side channels too
    d["k"]
    print(json.dumps({"pids": [m["pid"] for m in d._meta["managers"]],
                      "run": dragon.current_runtime().run_id}), flush=True)
    # no destroy(): the end of the runtime must take the managers and their memory
"""


@pytest.mark.parametrize("under", [None, pytest.param(["--launcher", "virtual", "--nodes", "2"], marks=pytest.mark.system)])
def test_runtime_end_without_destroy_leaves_nothing(script, under):
    p = script(PRELUDE, LEFT).run(under=under, timeout=180)
    out = last_json(p.stdout)
    assert len(out["pids"]) == (2 if under is None else 4)
    assert wait_gone(out["pids"])
    assert not no_residue_of(out["run"])
