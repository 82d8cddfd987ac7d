"""ProcessGroup from Python: executables and callables, exit codes,
exceptions, restart, stop escalation, piped output, join timeouts."""
import json

import pytest

from conftest import no_residue_of, wait_gone

PRELUDE = """
import json, os, signal, sys, time
import dragon
from dragon.native.process_group import ProcessGroup
from dragon.native.process import ProcessTemplate, Popen, Process
from dragon.infrastructure.policy import Policy
"""


def last_json(stdout):
    return json.loads([l for l in stdout.splitlines() if l.startswith("{")][-1])


def test_executables_exit_codes(script):
    s = script(PRELUDE, """
    pg = ProcessGroup(ignore_error_on_exit=True)
    pg.add_process(3, ProcessTemplate("/bin/sh", args=("-c", "exit $DRAGON_RANK")))
    pg.add_process(1, ProcessTemplate("/bin/sh", args=("-c", "kill -9 $$")))
    pg.init(); pg.start(); pg.join()
    st = dict(pg.exit_status)
    pids = [m["pid"] for m in pg.members]
    pg.close()
    print(json.dumps({"codes": sorted(st.values()), "n": len(st), "puids": pg.puids,
                      "run": dragon.current_runtime().run_id, "pids": pids}))
    """)
    out = last_json(s.run().stdout)
    assert out["codes"] == [-9, 0, 1, 2]
    assert out["n"] == 4
    assert out["puids"] == []
    assert wait_gone(out["pids"])
    assert no_residue_of(out["run"]) == []


def test_callables_with_arguments_and_results_through_a_channel(script):
    s = script(PRELUDE, """
    from dragon.channels import Channel
    def work(ch, base, scale=1):
        ch.send(json.dumps([int(os.environ["DRAGON_RANK"]), base * scale, os.getpid()]).encode())

    ch = Channel(capacity=64)
    with ProcessGroup() as pg:
        pg.add_process(8, ProcessTemplate(work, args=(ch, 5), kwargs={"scale": 3}))
        pg.start(); pg.join()
        got = sorted(json.loads(ch.recv(5)) for _ in range(8))
        ok = pg.exit_status
    print(json.dumps({"got": got, "status": ok, "parent": os.getpid()}))
    """)
    out = last_json(s.run().stdout)
    assert [g[0] for g in out["got"]] == list(range(8))
    assert all(g[1] == 15 for g in out["got"])
    assert all(g[2] != out["parent"] for g in out["got"])
    assert sorted(c for _, c in out["status"]) == [0] * 8


def test_exception_in_callable_is_reported_to_the_group(script):
    s = script(PRELUDE, """
    class Custom(Exception):
        pass
    def fine():
        time.sleep(30)
    def boom(x):
        raise Custom(f"bad input {x}")
    pg = ProcessGroup()
    pg.add_process(1, ProcessTemplate(boom, args=(42,)))
    pg.add_process(2, ProcessTemplate(fine))
    pg.start()
    try:
        pg.join(60)
    except dragon.DragonUserCodeError as e:
        exc = e.exceptions[0]
        print(json.dumps({"msg": str(e), "type": exc.type_name, "rank": exc.rank, "tb": exc.traceback,
                          "orig": type(exc.exception).__name__, "args": list(exc.exception.args),
                          "codes": e.exit_codes}))
    pg.close()
    """)
    p = s.run()
    out = last_json(p.stdout)
    assert out["type"] == "Custom"
    assert out["rank"] == 0
    assert out["orig"] == "Custom" and out["args"] == ["bad input 42"]
    assert 'raise Custom(f"bad input {x}")' in out["tb"]
    assert "Custom: bad input 42" in out["msg"]
    assert 1 in out["codes"].values()  # the raiser's code; the others were stopped
    assert "bad input 42" in p.stderr  # also printed by the member


def test_sys_exit_code_of_a_callable(script):
    s = script(PRELUDE, """
    def leave(code):
        sys.exit(code)
    pg = ProcessGroup(ignore_error_on_exit=True)
    pg.add_process(1, ProcessTemplate(leave, args=(7,)))
    pg.add_process(1, ProcessTemplate(leave, args=(None,)))
    pg.start(); pg.join()
    print(json.dumps({"codes": [c for _, c in pg.exit_status], "exc": len(pg.exceptions)}))
    pg.close()
    """)
    out = last_json(s.run().stdout)
    assert sorted(out["codes"]) == [0, 7]
    assert out["exc"] == 0


def test_failure_stops_the_others_and_join_raises(script):
    s = script(PRELUDE, """
    pg = ProcessGroup()
    pg.add_process(1, ProcessTemplate("/bin/sh", args=("-c", "sleep 0.2; exit 5")))
    pg.add_process(3, ProcessTemplate("/bin/sleep", args=("60",)))
    pg.start()
    t = time.monotonic()
    try:
        pg.join(60)
        print("no error")
    except dragon.DragonUserCodeError as e:
        print(json.dumps({"codes": sorted(e.exit_codes.values()), "msg": str(e)}))
    pg.close()
    """)
    out = last_json(s.run().stdout)
    assert 5 in out["codes"]
    assert "rank 0" in out["msg"] and "exited with code 5" in out["msg"]


def test_missing_program_is_an_error(script):
    s = script(PRELUDE, """
    try:
        ProcessTemplate("/no/such/program")
    except FileNotFoundError as e:
        print(json.dumps({"err": str(e)}))
    """)
    out = last_json(s.run().stdout)
    assert "/no/such/program" in out["err"]


def test_restart_replaces_failed_members(script, tmp_path):
    s = script(PRELUDE, f"""
    counter = {str(tmp_path / "count")!r}
    def flaky():
        # fails twice, then runs until stopped
        n = int(open(counter).read()) if os.path.exists(counter) else 0
        open(counter, "w").write(str(n + 1))
        if n < 2:
            sys.exit(3)
        time.sleep(60)
    pg = ProcessGroup(restart=True)
    pg.add_process(1, ProcessTemplate(flaky))
    pg.start()
    deadline = time.monotonic() + 60
    while len(pg.inactive_puids) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    running = pg.puids
    pg.stop(patience=1)
    print(json.dumps({{"inactive": pg.inactive_puids, "running": running}}))
    pg.close()
    """)
    out = last_json(s.run().stdout)
    inactive = out["inactive"]
    assert [c for _, c in inactive][:2] == [3, 3]
    assert len(out["running"]) == 1
    assert out["running"][0] not in [p for p, _ in inactive[:2]]


def test_stop_escalates_to_sigkill(script):
    s = script(PRELUDE, """
    pg = ProcessGroup()
    pg.add_process(2, ProcessTemplate("/bin/sh", args=("-c", "trap '' INT TERM; echo up; sleep 60 & wait; sleep 60"),
                                      stdout=Popen.PIPE))
    pg.start()
    for r in range(2):
        assert b"up" in pg.read_output(r, "out", 30)
    pg.stop(patience=0.3)
    print(json.dumps({"codes": [c for _, c in pg.exit_status], "pids": [m["pid"] for m in pg.members]}))
    pg.close()
    """)
    out = last_json(s.run().stdout)
    assert out["codes"] == [-9, -9]
    assert wait_gone(out["pids"])


def test_piped_output_and_stdin(script):
    s = script(PRELUDE, """
    def chatty():
        for i in range(3):
            print(f"line {i} from {os.environ['DRAGON_RANK']}")
        print("to stderr", file=sys.stderr)
    pg = ProcessGroup()
    pg.add_process(2, ProcessTemplate(chatty, stdout=Popen.PIPE, stderr=Popen.PIPE))
    pg.add_process(1, ProcessTemplate("/usr/bin/tr", args=("a-z", "A-Z"), stdin=Popen.PIPE, stdout=Popen.PIPE))
    pg.start()
    pg.write_stdin(2, b"shout this", eof=True)
    pg.join()
    outs = {}
    for puid, _ in pg.inactive_puids:
        p = Process(None, ident=puid)
        outs[puid] = p.stdout_conn.read() if p.stdout_conn else None
    errs = [pg.read_output(r, "err") for r in range(2)]
    pg.close()
    print(json.dumps({"outs": sorted(outs.values()), "errs": [e.decode() for e in errs]}))
    """)
    out = last_json(s.run().stdout)
    assert out["outs"] == sorted(["SHOUT THIS"] + [f"line 0 from {r}\\nline 1 from {r}\\nline 2 from {r}\\n"
                                                   .replace("\\n", "\n") for r in range(2)])
    assert out["errs"] == ["to stderr\n", "to stderr\n"]


def test_join_timeout_then_stop(script):
    s = script(PRELUDE, """
    pg = ProcessGroup()
    pg.add_process(2, ProcessTemplate("/bin/sleep", args=("60",)))
    pg.start()
    try:
        pg.join(timeout=0.3)
        print("joined?!")
    except TimeoutError as e:
        running = len(pg.puids)
        pg.stop(patience=2)
        print(json.dumps({"timeout": str(e), "running": running, "after": pg.puids,
                          "codes": [c for _, c in pg.exit_status]}))
    pg.close()
    """)
    out = last_json(s.run().stdout)
    assert out["running"] == 2 and out["after"] == []
    assert out["codes"] == [-2, -2]  # SIGINT ended them


def test_start_without_waiting(script, tmp_path):
    """start(wait=False): members run while the start is on its thread;
    every other call waits for it; a member that cannot start fails the
    group as with start() (join tells), and on_started hears the end."""
    s = script(PRELUDE, f"""
    import threading
    from dragon.native.queue import Queue

    def hello(q, rank):
        q.put(rank)

    q = Queue()
    pg = ProcessGroup()
    pg.add_process(8, ProcessTemplate(hello, args=(q, 0)))
    seen = []
    ended = threading.Event()
    pg.on_started = lambda err: (seen.append(repr(err)), ended.set())
    pg.start(wait=False)
    got = sorted(q.get(timeout=60) for _ in range(8))
    pg.join(60)
    ok = {{"got": got, "seen": seen, "ended": ended.wait(10), "starting": pg.starting,
          "codes": sorted(c for _, c in pg.exit_status)}}
    pg.close()

    bad = ProcessGroup()
    bad.add_process(2, ProcessTemplate("/bin/true", cwd="{tmp_path}/no-such-dir"))
    bad_seen = []
    bad.on_started = bad_seen.append
    bad.start(wait=False)
    try:
        bad.join(30)
        raised = None
    except Exception as e:
        raised = f"{{type(e).__name__}}: {{e}}"
    bad.close()
    print(json.dumps({{"ok": ok, "raised": raised, "callback": [repr(e) for e in bad_seen]}}))
    """)
    out = last_json(s.run().stdout)
    assert out["ok"]["got"] == [0] * 8
    assert out["ok"]["seen"] == ["None"] and out["ok"]["ended"] is True and out["ok"]["starting"] is False
    assert out["ok"]["codes"] == [0] * 8
    assert out["raised"] is not None and "no-such-dir" in out["raised"]
    assert out["callback"] == ["None"]  # the start itself went through


def test_walltime_stops_the_group(script):
    s = script(PRELUDE, """
    pg = ProcessGroup(walltime=0.5)
    pg.add_process(2, ProcessTemplate("/bin/sleep", args=("60",)))
    pg.start()
    pg.join(30)
    print(json.dumps({"expired": pg.walltime_expired, "codes": [c for _, c in pg.exit_status]}))
    pg.close()
    """)
    out = last_json(s.run().stdout)
    assert out["expired"] is True
    assert out["codes"] == [-2, -2]


def test_popen_and_process(script):
    s = script(PRELUDE, """
    p = Popen(["/bin/echo", "hello", "world"], stdout=Popen.PIPE)
    text = p.stdout.read()
    code = p.wait(30)
    def work():
        sys.exit(4)
    q = Process(work)
    q.start()
    print(json.dumps({"text": text, "code": code, "q": q.join(30), "alive": q.is_alive}))
    """)
    out = last_json(s.run().stdout)
    assert out == {"text": "hello world\n", "code": 0, "q": 4, "alive": False}


def test_argument_errors_name_the_problem(script):
    s = script(PRELUDE, """
    errs = []
    for f in (lambda: ProcessGroup(pmi="mpich"), lambda: ProcessGroup(walltime=-1),
              lambda: ProcessGroup(restart=True, pmi="pmix"), lambda: ProcessGroup().add_process(0, ProcessTemplate("/bin/true")),
              lambda: ProcessTemplate("/bin/true", stderr=Popen.STDOUT),
              lambda: Policy(placement=Policy.Placement.HOST_NAME),
              lambda: ProcessGroup().start(), lambda: ProcessGroup().join()):
        try:
            f()
            errs.append(None)
        except Exception as e:
            errs.append(f"{type(e).__name__}: {e}")
    print(json.dumps(errs))
    """)
    errs = last_json("{}\n" + s.run().stdout.replace("[", "{\"e\": [", 1).rstrip() + "}")["e"]
    assert errs[0].startswith("ValueError") and "mpich" in errs[0]
    assert errs[1].startswith("ValueError") and "walltime" in errs[1]
    assert errs[2].startswith("ValueError") and "restart" in errs[2]
    assert errs[3].startswith("ValueError") and "nproc" in errs[3]
    assert errs[4].startswith("ValueError") and "STDOUT" in errs[4]
    assert errs[5].startswith("ValueError") and "host_name" in errs[5]
    assert errs[6].startswith("DragonProcessGroupError") and "add_process" in errs[6]
    assert errs[7].startswith("DragonProcessGroupError") and "before start" in errs[7]


POLICY = """
import socket
def where():
    with open(f"/proc/{os.getpid()}/status") as f:
        cpus = [l.split()[1] for l in f if l.startswith("Cpus_allowed_list")][0]
    print(json.dumps({"rank": int(os.environ["DRAGON_RANK"]), "node": int(os.environ["DRAGON_NODE_ID"]), "cpus": cpus}))

def run(group_policy, entries):
    pg = ProcessGroup(policy=group_policy)
    for n, pol in entries:
        pg.add_process(n, ProcessTemplate(where, stdout=Popen.PIPE, policy=pol))
    pg.start(); pg.join(60)
    rows = [json.loads(pg.read_output(r, "out")) for r in range(sum(n for n, _ in entries))]
    pg.close()
    return rows

P = Policy.Placement
out = {}
out["block"] = [r["node"] for r in run(Policy(distribution=Policy.Distribution.BLOCK), [(4, None)])]
out["roundrobin"] = [r["node"] for r in run(None, [(4, None)])]
out["host_id"] = [r["node"] for r in run(None, [(2, None), (3, Policy(placement=P.HOST_ID, host_id=NODES - 1))])]
out["local"] = [r["node"] for r in run(None, [(3, Policy(placement=P.LOCAL))])]
out["host_name"] = sorted({r["node"] for r in run(None, [(4, Policy(placement=P.HOST_NAME, host_name=socket.gethostname()))])})
out["cpu"] = [r["cpus"] for r in run(None, [(2, Policy(cpu_affinity=[0]))])]
with Policy(placement=P.HOST_ID, host_id=0):
    out["context"] = [r["node"] for r in run(None, [(2, None)])]
try:
    run(None, [(1, Policy(placement=P.HOST_ID, host_id=99))])
except dragon.DragonError as e:
    out["bad_node"] = str(e)
try:
    run(None, [(1, Policy(placement=P.HOST_NAME, host_name="no-such-host"))])
except dragon.DragonError as e:
    out["bad_host"] = str(e)
out["local_node"] = dragon.current_runtime().node_id
print(json.dumps(out))
"""


def test_policy_on_one_node(script):
    out = last_json(script(PRELUDE, "NODES = 1", POLICY).run().stdout)
    assert out["block"] == [0] * 4 and out["roundrobin"] == [0] * 4
    assert out["host_id"] == [0] * 5 and out["local"] == [0] * 3 and out["host_name"] == [0]
    assert out["cpu"] == ["0", "0"]
    assert "node 99 does not exist" in out["bad_node"]
    assert "no-such-host" in out["bad_host"]


@pytest.mark.system
def test_policy_on_four_virtual_nodes(script):
    p = script(PRELUDE, "NODES = 4", POLICY).run(under=["--launcher", "virtual", "--nodes", "4"], timeout=180)
    out = last_json(p.stdout)
    assert out["roundrobin"] == [0, 1, 2, 3]
    assert out["block"] != out["roundrobin"] and out["block"] == sorted(out["block"])
    assert out["host_id"][2:] == [3, 3, 3]
    assert out["local"] == [out["local_node"]] * 3
    assert out["host_name"] == [0, 1, 2, 3]  # every virtual node has this host name: spread over them
    assert out["cpu"] == ["0", "0"]
    assert out["context"] == [0, 0]
    assert "node 99 does not exist" in out["bad_node"]
