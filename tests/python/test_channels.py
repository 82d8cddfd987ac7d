"""Channels from Python: across processes of one node, and (system) across
the nodes of a virtual cluster."""
import json

import pytest

from conftest import ORCH

PRELUDE = """
import json, os, sys, time
import dragon
from dragon.channels import Channel, poll, READABLE, WRITABLE
from dragon.native.process_group import ProcessGroup
from dragon.native.process import ProcessTemplate
"""

MESH = """
N_MSG = 200
def sender(inbox, outbox):
    rank = int(os.environ["DRAGON_RANK"])
    for i in range(N_MSG):
        inbox.send(json.dumps([rank, i, int(os.environ["DRAGON_NODE_ID"])]).encode() + b"x" * (i * 37 % 3000))
    # and receive one message addressed to this rank from the parent's outbox
    got = outbox.recv(30)
    inbox.send(json.dumps(["ack", rank, got.decode()]).encode())

inbox = Channel(capacity=64)
outbox = Channel(capacity=64)
nproc = int(sys.argv[1])
with ProcessGroup() as pg:
    pg.add_process(nproc, ProcessTemplate(sender, args=(inbox, outbox)))
    pg.start()
    seen = {}
    acks = []
    for r in range(nproc):
        outbox.send(f"hello {r}".encode())
    for _ in range(nproc * (N_MSG + 1)):
        m = inbox.recv(60)
        head = m[:m.index(b"]") + 1] if m.startswith(b"[") else m
        v = json.loads(head)
        if v[0] == "ack":
            acks.append(v[2])
            continue
        rank, i, node = v
        assert len(m) == len(head) + (i * 37 % 3000), "payload length"
        seen.setdefault(rank, []).append(i)
        seen.setdefault(("node", rank), node)
    pg.join(60)
    nodes = sorted({m["node"] for m in pg.members})
in_order = all(seen[r] == list(range(N_MSG)) for r in range(nproc))
try:
    inbox.recv(0)
    extra = True
except TimeoutError:
    extra = False
print(json.dumps({"in_order": in_order, "ranks": sorted(r for r in seen if isinstance(r, int)),
                  "acks": sorted(acks), "nodes": nodes, "extra": extra,
                  "run": dragon.current_runtime().run_id}))
"""


def last_json(stdout):
    return json.loads([l for l in stdout.splitlines() if l.startswith("{")][-1])


def test_channel_basics_in_one_process(script):
    s = script(PRELUDE, """
    ch = Channel(capacity=2)
    out = {}
    ch.send(b"a"); ch.send(bytearray(b"b"))
    try:
        ch.send(b"c", timeout=0)
    except TimeoutError as e:
        out["full"] = type(e).__name__
    out["queued"] = ch.queued()
    out["poll_w"] = poll([(ch, WRITABLE)], timeout=0)
    out["msgs"] = [ch.recv(0).decode(), ch.recv(0).decode()]
    t = time.monotonic()
    try:
        ch.recv(timeout=0.2)
    except dragon.DragonTimeoutError:
        out["waited"] = time.monotonic() - t >= 0.15
    out["poll_empty"] = poll([ch], timeout=0.05)
    big = os.urandom(3 << 20)
    ch.send(big)
    out["big"] = ch.recv() == big
    import numpy as np
    a = np.arange(1000, dtype=np.float64)
    ch.send(a)
    out["numpy"] = bool((np.frombuffer(ch.recv(), dtype=np.float64) == a).all())
    try:
        Channel.attach("00" * 128)
    except ValueError as e:
        out["bad_desc"] = str(e)
    ch.destroy()
    print(json.dumps(out))
    """)
    out = last_json(s.run().stdout)
    assert out["full"] == "DragonTimeoutError"
    assert out["queued"] == 2
    assert out["poll_w"] == [0]
    assert out["msgs"] == ["a", "b"]
    assert out["waited"] is True
    assert out["poll_empty"] == [0]
    assert out["big"] is True and out["numpy"] is True
    assert "descriptor" in out["bad_desc"] or "magic" in out["bad_desc"]


def test_channels_across_processes_exactly_once_in_order(script):
    s = script(PRELUDE, MESH)
    out = last_json(s.run("4").stdout)
    assert out["in_order"] is True
    assert out["ranks"] == [0, 1, 2, 3]
    assert out["acks"] == [f"hello {r}" for r in range(4)]
    assert out["extra"] is False
    assert out["nodes"] == [0]


def test_poll_wakes_on_a_message_from_another_process(script):
    s = script(PRELUDE, """
    def later(ch):
        time.sleep(0.3)
        ch.send(b"late")
    a, b = Channel(), Channel()
    with ProcessGroup() as pg:
        pg.add_process(1, ProcessTemplate(later, args=(b,)))
        pg.start()
        ready = poll([a, b], timeout=30)
        msg = b.recv(0)
        pg.join(30)
    print(json.dumps({"ready": ready, "msg": msg.decode()}))
    """)
    out = last_json(s.run().stdout)
    assert out["ready"] == [0, 1]
    assert out["msg"] == "late"


@pytest.mark.system
def test_channels_across_virtual_nodes(script):
    s = script(PRELUDE, MESH)
    p = s.run("6", under=["--launcher", "virtual", "--nodes", "2"], timeout=180)
    out = last_json(p.stdout)
    assert out["in_order"] is True
    assert out["ranks"] == list(range(6))
    assert out["acks"] == [f"hello {r}" for r in range(6)]
    assert out["nodes"] == [0, 1]  # members on both nodes: half the traffic crossed the transport
    assert out["extra"] is False


@pytest.mark.system
def test_remote_channel_timeouts_and_poll_refusal(script):
    s = script(PRELUDE, """
    def member(report):
        # runs on node 1: a channel of node 1, read from node 0 below
        ch = Channel(capacity=4)
        report.send(ch.descriptor.encode())
        time.sleep(1.5)
        ch.send(b"from node 1")
        time.sleep(5)
    report = Channel()
    from dragon.infrastructure.policy import Policy
    with ProcessGroup() as pg:
        pg.add_process(1, ProcessTemplate(member, args=(report,), policy=Policy(placement=Policy.Placement.HOST_ID, host_id=1)))
        pg.start()
        remote = Channel.attach(report.recv(30).decode())
        out = {"node": remote.node_id, "local": remote.is_local}
        t = time.monotonic()
        try:
            remote.recv(timeout=0.3)
        except TimeoutError:
            out["timed_out"] = True
        out["msg"] = remote.recv(timeout=30).decode()
        try:
            poll([remote], timeout=0)
        except dragon.DragonError as e:
            out["poll"] = str(e)
        pg.stop(patience=1)
    print(json.dumps(out))
    """)
    out = last_json(s.run(under=["--launcher", "virtual", "--nodes", "2"], timeout=120).stdout)
    assert out["node"] == 1 and out["local"] is False
    assert out["timed_out"] is True
    assert out["msg"] == "from node 1"
    assert "node 1" in out["poll"]
