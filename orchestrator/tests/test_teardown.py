"""Teardown: Ctrl-C with escalation, a second Ctrl-C, the agent killed, descendants, leftovers."""
import os
import signal
import subprocess
import time

import pytest

from conftest import BIN, ORCH, PY, children_of, pid_alive, read_line_with_timeout, run, shm_entries, start, wait_gone

# A head that reports its pid and its parent's (the agent), then waits, ignoring the signals named.
STUBBORN = r"""
import os, signal, sys, time
for s in sys.argv[1:]:
    signal.signal(getattr(signal, s), signal.SIG_IGN)
print(os.getpid(), os.getppid(), flush=True)
while True:
    time.sleep(1)
"""


def start_stubborn(ignore, extra=(), env=None):
    p = start([*extra, "run", "--", PY, "-c", STUBBORN, *ignore], env=env)
    head, agent = map(int, read_line_with_timeout(p.stdout).split())
    return p, head, agent


def test_ctrl_c_stops_a_cooperative_head():
    p, head, agent = start_stubborn([])
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 128 + signal.SIGINT
    assert b"stopping the run" in err
    assert not pid_alive(head) and not pid_alive(agent)


def test_ctrl_c_escalates_to_sigterm_for_a_head_ignoring_sigint():
    p, head, agent = start_stubborn(["SIGINT"], extra=["--patience", "0.2"])
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=30)
    assert p.returncode == 128 + signal.SIGTERM
    assert not pid_alive(head) and not pid_alive(agent)


def test_ctrl_c_escalates_to_sigkill_for_a_head_ignoring_sigint_and_sigterm():
    p, head, agent = start_stubborn(["SIGINT", "SIGTERM"], extra=["--patience", "0.2"])
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=30)
    assert p.returncode == 128 + signal.SIGKILL
    assert not pid_alive(head) and not pid_alive(agent)


def test_second_ctrl_c_kills_at_once():
    # With an hour of patience only the second Ctrl-C can end this within the timeout.
    p, head, agent = start_stubborn(["SIGINT", "SIGTERM"], extra=["--patience", "3600"])
    p.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert p.poll() is None and pid_alive(head)  # still waiting on its patience
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 128 + signal.SIGKILL
    assert b"killing every process" in err
    assert not pid_alive(head)


def test_sigterm_to_the_launcher_tears_down_too():
    p, head, agent = start_stubborn([])
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=30)
    assert p.returncode == 128 + signal.SIGINT  # the head got SIGINT, the first step
    assert not pid_alive(head)


def test_sigkill_of_the_agent_leaves_no_orphan_and_no_shm():
    p, head, agent = start_stubborn(["SIGINT", "SIGTERM"])
    # the run's lock is there while it runs
    assert any(e.endswith("-n0-lock") for e in shm_entries())
    os.kill(agent, signal.SIGKILL)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 70
    assert b"the agent on node 0 was killed by signal 9" in err
    assert wait_gone(head), "the head outlived its agent"
    # no_residue (autouse) checks that the front end removed the run's shared memory


def test_sigkill_of_the_launcher_stops_the_run():
    p, head, agent = start_stubborn([], extra=["--patience", "0.2"])
    p.kill()
    p.wait(timeout=10)
    assert wait_gone(head), "the head outlived the launcher"
    assert wait_gone(agent), "the agent outlived the launcher"


def test_background_children_of_the_head_are_stopped():
    # The head exits at once, leaving a child in its process group and a
    # daemon in a session of its own; neither may outlive the run.
    script = "sleep 300 & echo $!; setsid sleep 301 & sleep 0.2; pgrep -n -f 'sleep 301'"
    r = run(["run", "--", "sh", "-c", script], timeout=60)
    assert r.returncode == 0
    pids = [int(x) for x in r.stdout.split()]
    assert len(pids) == 2
    for pid in pids:
        assert wait_gone(pid), f"pid {pid} outlived the run"


def test_output_of_a_head_killed_mid_write_is_not_lost():
    r = run(["run", "--", "sh", "-c", "seq 1 50000; kill -KILL $$"])
    assert r.returncode == 137
    assert r.stdout.decode().split() == [str(i) for i in range(1, 50001)]


def test_head_exiting_while_a_grandchild_holds_stdout():
    # The grandchild keeps the pipe open; the run must still end when the head does.
    r = run(["run", "--", "sh", "-c", "(sleep 300) & echo done"], timeout=60)
    assert r.returncode == 0
    assert r.stdout == b"done\n"


def test_cleanup_removes_dead_runs_only():
    dead = "/dev/shm/dragon-0badc0de-n0-pool"
    dead_lock = "/dev/shm/dragon-0badc0de-n0-lock"
    p, head, agent = start_stubborn([])  # first: its start-up would remove the dead run itself
    for path in (dead, dead_lock):
        with open(path, "w") as f:
            f.write("x")
    try:
        live = {e for e in shm_entries() if e.endswith("-n0-lock") and "0badc0de" not in e}
        assert live
        r = run(["cleanup", "--dry-run"])
        assert b"would remove /dev/shm/dragon-0badc0de-n0-pool" in r.stdout
        assert os.path.exists(dead)
        r = run(["cleanup"])
        assert r.returncode == 0
        assert b"removed /dev/shm/dragon-0badc0de-n0-pool" in r.stdout
        assert b"(its agent is running)" in r.stdout
        assert not os.path.exists(dead) and not os.path.exists(dead_lock)
        assert live <= shm_entries()  # the live run kept its lock
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=30)


def test_the_next_run_removes_stale_shared_memory():
    stale = "/dev/shm/dragon-0ddba11-n3-pool"
    with open(stale, "w") as f:
        f.write("x")
    r = run(["run", "--", "/bin/true"])
    assert r.returncode == 0
    assert not os.path.exists(stale)


def test_cleanup_ignores_other_files_in_dev_shm():
    other = "/dev/shm/not-dragon-test-file"
    with open(other, "w") as f:
        f.write("x")
    try:
        run(["cleanup"])
        assert os.path.exists(other)
    finally:
        os.unlink(other)
