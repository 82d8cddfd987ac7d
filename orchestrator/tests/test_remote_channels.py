"""Channels on other nodes, through the agents' gateways: a virtual cluster
whose head program opens gateways as processes of node 0 and node 1 would
(gateway_probe), checks sizes, timeouts, waits, threads, bad requests, and a
node lost under a waiting receive."""
import os
import re
import signal
import time

import pytest

from conftest import (BIN, GATEWAY_PROBE_BASIC_CHECKS, dead_entries, pid_alive, read_line_with_timeout, run,
                      shm_entries, start, wait_gone)

from test_multinode import agent_of_node

pytestmark = pytest.mark.system

V2 = ["--launcher", "virtual", "--nodes", "2"]


def checks_of(out):
    lines = [l for l in out.splitlines() if l.startswith(("ok ", "FAILED "))]
    assert lines, out
    return lines


def test_sizes_timeouts_waits_and_threads_across_two_nodes():
    r = run(["run", *V2, "--", str(BIN / "gateway_probe"), "basic"], timeout=120)
    lines = checks_of(r.stdout.decode())
    assert not [l for l in lines if l.startswith("FAILED")], r.stdout.decode() + r.stderr.decode()
    assert len(lines) == GATEWAY_PROBE_BASIC_CHECKS, lines
    assert r.returncode == 0, r.stderr
    assert not dead_entries(shm_entries())


def test_the_same_through_the_agents_without_lanes():
    """DRAGON_CHANNEL_LANES=0: every remote operation takes the gateway path
    (client -> agent -> transport -> agent), which stays the fallback."""
    r = run(["run", *V2, "--", str(BIN / "gateway_probe"), "basic"], timeout=120, env={"DRAGON_CHANNEL_LANES": "0"})
    out = r.stdout.decode()
    lines = checks_of(out)
    assert not [l for l in lines if l.startswith("FAILED")], out + r.stderr.decode()
    assert len(lines) == GATEWAY_PROBE_BASIC_CHECKS, lines
    assert "ok DRAGON_CHANNEL_LANES=0: no lane" in out, out
    assert r.returncode == 0, r.stderr


def lose_node_1_under_a_receive(sig, args=(), env=None):
    """gateway_probe lost: node 0 waits in a receive on node 1's channel;
    node 1's agent gets `sig`. Returns (stdout, stderr) once the run ended,
    after the probe's own check passed."""
    fe = start(["run", *V2, *args, "--", str(BIN / "gateway_probe"), "lost"], env=env)
    victim = None
    try:
        line = read_line_with_timeout(fe.stdout, 30)
        assert line == "waiting\n", line
        time.sleep(0.3)  # the receive is waiting on node 1 now
        victim = agent_of_node(fe.pid, 1)
        assert victim
        os.kill(victim, sig)
        out, err = fe.communicate(timeout=60)
        out = line + out.decode()
        assert "ok a receive waiting on a lost node ends with closed" in out, out + err.decode()
        # The head ran on node 0 and handled the loss itself, so the run ends with its code.
        assert fe.returncode == 0, err
        assert wait_gone(victim)
        return out, err
    finally:
        if fe.poll() is None:  # a failed check must not leave the run behind
            os.killpg(fe.pid, signal.SIGKILL)
            fe.wait()
        if victim and pid_alive(victim):
            os.kill(victim, signal.SIGKILL)


def test_a_receive_waiting_on_a_lost_node_ends_with_an_error():
    out, err = lose_node_1_under_a_receive(signal.SIGKILL)
    assert "the lane to node 1 closed" in out, out  # the process saw node 1's agent go itself
    assert b"node 1 (" in err and b"lost" in err, err


def test_a_receive_on_a_lane_to_a_silent_node_ends_when_the_node_is_declared_lost():
    """node 1's agent stopped, not dead: its kernel keeps the lane's socket
    up, so only node 0's agent, which declares node 1 lost by heartbeat,
    can end the receive (it shuts down the lane it handed out)."""
    out, err = lose_node_1_under_a_receive(signal.SIGSTOP, ["--heartbeat-timeout", "1"])
    assert "the lane to node 1 closed" in out, out
    assert re.search(rb"node 1 \(.*\) lost: no word for 1\.\d s", err), err


def test_a_receive_waiting_on_a_lost_node_through_the_gateway():
    out, _ = lose_node_1_under_a_receive(signal.SIGKILL, env={"DRAGON_CHANNEL_LANES": "0"})
    assert "node 1 was lost" in out, out  # the local agent's report


def test_bad_requests_get_reasons_and_the_agent_keeps_serving():
    r = run(["run", *V2, "--", str(BIN / "gateway_probe"), "errors"], timeout=60)
    lines = checks_of(r.stdout.decode())
    assert not [l for l in lines if l.startswith("FAILED")], r.stdout.decode() + r.stderr.decode()
    assert len(lines) == 9, lines
    assert r.returncode == 0, r.stderr


