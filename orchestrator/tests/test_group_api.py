"""The C++ ProcessGroup API (process_group.hpp), driven by group_probe inside a real run."""
import os
import re
import socket

import pytest

from conftest import BIN, BUILD, PY, run

PROBE = str(BIN / "group_probe")


def probe(*args, orch_args=(), timeout=120, env=None):
    r = run([*orch_args, "run", "--", PROBE, *args], timeout=timeout, env=env)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def ranks(out):
    """rank -> dict of the rank=... line's fields, plus its runs."""
    table = {}
    last = None
    for line in out.splitlines():
        if line.startswith("rank="):
            fields = dict(kv.split("=", 1) for kv in line.split())
            last = table[int(fields["rank"])] = {**fields, "runs_seen": []}
        elif line.startswith("  run ") and last is not None:
            last["runs_seen"].append(dict(kv.split("=", 1) for kv in line.split()[1:]))
    return table


def outcome(out):
    line = next(l for l in out.splitlines() if l.startswith("outcome="))
    return dict(kv.split("=", 1) for kv in line.split(" fail_error=")[0].split()) | {
        "fail_error": line.split(" fail_error=", 1)[1]}


def test_two_templates_start_join_query_and_close():
    out = probe("basic")
    assert "joined=1" in out
    assert outcome(out)["outcome"] == "succeeded"
    t = ranks(out)
    assert sorted(t) == [0, 1, 2, 3, 4]
    assert all(r["state"] == "exited" and r["code"] == "0" and r["node"] == "0" for r in t.values())
    assert len({r["puid"] for r in t.values()}) == 5  # distinct processes
    assert [t[r]["local"] for r in range(5)] == ["0", "1", "2", "3", "4"]
    for r in (2, 3, 4):  # the second template's ranks, read through their pipes
        assert f"out{r}=entry2 rank {r} of 5" in out
    assert "codes=5" in out
    assert "table_after_close=1" in out  # only the probe itself is left


def test_a_failure_fails_the_group_and_stops_the_rest():
    out = probe("failure")
    o = outcome(out)
    assert (o["outcome"], o["fail_rank"], o["fail_code"]) == ("failed", "2", "3")
    t = ranks(out)
    assert t[0]["signal"] == t[1]["signal"] == "2"  # stopped with SIGINT, not left running


def test_join_times_out_while_running_and_signals_reach_every_member():
    out = probe("signal")
    assert "joined_early=0" in out and "joined=1" in out
    before, after = out.split("joined=1")
    assert all(r["state"] == "running" for r in ranks(before).values())
    assert all(r["signal"] == "10" for r in ranks(after).values())  # SIGUSR1
    assert outcome(after)["outcome"] == "failed"


def test_stop_escalates_to_sigkill_past_ignored_signals():
    out = probe("stop")
    assert outcome(out)["outcome"] == "stopped"
    t = ranks(out)
    assert t[0]["signal"] == t[1]["signal"] == "9"  # ignored SIGINT and SIGTERM
    assert t[2]["signal"] == "2"  # a plain sleep ends at SIGINT


def test_kill_and_close():
    out = probe("kill")
    assert "close_running=agent: group 2 is still running; join or stop it before closing it" in out
    assert all(r["signal"] == "9" for r in ranks(out).values())
    assert "close_twice=close: group 2 is closed" in out


def test_close_without_waiting_drops_only_its_own_replies():
    out = probe("close_nowait")
    assert "nowait_running=agent: group 2 is still running; join or stop it before closing it" in out
    assert "nowait_outcome=succeeded" in out
    assert "nowait_twice=close: group 22 is closed" in out
    # the calls after them got their own replies; the agent forgot the 20 ended groups
    assert "nowait_procs_true=0" in out, out


def test_restart_keeps_every_run_until_restarts_run_out():
    out = probe("restart")
    o = outcome(out)
    assert (o["outcome"], o["restarts"], o["fail_code"]) == ("failed", "3", "4")
    t = ranks(out)
    runs = t[0]["runs_seen"]
    assert len(runs) == 4 and len({r["puid"] for r in runs}) == 4
    assert all(r["exited"] == "1" and r["code"] == "4" for r in runs)
    assert t[0]["puid"] == runs[-1]["puid"]  # the current puid is the latest run
    assert t[1]["code"] == "0" and len(t[1]["runs_seen"]) == 1


def test_output_to_files_discard_and_pipes(tmp_path):
    (tmp_path / "input.txt").write_text("from a file\n")
    r = run(["run", "--", PROBE, "io", str(tmp_path)], timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert outcome(out)["outcome"] == "succeeded"
    for rank in (0, 1):
        assert (tmp_path / f"out.{rank}.txt").read_text() == f"out of {rank}\n"
        assert (tmp_path / f"err.{rank:02}.txt").read_text() == f"err of {rank}\n"  # %2r, relative to cwd
    assert (tmp_path / "both.txt").read_text() == "first\nsecond\n"  # one file for both streams
    assert b"nobody sees this" not in r.stdout + r.stderr and b"nor this" not in r.stdout + r.stderr
    assert "echoed_ok=1" in out and "echoed_bytes=3145749" in out  # 3 MiB through a pipe, windowed
    assert "from_file=from a file" in out


def test_refusals_name_the_problem():
    out = probe("refused")
    assert "bad_pattern=entry 0 (true): path pattern 'out.%q': unknown escape '%q'" in out
    assert "stdin_inherit=entry 0 (true): stdin from the terminal is only for the front end's group" in out
    o = outcome(out)
    assert o["outcome"] == "failed"
    assert o["fail_error"] == "true: cannot open stdout file '/nonexistent-dir/out.0': No such file or directory"
    assert "empty=start: the group has no processes (add some first)" in out
    assert "foreign=agent: group 1 belongs to the front end" in out


def test_plan_on_a_synthetic_node():
    out = probe("placed", orch_args=("--topology", "synthetic:pack:2 numa:1 core:4 pu:2"))
    # cyclic alternates sockets; 2 cores of 2 PUs each per rank.
    assert out.splitlines() == [
        "plan rank=0 node=0 local=0 cpus=0,1,2,3",
        "plan rank=1 node=0 local=1 cpus=8,9,10,11",
        "plan rank=2 node=0 local=2 cpus=4,5,6,7",
        "plan rank=3 node=0 local=3 cpus=12,13,14,15",
    ]


def test_reported_cpus_are_what_each_rank_is_bound_to():
    out = probe("placed", "start")
    t = ranks(out)
    for rank in (0, 1):
        seen = re.search(rf"seen{rank} Cpus_allowed_list:\s*(\S+)", out).group(1)
        assert t[rank]["cpus"] == seen  # one cpu each: "0" and "1"
    assert t[0]["cpus"] != t[1]["cpus"]


def check_constraints(out, pin, nnodes):
    """What group_probe constraints PIN printed, on a run of nnodes nodes."""
    assert outcome(out)["outcome"] == "succeeded", out
    t = ranks(out)
    assert sorted(t) == list(range(11))
    seen = {int(m[1]): (int(m[2]), m[3]) for m in re.finditer(r"^seen(\d+) node=(\d+) Cpus_allowed_list:\s*(\S+)$",
                                                                out, re.M)}
    assert sorted(seen) == list(range(11)), out
    for rank in range(11):
        assert seen[rank][0] == int(t[rank]["node"]), out  # DRAGON_NODE_ID is where the agent says
    for rank in (2, 3, 4):  # pinned to node `pin`
        assert int(t[rank]["node"]) == pin, out
    for rank in (5, 6):  # bound to cpu 0, though the group's binding is none
        assert t[rank]["cpus"] == "0" and seen[rank][1] == "0", out
    for rank in (0, 1, 2, 3, 4, 7, 8, 9, 10):  # not bound
        assert t[rank]["cpus"] == "-", out
    by_host = {int(t[rank]["node"]) for rank in (7, 8, 9, 10)}
    if nnodes > 1:
        assert len(by_host) > 1, out  # every node has this hostname: spread over them
    pre = "placing 3 ranks (policy block, binding none, cpus_per_proc 1): entry 1 (true): "
    host = socket.gethostname()
    nodes = "0" if nnodes == 1 else f"0-{nnodes - 1}"
    assert f"bad_node={pre}node 7 does not exist (nodes: {nodes})\n" in out, out
    assert f"bad_host={pre}no node has hostname 'no-such-host.invalid' (hosts: {host})\n" in out, out
    assert re.search(rf"^bad_cpu={re.escape(pre)}node 0 \({re.escape(host)}\) has no cpu 4095 \(its cpus: \S+\)$",
                     out, re.M), out


@pytest.mark.skipif(0 not in os.sched_getaffinity(0), reason="cpu 0 is not ours to bind to")
def test_entries_pinned_to_a_node_or_bound_to_cpus_and_bad_constraints_refused():
    check_constraints(probe("constraints", "0"), 0, 1)


def test_ten_groups_of_500_leave_no_fds_memory_or_zombies_in_the_agent():
    # Under AddressSanitizer freed memory waits in a quarantine: turn it off,
    # or every free would look like growth (no effect on other builds).
    # Sanitized builds spawn through fork, ~10x slower: 100 per group there.
    asan = os.environ.get("ASAN_OPTIONS", "")
    n = "100" if BUILD.name.startswith(("build-asan", "build-tsan")) else "500"
    out = probe("leak", "10", n, timeout=300, env={"ASAN_OPTIONS": f"{asan}:quarantine_size_mb=0".lstrip(":")})
    lines = out.splitlines()
    before = dict(kv.split("=") for kv in lines[0].split()[1:])
    after = [dict(kv.split("=") for kv in l.split()[2:]) for l in lines[1:]]
    assert len(after) == 10
    for a in after:
        # (not equal: a descriptor the agent held for a moment, its zygote's
        # start or a pidfd being reaped, may be in "before" and gone later)
        assert int(a["fds"]) <= int(before["fds"]), out
        assert a["zombies"] == "0" and a["table"] == "1", out
    assert int(after[-1]["fds"]) <= int(after[0]["fds"]), f"the agent's descriptors grew over the groups:\n{out}"
    # The first group sizes the agent's tables; later ones must not add to them.
    growth = int(after[-1]["anon_kib"]) - int(after[1]["anon_kib"])
    assert growth < 512, f"agent private memory grew {growth} KiB over 8 groups of {n}:\n{out}"


ORPHAN = r"""
import os, subprocess, sys, time
out = subprocess.run([sys.argv[1], "orphan"], capture_output=True, timeout=30).stdout.decode()
pids = [int(l.split("=")[1]) for l in out.splitlines() if l.startswith("pid=")]
assert len(pids) == 3, out
def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # a process being reaped may give ESRCH
        return False
deadline = time.monotonic() + 15
while any(alive(p) for p in pids) and time.monotonic() < deadline:
    time.sleep(0.05)
print("left", sum(alive(p) for p in pids))
"""


def test_a_group_whose_owner_leaves_is_stopped():
    r = run(["run", "--", PY, "-c", ORPHAN, PROBE], timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().strip() == "left 0"
