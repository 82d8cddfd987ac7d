"""Fast start (docs/runtime.md): Python members forked by their node's
pre-imported interpreter (python/dragon/_zygote.py) are still the runtime's
processes: the agent is their parent, they get their own puid, directory,
binding, stdio, signals and exit codes, and nothing of the zygote's is left
when the runtime ends."""
import json
import os
import signal

import pytest

from conftest import pid_alive, wait_gone

PRELUDE = """
import json, os, signal, sys, time
import dragon
import multiprocessing as mp
from dragon.infrastructure.policy import Policy
from dragon.native.process import ProcessTemplate
from dragon.native.process_group import ProcessGroup

def cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\\0")

def facts(tag):
    parent = cmdline(os.getppid())[0].decode()
    return {"tag": tag, "pid": os.getpid(), "forked": any(b"dragon._zygote" in c for c in cmdline(os.getpid())),
            "parent": os.path.basename(parent), "ppid": os.getppid(), "puid": os.environ.get("DRAGON_PUID"),
            "cwd": os.getcwd(), "argv": sys.argv, "main": sys.modules["__main__"].__dict__.get("__name__"),
            "main_names": sorted(k for k in vars(sys.modules["__main__"]) if not k.startswith("__")),
            "cpus": sorted(os.sched_getaffinity(0)), "pgrp": os.getpgrp() == os.getpid(),
            "mark": os.environ.get("MARK"), "sigint": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
            "sigterm": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
            # what another process reading /proc sees (host.is_process, the DDict client)
            "proc_environ_puid": f"DRAGON_PUID={os.environ.get('DRAGON_PUID')}".encode()
                                 in open(f"/proc/{os.getpid()}/environ", "rb").read().split(b"\\0"),
            # every entry a variable (the room the zygote left is not garbage)
            "proc_environ_bad": [repr(e[:40]) for e in open(f"/proc/{os.getpid()}/environ", "rb").read()
                                 .rstrip(b"\\0").split(b"\\0") if b"=" not in e],
            # libc's environment, which a program it runs gets
            "exec_env": sorted(e.decode(errors="replace") for e in
                               __import__("subprocess").run(["/usr/bin/env", "-0"], capture_output=True).stdout
                               .split(b"\\0") if e)}

def probe(q, tag):
    q.put(facts(tag))
    print(f"stdout of {tag} pid {os.getpid()}", flush=True)

def member(tag):
    print(json.dumps(facts(tag)), flush=True)

def exits(n): sys.exit(n)
def raises(): raise RuntimeError("boom in a forked child")
def suicide(): os.kill(os.getpid(), signal.SIGKILL)
def sleeps(): time.sleep(60)

def until_forked(q, limit=200):
    # The first Python member starts the zygote and is exec'd; once the zygote
    # has its imports, members are forked.
    for i in range(limit):
        p = mp.Process(target=probe, args=(q, f"warm{i}")); p.start()
        f = q.get(timeout=60); p.join()
        if f["forked"]:
            return i
        time.sleep(0.05)
    raise SystemExit("no member was ever forked by a zygote")

def run_zygotes():
    run = os.environ.get("DRAGON_RUN_ID") or dragon.current_runtime().run_id
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = cmdline(int(pid))
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if any(b"dragon._zygote import main" in c for c in cmd) and f"DRAGON_RUN_ID={run}".encode() in env:
            out.append(int(pid))
    return out
"""

ONE_NODE = """
if __name__ == "__main__":
    mp.set_start_method("dragon")
    q = mp.Queue()
    out = {"warmups": until_forked(q)}
    # several at once, from another directory, with an environment mark
    os.environ["MARK"] = "m1"
    sub = os.path.join(os.getcwd(), "sub"); os.makedirs(sub, exist_ok=True); os.chdir(sub)
    ps = [mp.Process(target=probe, args=(q, f"p{i}")) for i in range(6)]
    for p in ps: p.start()
    got = sorted((q.get(timeout=60) for _ in ps), key=lambda f: f["tag"])
    for p in ps: p.join(60)
    out["batch"] = got
    out["batch_pids"] = sorted(p.pid for p in ps)
    out["codes"] = {}
    for name, fn in (("exit3", exits), ("raise", raises), ("sigkill", suicide)):
        p = mp.Process(target=fn, args=(3,) if fn is exits else ()); p.start(); p.join(60)
        out["codes"][name] = p.exitcode
    p = mp.Process(target=sleeps); p.start(); time.sleep(0.3); p.terminate(); p.join(60)
    out["codes"]["terminate"] = p.exitcode
    # a ProcessGroup member: a fresh __main__, argv, binding by Policy
    with ProcessGroup(policy=Policy(cpu_affinity=[0])) as pg:
        pg.add_process(2, ProcessTemplate(member, args=("pg",)))
        pg.start(); pg.join(60)
    out["zygotes"] = run_zygotes()
    # which start path they serve with (DRAGON_ZYGOTE_FORK_TWICE reached them)
    out["fork_twice"] = [b"DRAGON_ZYGOTE_FORK_TWICE=1" in open(f"/proc/{z}/environ", "rb").read().split(b"\\0")
                         for z in out["zygotes"]]
    # a zygote killed: members go on (the next one starts a new zygote)
    for z in out["zygotes"]:
        os.kill(z, signal.SIGKILL)
    p = mp.Process(target=probe, args=(q, "after-kill")); p.start(); out["after_kill"] = q.get(timeout=60); p.join()
    out["rewarm"] = until_forked(q)
    out["zygotes_after"] = run_zygotes()
    out["run"] = dragon.current_runtime().run_id
    print(json.dumps(out))
"""


def _json_lines(stdout):
    return [json.loads(l) for l in stdout.splitlines() if l.startswith("{")]


def _live_with_env(marker: bytes):
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in f.read():
                    out.append(int(pid))
        except OSError:
            pass
    return out


@pytest.mark.parametrize("start", ["clone", "fork-twice"])
def test_forked_members_are_runtime_processes(script, start):
    # clone: the zygote's C loop clones and sets up each member; fork-twice:
    # the Python loop's double fork, where clone(CLONE_PARENT) is refused
    s = script(PRELUDE, ONE_NODE)
    p = s.run(timeout=600, env={"DRAGON_ZYGOTE_FORK_TWICE": "1" if start == "fork-twice" else "0"})
    lines = _json_lines(p.stdout)
    out = lines[-1]
    batch = out["batch"]
    assert all(f["forked"] for f in batch), batch
    # the agent, not the zygote, is the parent: it reaps and reports them
    assert {f["parent"] for f in batch} <= {"dragon-orchestrate", "dragon-agent"}, batch
    assert sorted(f["pid"] for f in batch) == out["batch_pids"]
    assert len({f["puid"] for f in batch}) == len(batch) and all(f["puid"] for f in batch)
    assert all(f["cwd"] == str(s.cwd / "sub") and f["mark"] == "m1" for f in batch), batch
    assert all(f["pgrp"] and f["sigint"] and f["sigterm"] and f["proc_environ_puid"] for f in batch), batch
    for f in batch:
        assert f["proc_environ_bad"] == [], f["proc_environ_bad"]
        exec_env = dict(e.partition("=")[::2] for e in f["exec_env"])
        assert all("=" in e for e in f["exec_env"]), f["exec_env"]
        assert exec_env.get("MARK") == "m1" and exec_env.get("DRAGON_PUID") == f["puid"], exec_env
        zygotes_own = ("DRAGON_ZYGOTE_ENV", "DRAGON_ZYGOTE_FD", "DRAGON_ZYGOTE_AGENT", "DRAGON_PY_TARGET")
        assert not [k for k in exec_env if k.startswith(zygotes_own)], exec_env.keys()
    for f in batch:  # output forwarding
        assert f"stdout of {f['tag']} pid {f['pid']}" in p.stdout
    assert out["codes"] == {"exit3": 3, "raise": 1, "sigkill": -signal.SIGKILL, "terminate": -signal.SIGTERM}
    assert "RuntimeError: boom in a forked child" in p.stderr
    members = [l for l in lines if l.get("tag") == "pg"]
    assert len(members) == 2
    for f in members:
        # a fresh __main__: only the names the boot code (python -c) itself makes
        assert f["forked"] and f["argv"] == ["-c"] and f["main"] == "__main__"
        assert f["main_names"] == ["_signal", "main", "os", "sys"]
        assert f["cpus"] == [0]
    # two kinds: the multiprocessing children's (which holds the script as
    # __mp_main__) and the ProcessGroup members' (a fresh __main__)
    assert len(out["zygotes"]) == 2
    assert out["fork_twice"] == [start == "fork-twice"] * 2, out["fork_twice"]
    # the next member runs: exec'd if the agent meets the dead zygote's
    # hang-up first, else forked by a new zygote it waits for
    assert out["after_kill"]["tag"] == "after-kill"
    assert len(out["zygotes_after"]) == 1 and not set(out["zygotes_after"]) & set(out["zygotes"])
    # nothing of the run is left: members, zygotes, agent
    assert wait_gone(out["zygotes_after"])
    assert not _live_with_env(f"DRAGON_RUN_ID={out['run']}".encode())


OFF = """
if __name__ == "__main__":
    mp.set_start_method("dragon")
    q = mp.Queue()
    seen = []
    for i in range(5):
        p = mp.Process(target=probe, args=(q, f"x{i}")); p.start(); seen.append(q.get(timeout=60)["forked"]); p.join()
        time.sleep(0.2)
    print(json.dumps({"forked": seen, "zygotes": run_zygotes()}))
"""


def test_fast_start_off(script):
    out = _json_lines(script(PRELUDE, OFF).run(env={"DRAGON_FAST_START": "0"}, timeout=300).stdout)[-1]
    assert out == {"forked": [False] * 5, "zygotes": []}


TWO_NODES = """
if __name__ == "__main__":
    mp.set_start_method("dragon")
    q = mp.Queue()
    until_forked(q)
    nodes = {}
    for i in range(40):
        p = mp.Process(target=probe, args=(q, f"n{i}")); p.start(); f = q.get(timeout=60); p.join()
        nodes.setdefault(str(p._popen.node), []).append(f["forked"])
        if len(nodes) == 2 and all(any(v) for v in nodes.values()):
            break
        time.sleep(0.05)
    print(json.dumps({"nodes": {k: any(v) for k, v in nodes.items()}}))
"""


@pytest.mark.system
def test_fast_start_on_every_node(script):
    p = script(PRELUDE, TWO_NODES).run(under=["--launcher", "virtual", "--nodes", "2"], timeout=600)
    assert _json_lines(p.stdout)[-1] == {"nodes": {"0": True, "1": True}}


ROBUST = """
import ctypes, errno, mmap, threading

libc = ctypes.CDLL(None, use_errno=True)
MUTEX = 40  # sizeof(pthread_mutex_t) on x86-64 (its __owner, an int, at 8)

class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

def mapped(path):
    fd = os.open(path, os.O_RDWR)
    try:
        return mmap.mmap(fd, 4096)
    finally:
        os.close(fd)

def holder(path):
    # Locks a robust, process-shared mutex and dies holding it (SIGKILL).
    m = mapped(path)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    rc = libc.pthread_mutex_lock(ctypes.c_void_p(addr))
    owner = ctypes.c_int.from_buffer(m, 8).value
    with open(path + ".facts", "w") as f:
        json.dump({"rc": rc, "owner": owner, "tid": threading.get_native_id(), "pid": os.getpid(),
                   "forked": any(b"dragon._zygote" in c for c in cmdline(os.getpid()))}, f)
    os.kill(os.getpid(), signal.SIGKILL)

if __name__ == "__main__":
    path = os.path.join(os.getcwd(), "mutex")
    with open(path, "wb") as f:
        f.write(bytes(4096))
    m = mapped(path)
    addr = ctypes.c_void_p(ctypes.addressof(ctypes.c_char.from_buffer(m)))
    attr = ctypes.create_string_buffer(8)
    libc.pthread_mutexattr_init(attr)
    libc.pthread_mutexattr_setpshared(attr, 1)   # PTHREAD_PROCESS_SHARED
    libc.pthread_mutexattr_setrobust(attr, 1)    # PTHREAD_MUTEX_ROBUST
    assert libc.pthread_mutex_init(addr, attr) == 0
    mp.set_start_method("dragon")
    q = mp.Queue()
    until_forked(q)
    p = mp.Process(target=holder, args=(path,)); p.start(); p.join(60)
    facts = json.load(open(path + ".facts"))
    # The holder is dead: a robust mutex answers EOWNERDEAD (a member whose
    # robust list was not registered, or whose tid glibc did not know, would
    # leave it locked for ever: timed out here).
    deadline = Timespec(int(time.time()) + 10, 0)
    rc = libc.pthread_mutex_timedlock(addr, ctypes.byref(deadline))
    print(json.dumps({"facts": facts, "exitcode": p.exitcode, "relock": rc, "EOWNERDEAD": errno.EOWNERDEAD}))
"""


def test_forked_member_keeps_robust_mutexes(script):
    """A forked member is glibc's own thread, not the zygote's: the owner a
    mutex records is its tid, and a robust mutex it dies holding is given
    to the next locker with EOWNERDEAD (dragon._zfork's clone, or the
    double fork)."""
    s = script(PRELUDE, ROBUST)
    out = _json_lines(s.run().stdout)[-1]
    f = out["facts"]
    assert f["forked"] is True and f["rc"] == 0
    assert f["owner"] == f["tid"] == f["pid"]
    assert out["exitcode"] == -signal.SIGKILL
    assert out["relock"] == out["EOWNERDEAD"]
