"""dragon-orchestrate run on one node: exit codes, stdio, bad input, logging."""
import hashlib
import os
import subprocess

from conftest import BIN, ORCH, PY, run, wait_gone


def test_exit_code_zero_and_output():
    r = run(["run", "--", "/bin/echo", "hello", "world"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello world\n"
    assert r.stderr == b""


def test_exit_code_is_the_heads():
    r = run(["run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"])
    assert r.returncode == 3
    assert r.stdout == b"out\n"
    assert r.stderr == b"err\n"


def test_program_without_double_dash():
    r = run(["run", "sh", "-c", "exit 5"])
    assert r.returncode == 5


def test_killed_by_signal_gives_128_plus_signal():
    assert run(["run", "--", "sh", "-c", "kill -KILL $$"]).returncode == 128 + 9
    assert run(["run", "--", "sh", "-c", "kill -TERM $$"]).returncode == 128 + 15


MIB = 1 << 20
WRITER = r"""
import os, sys
chunk = bytes(range(256)) * 64  # 16 KiB
for i in range(64):              # 1 MiB to each stream, interleaved
    os.write(1, chunk)
    os.write(2, chunk[::-1])
"""


def test_one_mib_on_each_stream_arrives_complete_and_in_order():
    r = run(["run", "--", PY, "-c", WRITER])
    assert r.returncode == 0
    chunk = bytes(range(256)) * 64
    assert len(r.stdout) == MIB and len(r.stderr) == MIB
    assert r.stdout == chunk * 64
    assert r.stderr == chunk[::-1] * 64


def test_stdin_is_forwarded_to_the_head():
    data = os.urandom(3 * MIB + 123)  # larger than the stdin credit window
    r = run(["run", "--", PY, "-c",
             "import sys,hashlib; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"], input=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == hashlib.sha256(data).hexdigest()


def test_stdin_round_trip_through_cat():
    data = b"".join(b"line %d\n" % i for i in range(20000))
    r = run(["run", "--", "cat"], input=data)
    assert r.returncode == 0
    assert r.stdout == data


def test_no_stdin_gives_the_head_eof():
    r = run(["run", "--no-stdin", "--", "wc", "-c"], input=b"ignored")
    assert r.stdout.strip() == b"0"


def test_head_that_closes_stdin_early_does_not_hang():
    r = run(["run", "--", "head", "-c", "5"], input=os.urandom(4 * MIB))
    assert r.returncode == 0
    assert len(r.stdout) == 5


def test_environment_and_cwd_reach_the_head(tmp_path):
    r = run(["run", "--", "sh", "-c", "echo $FOO $DRAGON_PUID $DRAGON_NODE_ID; pwd"], cwd=tmp_path,
            env={"FOO": "bar"})
    lines = r.stdout.decode().splitlines()
    assert lines[0] == "bar 1 0"
    assert lines[1] == str(tmp_path)


def test_missing_program_is_a_clear_error():
    r = run(["run", "--", "no-such-program-xyz"])
    assert r.returncode == 127
    assert r.stderr.decode() == "dragon-orchestrate: error: program 'no-such-program-xyz' not found in PATH\n"


def test_missing_program_path_is_a_clear_error():
    r = run(["run", "--", "/nonexistent/prog"])
    assert r.returncode == 127
    assert "program '/nonexistent/prog' does not exist" in r.stderr.decode()


def test_not_executable_is_a_clear_error(tmp_path):
    f = tmp_path / "script.sh"
    f.write_text("#!/bin/sh\necho hi\n")
    r = run(["run", "--", str(f)])
    assert r.returncode == 126
    assert r.stderr.decode() == f"dragon-orchestrate: error: {f} is not executable\n"


def test_unknown_option_is_a_usage_error():
    r = run(["run", "--frobnicate", "--", "/bin/true"])
    assert r.returncode == 2
    assert b"unknown option '--frobnicate'" in r.stderr
    r = run(["--frobnicate", "run", "--", "/bin/true"])
    assert r.returncode == 2
    assert b"--frobnicate" in r.stderr


def test_bad_log_level_is_a_usage_error():
    r = run(["--log-level", "loud", "run", "--", "/bin/true"])
    assert r.returncode == 2
    assert r.stderr.decode().startswith("dragon-orchestrate: error: --log-level: bad log level 'loud'")
    r = run(["run", "--", "/bin/true"], env={"DRAGON_LOG_LEVEL": "chatty"})
    assert r.returncode == 2
    assert b"DRAGON_LOG_LEVEL: bad log level 'chatty'" in r.stderr


def test_missing_program_argument():
    r = run(["run"])
    assert r.returncode == 2
    assert b"no PROGRAM given" in r.stderr


def test_debug_logs_never_reach_stdout():
    r = run(["--log-level", "debug", "run", "--", "/bin/echo", "only this"])
    assert r.returncode == 0
    assert r.stdout == b"only this\n"
    assert b"agent n0 up" in r.stderr  # the logs went to stderr


def test_log_dir_gets_one_file_per_component(tmp_path):
    logs = tmp_path / "logs"
    r = run(["run", "--log-level", "debug", "--log-dir", str(logs), "--", "/bin/echo", "x"])
    assert r.returncode == 0
    assert r.stdout == b"x\n" and r.stderr == b""
    assert "group 1 started" in (logs / "frontend.log").read_text()
    agent_log = (logs / "agent-n0.log").read_text()
    assert "started puid 1" in agent_log and "agent n0 done" in agent_log


def test_log_level_from_environment():
    r = run(["run", "--", "/bin/true"], env={"DRAGON_LOG_LEVEL": "info"})
    assert r.returncode == 0
    assert b"group 1 started" in r.stderr


def test_help_and_version():
    r = run(["--help"])
    assert r.returncode == 0
    assert b"--log-level" in r.stdout and b"DRAGON_LOG_LEVEL" in r.stdout
    r = run(["--version"])
    assert r.returncode == 0 and r.stdout.startswith(b"dragon-orchestrate ")


def test_serve_says_where_and_stops_when_stdin_closes():
    """`serve`: a runtime without a head; a client connects by the socket it
    names; closing serve's stdin tears everything down with exit 0."""
    import json as _json
    r, w = os.pipe()
    p = subprocess.Popen([ORCH, "serve", "--ready-fd", str(w)], stdin=subprocess.PIPE, pass_fds=(w,),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(w)
    with os.fdopen(r) as ready:
        info = _json.loads(ready.readline())
    assert info["agent_socket"].startswith("@dragon-") and info["run_id"] in info["agent_socket"]
    # A client of that agent sees the same run.
    env = dict(os.environ, DRAGON_AGENT_SOCKET=info["agent_socket"], DRAGON_PUID="0")
    c = subprocess.run([str(BIN / "client_probe")], env=env, capture_output=True, text=True, timeout=30)
    assert info["run_id"] in c.stdout, (c.stdout, c.stderr)
    assert [e for e in os.listdir("/dev/shm") if info["run_id"] in e]
    p.stdin.close()
    assert p.wait(30) == 0
    assert wait_gone(info["agent_pid"])
    assert [e for e in os.listdir("/dev/shm") if info["run_id"] in e] == []


def test_serve_refuses_a_program():
    p = subprocess.run([ORCH, "serve", "--", "/bin/true"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "serve takes no program" in p.stderr
