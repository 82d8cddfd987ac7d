"""Several nodes: virtual clusters of agents on loopback addresses, linked only
by the TCP transport. Placement over nodes, output and stdin through node 0,
client groups across nodes, channels across nodes, strangers at the port,
and lost nodes."""
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import BIN, PY, children_of, pid_alive, read_line_with_timeout, run, shm_entries, start, wait_gone

pytestmark = pytest.mark.system

V4 = ["--launcher", "virtual", "--nodes", "4"]


def agent_of_node(fe_pid, node):
    """The pid of node `node`'s agent among the front end's children (it holds that node's lock)."""
    for pid in children_of(fe_pid):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(f"-n{node}-lock"):
                    return pid
        except (FileNotFoundError, PermissionError):
            continue
    return None


def test_64_ranks_round_robin_over_4_nodes_with_output_from_every_node():
    r = run(["run", *V4, "-n", "64", "--placement", "cyclic", "--label", "--", "sh", "-c",
             'echo "$DRAGON_NODE_ID $DRAGON_LOCAL_RANK $DRAGON_LOCAL_SIZE $DRAGON_NRANKS"'])
    assert r.returncode == 0, r.stderr
    seen = {}
    for line in r.stdout.decode().splitlines():
        m = re.fullmatch(r"\[(\d+)\] (\d+) (\d+) (\d+) (\d+)", line)
        assert m, line
        seen[int(m[1])] = tuple(int(x) for x in m.groups()[1:])
    assert sorted(seen) == list(range(64))  # every rank's line, from every node, once
    for rank, (node, local, local_size, nranks) in seen.items():
        assert (node, local, local_size, nranks) == (rank % 4, rank // 4, 16, 64), rank


def test_block_placement_over_synthetic_nodes_matches_the_map():
    topo = ["--topology", "synthetic:pack:1 core:16 pu:1"]
    r = run([*topo, "run", *V4, "-n", "64", "--display-map", "--label", "--", "sh", "-c", "echo node $DRAGON_NODE_ID"])
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    mapped = {int(m[1]): int(m[2]) for m in re.finditer(r"^\s+(\d+)\s+(\d+)\s+\d+\s+\(not bound\)$", out, re.M)}
    ran = {int(m[1]): int(m[2]) for m in re.finditer(r"^\[(\d+)\] node (\d+)$", out, re.M)}
    assert len(mapped) == 64 and ran == mapped
    assert [mapped[r] for r in (0, 15, 16, 31, 32, 63)] == [0, 0, 1, 1, 2, 3]  # 16 cores per node, filled in order


def test_stdin_reaches_rank_0_and_a_failure_on_another_node_names_its_rank():
    r = run(["run", *V4, "-n", "4", "--", "sh", "-c", 'if [ "$DRAGON_RANK" = 0 ]; then wc -l; fi'],
            input=b"".join(b"%d\n" % i for i in range(5000)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [b"5000"]
    r = run(["run", *V4, "-n", "8", "--placement", "cyclic", "--", "sh", "-c",
             'if [ "$DRAGON_RANK" = 7 ]; then exit 5; fi; exec sleep 30'], timeout=60)
    assert r.returncode == 5
    assert re.search(rb"rank 7 \(puid 128849018\d\d\) exited with code 5", r.stderr), r.stderr  # puid of node 3


def test_a_client_group_spans_nodes_and_its_pipes_come_back():
    r = run(["run", *V4, "--", str(BIN / "group_probe"), "basic"], timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    nodes = {int(m[1]) for m in re.finditer(r"^rank=\d+ .* node=(\d+) ", out, re.M)}
    assert len(nodes) > 1, out  # placed over several nodes
    for rank in (2, 3, 4):
        assert f"out{rank}=entry2 rank {rank} of 5" in out  # owner pipes from other nodes
    assert "table_after_close=1" in out


@pytest.mark.skipif(0 not in os.sched_getaffinity(0), reason="cpu 0 is not ours to bind to")
def test_client_group_entries_pinned_to_node_2_or_cpu_0_and_bad_constraints_refused():
    from test_group_api import check_constraints
    r = run(["run", *V4, "--", str(BIN / "group_probe"), "constraints", "2"], timeout=60)
    assert r.returncode == 0, r.stderr
    check_constraints(r.stdout.decode(), 2, 4)


STRANGER = r"""
import os, socket, subprocess, sys
probe = sys.argv[1]
agent = os.getppid()  # node 0's agent started us
inodes = set()
for fd in os.listdir(f"/proc/{agent}/fd"):
    link = os.readlink(f"/proc/{agent}/fd/{fd}")
    if link.startswith("socket:["):
        inodes.add(link[8:-1])
port = None
with open("/proc/net/tcp") as f:
    for line in f.readlines()[1:]:
        cols = line.split()
        local, state, inode = cols[1], cols[3], cols[9]
        if state == "0A" and inode in inodes and local.startswith("0200007F:"):
            port = int(local.split(":")[1], 16)
assert port, "node 0's listener not found"
# A stranger with a secret of its own, claiming to be node 1.
print(subprocess.run([probe, "127.0.0.2", str(port), "1"], capture_output=True, text=True).stdout.strip())
# Random bytes, then a half-open connection that says nothing.
for _ in range(5):
    s = socket.create_connection(("127.0.0.2", port))
    s.sendall(os.urandom(4096))
    s.close()
print("strangers done", flush=True)
"""


def test_strangers_at_the_port_are_refused_and_the_run_goes_on():
    r = run(["run", *V4, "--", PY, "-c", STRANGER, str(BIN / "peer_probe")], timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert out.startswith("refused: ") and "strangers done" in out, out
    assert b"transport: accepting" in r.stderr  # the agent logged each stranger it dropped
    # The cluster still works after them.
    r = run(["run", *V4, "-n", "8", "--", "true"])
    assert r.returncode == 0


def start_sleepers(tmp_path, extra=()):
    fe = start([*extra, "run", *V4, "-n", "8", "--placement", "cyclic", "--", "sh", "-c",
                f'echo $$ > {tmp_path}/pid.$DRAGON_RANK; exec sleep 60'])
    deadline = time.monotonic() + 20
    while len(list(tmp_path.glob("pid.*"))) < 8:
        assert time.monotonic() < deadline, "ranks did not start"
        time.sleep(0.02)
    time.sleep(0.1)  # the last ones reached exec
    pids = [int(p.read_text()) for p in tmp_path.glob("pid.*")]
    return fe, pids


def test_killing_one_agent_ends_the_run_with_an_error_naming_its_node(tmp_path):
    fe, pids = start_sleepers(tmp_path)
    victim = agent_of_node(fe.pid, 2)
    assert victim
    os.kill(victim, signal.SIGKILL)
    out, err = fe.communicate(timeout=30)
    assert fe.returncode == 70, err
    assert re.search(rb"rank \d: node 2 \(.*\) was lost", err), err
    for pid in pids:
        assert wait_gone(pid), f"rank pid {pid} outlived the run"
    assert not children_of(fe.pid)


def test_a_silent_agent_is_found_by_heartbeats_and_killed(tmp_path):
    fe, pids = start_sleepers(tmp_path, ["--heartbeat-timeout", "1"])
    victim = agent_of_node(fe.pid, 1)
    os.kill(victim, signal.SIGSTOP)  # alive but silent, as behind a cut link
    out, err = fe.communicate(timeout=30)
    assert fe.returncode == 70, err
    assert re.search(rb"node 1 \(.*\) was lost: no word for 1\.\d s", err), err
    assert wait_gone(victim)
    for pid in pids:
        assert wait_gone(pid), f"rank pid {pid} outlived the run"


def test_ctrl_c_stops_every_node(tmp_path):
    fe, pids = start_sleepers(tmp_path)
    agents = children_of(fe.pid)
    assert len(agents) == 4
    fe.send_signal(signal.SIGINT)
    out, err = fe.communicate(timeout=30)
    assert fe.returncode == 130, err
    for pid in pids + agents:
        assert wait_gone(pid)


def test_a_start_failure_on_one_node_stops_ranks_started_on_another():
    # Node 0's rank cannot exec; node 1's rank started meanwhile must be stopped, not waited for.
    r = run(["run", "--launcher", "virtual", "--nodes", "2", "--placement", "cyclic", "--",
             "/nonexistent/prog", ":", "-n", "1", "sleep", "300"], timeout=60)
    assert r.returncode == 127, r.stderr
    assert b"/nonexistent/prog" in r.stderr


def test_exec_launched_agents_join_too():
    # DRAGON_AGENT: agents exec'd from that program, fds 3/4 and the secret in the environment.
    r = run(["run", "--launcher", "virtual", "--nodes", "3", "-n", "6", "--label", "--", "sh", "-c",
             "echo $DRAGON_NODE_ID; env | grep -c DRAGON_RUN_SECRET || true"],
            env={"DRAGON_AGENT": str(BIN / "dragon-agent")})
    assert r.returncode == 0, r.stderr
    nodes, secrets = {}, {}
    for line in r.stdout.decode().splitlines():
        rank, value = re.fullmatch(r"\[(\d)\] (\d+)", line).groups()
        (secrets if int(rank) in nodes else nodes)[int(rank)] = int(value)
    assert sorted(set(nodes.values())) == [0, 1, 2]  # every node ran ranks
    assert secrets == {rank: 0 for rank in range(6)}  # no rank sees the run's secret


def expected_shares(nodes):
    """Node k's cpus under --split-cpus: ours, dealt out round-robin."""
    mine = sorted(os.sched_getaffinity(0))
    shares = [[] for _ in range(nodes)]
    for i in range(max(len(mine), nodes)):
        cpu = mine[i % len(mine)]
        if cpu not in shares[i % nodes]:
            shares[i % nodes].append(cpu)
    return [sorted(s) for s in shares]


def cpus_of(text):
    """'0-2,5' -> [0, 1, 2, 5]."""
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


@pytest.mark.parametrize("nodes,agent", [(2, None), (3, None), (2, "exec")])
def test_split_cpus_gives_every_node_its_own_share_of_the_cpus(nodes, agent):
    env = {"DRAGON_AGENT": str(BIN / "dragon-agent")} if agent == "exec" else None
    r = run(["run", "--launcher", "virtual", "--nodes", str(nodes), "--split-cpus", "-n", str(2 * nodes),
             "--placement", "cyclic", "--", "sh", "-c",
             'echo "$DRAGON_NODE_ID $(grep Cpus_allowed_list /proc/self/status | cut -f2)"'], env=env)
    assert r.returncode == 0, r.stderr
    seen = {}
    for line in r.stdout.decode().splitlines():
        node, cpus = line.split()
        seen.setdefault(int(node), set()).update(cpus_of(cpus))
    shares = expected_shares(nodes)
    assert {n: sorted(c) for n, c in seen.items()} == dict(enumerate(shares))
    # Each node's processes stay on its share: with enough cpus no two nodes share one.
    if len(os.sched_getaffinity(0)) >= nodes:
        assert all(not set(a) & set(b) for i, a in enumerate(shares) for b in shares[i + 1:])


def test_split_cpus_is_refused_without_the_virtual_launcher():
    r = run(["run", "--split-cpus", "--", "true"])
    assert r.returncode == 2
    assert b"--split-cpus is for --launcher virtual" in r.stderr


def test_one_shared_output_file_over_nodes_keeps_every_line(tmp_path):
    r = run(["run", "--launcher", "virtual", "--nodes", "2", "-n", "4", "--placement", "cyclic",
             "--output", "all.txt", "--", "sh", "-c", "echo rank $DRAGON_RANK"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted((tmp_path / "all.txt").read_text().splitlines()) == [f"rank {i}" for i in range(4)]


def test_a_slow_reader_holds_output_back_without_losing_a_node():
    # Nobody reads our stdout for 3 s while ranks on node 1 write 40 MB: node 0
    # stops reading node 1's link; heartbeats must not call node 1 lost.
    fe = start(["--heartbeat-timeout", "1", "run", "--launcher", "virtual", "--nodes", "2", "-n", "2",
                "--placement", "cyclic", "--", "sh", "-c",
                'if [ "$DRAGON_RANK" = 1 ]; then head -c 40000000 /dev/zero; fi'])
    time.sleep(3)
    out, err = fe.communicate(timeout=60)
    assert fe.returncode == 0, err
    assert len(out) == 40_000_000
    assert b"lost" not in err


CHAN_PROBE = str(BIN / "chan_probe")


def processes_of(program):
    """Live processes whose argv[0] is `program`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if argv0 == program.encode() and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def run_mesh(args, n, k, nodes, timeout):
    """Runs `chan_probe mesh n k` as the head; returns {rank: node} after checking the summary,
    that nothing of the run is left in /dev/shm and no probe process outlived it."""
    r = run([*args, "--", CHAN_PROBE, "mesh", str(n), str(k)], timeout=timeout)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    m = re.search(rf"^mesh ok: {n} members on nodes {{([\d,]+)}}, {n}\*{n - 1}\*{k} = (\d+) messages "
                  rf"\((\d+) remote sends\)$", out, re.M)
    assert m, out
    assert m[1] == ",".join(str(i) for i in range(nodes)), out
    assert int(m[2]) == n * (n - 1) * k
    placed = dict(tuple(int(x) for x in pair.split(":"))
                  for pair in re.search(r"^rank:node (.*)$", out, re.M)[1].split())
    assert sorted(placed) == list(range(n))
    # Remote sends: to every member on another node, K messages each.
    remote = sum(k for a in placed for b in placed if a != b and placed[a] != placed[b])
    assert int(m[3]) == remote, out
    run_id = re.search(r"^run ([0-9a-f]+)$", out, re.M)[1]

    def ours():
        return sorted(e for e in shm_entries() if e.startswith(f"dragon-{run_id}-"))

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (ours() or processes_of(CHAN_PROBE)):
        time.sleep(0.05)
    assert not ours(), f"left in /dev/shm: {ours()}"
    assert not processes_of(CHAN_PROBE), "a chan_probe process outlived the run"
    return placed


def test_channels_across_4_nodes_deliver_every_message_once_and_in_order():
    # 16 members over 4 nodes, every one sending 50 messages (up to 100 KiB) to
    # every other one's inbox: remote sends, a blocking remote receive, remote
    # timeouts (empty and full channels) checked by the probe.
    placed = run_mesh(["run", *V4], 16, 50, 4, timeout=180)
    assert placed == {rank: rank % 4 for rank in range(16)}


def test_channels_on_one_node_work_the_same_locally():
    placed = run_mesh(["run"], 4, 20, 1, timeout=120)
    assert placed == {rank: 0 for rank in range(4)}
