"""The agent's local client socket: greeting, process table, refusing strangers and junk."""
import os
import socket

from conftest import BIN, PY, run

PROBE = str(BIN / "client_probe")


def test_a_managed_process_sees_itself_in_the_table():
    r = run(["run", "--", PROBE])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0].startswith("run=") and " node=0 " in lines[0]
    assert lines[1] == f"proc puid=1 pid={lines[1].split('pid=')[1].split()[0]} state=running argv0={PROBE}"


def test_outside_a_run_the_client_says_so():
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRAGON_")}
    import subprocess
    r = subprocess.run([PROBE], capture_output=True, env=env, timeout=10)
    assert r.returncode == 1
    assert b"DRAGON_AGENT_SOCKET is not set" in r.stderr


def test_a_client_of_another_user_is_refused():
    # setpriv drops to nobody before the probe connects; the agent checks SO_PEERCRED.
    r = run(["run", "--", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PROBE])
    assert r.returncode == 1
    assert b"client_probe: " in r.stderr  # an error, not a crash of the client
    assert b"refused a client connection from uid 65534" in r.stderr  # the agent's warning


JUNK = r"""
import os, socket, subprocess, sys
name = os.environ["DRAGON_AGENT_SOCKET"].lstrip("@")
for junk in [os.urandom(4096), b"\xd6\x01" + b"\xff" * 6, b"\xd6\x01\x20\x00\x05\x00\x00\x00hello", b"x"]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0" + name)
    s.sendall(junk)
    s.shutdown(socket.SHUT_WR)
    s.recv(4096)  # the agent answers with an error or closes; it must not die
    s.close()
sys.exit(subprocess.call([sys.argv[1]]))
"""


def test_junk_on_the_client_socket_does_not_hurt_the_agent():
    r = run(["run", "--", PY, "-c", JUNK, PROBE])
    assert r.returncode == 0, r.stderr
    assert b"state=running" in r.stdout


def test_a_managed_process_uses_the_node_pool_across_processes():
    r = run(["run", "--", str(BIN / "pool_probe")])
    assert r.returncode == 0, r.stderr
    assert b": 1000 messages in order from pid" in r.stdout
    # no_residue (autouse) checks the pool is gone after the run


def test_a_pool_larger_than_dev_shm_is_a_clear_error_at_start():
    r = run(["run", "--pool-size", "1T", "--", "/bin/true"])
    assert r.returncode == 70
    assert b"but /dev/shm has only" in r.stderr
    assert b"lower the pool size" in r.stderr


def test_a_bad_pool_size_is_a_usage_error():
    r = run(["run", "--pool-size", "lots", "--", "/bin/true"])
    assert r.returncode == 2
    assert b"bad size 'lots'" in r.stderr
