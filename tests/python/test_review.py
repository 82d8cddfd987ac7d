"""Edge cases found in review: blocking pipe reads, fork, destroyed
channels, strided buffers, retried starts, generator and async targets,
exit() in members, policy blocks at creation, stdin to an ended group."""
import json

PRELUDE = """
import json, os, sys, time
import dragon
from dragon.channels import Channel
from dragon.native.process_group import ProcessGroup
from dragon.native.process import ProcessTemplate, Popen, Process
from dragon.infrastructure.policy import Policy
out = {}
"""
END = """
print(json.dumps(out))
"""


def run(script, body, **kw):
    p = script(PRELUDE, body, END).run(**kw)
    return json.loads([l for l in p.stdout.splitlines() if l.startswith("{")][-1])


def test_pipe_read_waits_for_late_output(script):
    out = run(script, """
    p = Popen(["/bin/sh", "-c", "sleep 0.7; echo late"], stdout=Popen.PIPE)
    out["read"] = p.stdout.read()
    q = Popen(["/bin/sh", "-c", "sleep 5; echo later"], stdout=Popen.PIPE)
    try:
        q.stdout.recv(timeout=0.3)
    except TimeoutError:
        out["timeout"] = True
    out["after_timeout"] = q.stdout.recv(timeout=30)   # the stream did not end
    out["code"] = p.wait(30)
    q.kill()
    """)
    assert out == {"read": "late\n", "timeout": True, "after_timeout": "later\n", "code": 0}


def test_a_forked_child_leaves_the_parents_group_alone(script):
    out = run(script, """
    pg = ProcessGroup()
    pg.add_process(2, ProcessTemplate("/bin/sleep", args=("2",)))
    pg.start()
    ch = Channel()
    pid = os.fork()
    if pid == 0:
        try:
            pg.puids
            r = "no error"
        except dragon.DragonError as e:
            r = str(e)
        ch.send(r.encode())        # shared memory works after fork
        os._exit(0) if r == "no error" else sys.exit(0)   # a normal exit runs atexit
    os.waitpid(pid, 0)
    out["child"] = ch.recv(10).decode()
    pg.join(30)
    out["codes"] = [c for _, c in pg.exit_status]
    pg.close()
    """)
    assert "belongs to the parent process" in out["child"]
    assert out["codes"] == [0, 0]


def test_destroyed_channel_refuses_and_strided_buffers_are_refused(script):
    out = run(script, """
    a = Channel()
    a.destroy()
    b = Channel()
    try:
        a.send(b"ghost", 0)
    except dragon.DragonError as e:
        out["send"] = str(e)
    try:
        b.recv(0)
    except TimeoutError:
        out["b_empty"] = True
    try:
        b.send(memoryview(b"abcdefgh")[::2])
    except ValueError as e:
        out["strided"] = str(e)
    b.send(memoryview(b"abcdefgh")[2:5])
    out["slice"] = b.recv(0).decode()
    """)
    assert "destroyed" in out["send"] and out["b_empty"] is True
    assert "contiguous" in out["strided"] and out["slice"] == "cde"


def test_a_refused_start_can_be_retried(script):
    out = run(script, """
    pg = ProcessGroup()
    pg.add_process(2, ProcessTemplate("/bin/true", policy=Policy(placement=Policy.Placement.HOST_ID, host_id=5)))
    try:
        pg.start()
    except dragon.DragonError as e:
        out["first"] = str(e)
    pg._entries = [(2, ProcessTemplate("/bin/true"))]
    pg.start(); pg.join(30)
    out["codes"] = [c for _, c in pg.exit_status]
    pg.close()
    """)
    assert "node 5 does not exist" in out["first"] and "placing 2 ranks" in out["first"]
    assert out["codes"] == [0, 0]


def test_generator_refused_async_runs_exit_works(script):
    out = run(script, """
    def gen():
        yield 1
    async def coro(ch):
        ch.send(b"awaited")
    def leaves():
        exit(6)
    try:
        ProcessTemplate(gen)
    except ValueError as e:
        out["gen"] = str(e)
    ch = Channel()
    pg = ProcessGroup(ignore_error_on_exit=True)
    pg.add_process(1, ProcessTemplate(coro, args=(ch,)))
    pg.add_process(1, ProcessTemplate(leaves))
    pg.start(); pg.join(30)
    out["codes"] = sorted(c for _, c in pg.exit_status)
    out["coro"] = ch.recv(5).decode()
    pg.close()
    """)
    assert "generator" in out["gen"]
    assert out["codes"] == [0, 6] and out["coro"] == "awaited"


def test_policy_block_applies_where_things_are_made(script):
    out = run(script, """
    with Policy(cpu_affinity=[0]):
        t = ProcessTemplate("/bin/sh", args=("-c", "grep Cpus_allowed_list /proc/self/status"), stdout=Popen.PIPE)
    pg = ProcessGroup()
    pg.add_process(1, t)
    pg.start(); pg.join(30)
    out["cpus"] = pg.read_output(0, "out").decode().split()[-1]
    pg.close()
    """)
    assert out["cpus"] == "0"


def test_stdin_to_an_ended_group_raises(script):
    out = run(script, """
    pg = ProcessGroup()
    pg.add_process(1, ProcessTemplate("/bin/true", stdin=Popen.PIPE))
    pg.start(); pg.join(30)
    try:
        pg.write_stdin(0, b"x" * (3 << 20))
        out["err"] = "none"
    except dragon.DragonError as e:
        out["err"] = str(e)
    pg.close()
    """)
    assert "ended" in out["err"]
