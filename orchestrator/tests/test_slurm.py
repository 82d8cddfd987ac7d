"""Inside a real Slurm allocation: a 4-node Slurm cluster on this machine
(scripts/slurm-cluster.sh: munge, slurmctld, four slurmd n1..n4), agents
started by srun, groups over the allocation's nodes, exit codes, channels
across nodes, scancel, and the errors of an allocation that cannot be used."""
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import BIN, BUILD, GATEWAY_PROBE_BASIC_CHECKS, ORCH, dead_entries, pid_alive, shm_entries, wait_gone

pytestmark = pytest.mark.slurm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = os.path.join(ROOT, "scripts", "slurm-cluster.sh")


@pytest.fixture(scope="module")
def slurm_env():
    """The cluster's environment; brings the cluster up for these tests (and
    down after) unless one is already up, which is then left as found."""
    was_up = subprocess.run([CLUSTER, "status"], capture_output=True).returncode == 0
    if not was_up:
        up = subprocess.run([CLUSTER, "up"], capture_output=True, timeout=120)
        assert up.returncode == 0, up.stdout.decode() + up.stderr.decode()
    env_lines = subprocess.run([CLUSTER, "env"], capture_output=True, check=True).stdout.decode()
    env = dict(os.environ)
    env.pop("DRAGON_LOG_LEVEL", None)
    for m in re.finditer(r"^export (\w+)=(.*)$", env_lines, re.M):
        env[m[1]] = m[2].strip("'\"")
    yield env
    if not was_up:
        subprocess.run([CLUSTER, "down"], capture_output=True, timeout=120)


def salloc(env, args, nodes=4, timeout=120, **kw):
    """salloc -N nodes dragon-orchestrate ARGS (the front end runs where salloc runs it)."""
    return subprocess.run(["salloc", f"-N{nodes}", "--quiet", ORCH, *args], env=env, capture_output=True,
                          timeout=timeout, **kw)


def test_64_ranks_over_the_4_nodes_of_an_allocation(slurm_env):
    r = salloc(slurm_env, ["run", "-n", "64", "--placement", "cyclic", "--label", "--", "sh", "-c",
                           'echo "$DRAGON_NODE_ID $SLURMD_NODENAME $DRAGON_NRANKS"'])
    assert r.returncode == 0, r.stderr.decode()
    seen = {}
    for line in r.stdout.decode().splitlines():
        m = re.fullmatch(r"\[(\d+)\] (\d+) (n\d) 64", line)
        assert m, line
        seen[int(m[1])] = (int(m[2]), m[3])
    assert sorted(seen) == list(range(64))
    for rank, (node, name) in seen.items():
        assert node == rank % 4, (rank, node)
        assert name == f"n{node + 1}", (rank, name)  # node k is the allocation's k-th node
    assert not dead_entries(shm_entries())


def test_the_launcher_is_chosen_inside_an_allocation_and_exit_codes_pass_through(slurm_env):
    r = salloc(slurm_env, ["run", "-n", "8", "--", "sh", "-c", 'if [ "$DRAGON_RANK" = 6 ]; then exit 5; fi'])
    assert r.returncode == 5, r.stderr.decode()
    assert re.search(rb"rank 6 \(puid \d+\) exited with code 5", r.stderr), r.stderr
    r = salloc(slurm_env, ["run", "--", "sh", "-c", "exit 3"], nodes=2)
    assert r.returncode == 3, r.stderr.decode()


def test_channels_between_nodes_of_an_allocation(slurm_env):
    # gateway_probe opens node 1's agent socket as a process of node 1 would:
    # in Slurm's multiple-slurmd mode every node is on this host.
    r = salloc(slurm_env, ["run", "--", str(BIN / "gateway_probe"), "basic"], nodes=2)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "FAILED" not in out and out.count("\nok ") + out.startswith("ok ") == GATEWAY_PROBE_BASIC_CHECKS, out


def test_fewer_nodes_than_the_allocation_and_too_many(slurm_env):
    r = salloc(slurm_env, ["run", "--nodes", "2", "-n", "4", "--placement", "cyclic", "--label", "--", "sh", "-c",
                           "echo $DRAGON_NODE_ID"])
    assert r.returncode == 0, r.stderr.decode()
    assert sorted(r.stdout.decode().splitlines()) == ["[0] 0", "[1] 1", "[2] 0", "[3] 1"]
    r = salloc(slurm_env, ["run", "--nodes", "8", "--", "true"])
    assert r.returncode == 2, r.stderr.decode()
    assert b"--nodes 8: the allocation (job " in r.stderr and b"has 4 nodes" in r.stderr, r.stderr


def test_srun_refusing_the_step_is_a_clear_error(slurm_env):
    r = salloc(slurm_env, ["run", "--srun-args", "--nodelist=n9", "--", "true"], timeout=90)
    assert r.returncode == 70, r.stderr.decode()
    err = r.stderr.decode()
    assert "srun: error" in err, err  # srun's own message reaches the user
    assert "srun ended (code 1) before the agents of node 0 (n1)" in err, err


def test_outside_an_allocation_slurm_is_refused_with_the_reason(slurm_env):
    env = {k: v for k, v in slurm_env.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    r = subprocess.run([ORCH, "run", "--launcher", "slurm", "--", "true"], env=env, capture_output=True, timeout=30)
    assert r.returncode == 2
    assert b"not inside a Slurm allocation" in r.stderr, r.stderr
    # Without an allocation the default is the local launcher.
    r = subprocess.run([ORCH, "run", "--", "sh", "-c", "echo $DRAGON_NODE_ID"], env=env, capture_output=True, timeout=30)
    assert r.returncode == 0 and r.stdout == b"0\n", r.stderr


def test_scancel_mid_run_leaves_nothing_behind(slurm_env, tmp_path):
    fe = subprocess.Popen(["salloc", "-N4", "--quiet", ORCH, "run", "-n", "8", "--placement", "cyclic", "--", "sh",
                           "-c", f'echo $$ > {tmp_path}/pid.$DRAGON_RANK; exec sleep 120'],
                          env=slurm_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("pid.*"))) < 8:
        assert time.monotonic() < deadline and fe.poll() is None, "ranks did not start"
        time.sleep(0.05)
    time.sleep(0.2)
    pids = [int(p.read_text()) for p in tmp_path.glob("pid.*")]
    jobs = subprocess.run(["squeue", "-h", "-o", "%i"], env=slurm_env, capture_output=True, check=True).stdout.split()
    assert len(jobs) == 1, jobs
    subprocess.run(["scancel", jobs[0].decode()], env=slurm_env, check=True)
    fe.communicate(timeout=60)
    for pid in pids:
        assert wait_gone(pid, 30), f"rank pid {pid} outlived scancel"
    deadline = time.monotonic() + 30
    job = jobs[0].decode()
    while dead_entries(shm_entries()) or agents_of_job(job):
        assert time.monotonic() < deadline, (shm_entries(), agents_of_job(job))
        time.sleep(0.1)


def agents_of_job(job):
    """Pids of live dragon-agent processes started for Slurm job `job`."""
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/comm") as f:
                if f.read().strip() != "dragon-agent":
                    continue
            with open(f"/proc/{p}/environ", "rb") as f:
                if f"SLURM_JOB_ID={job}".encode() in f.read().split(b"\0") and pid_alive(int(p)):
                    found.append(int(p))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return found


def test_placement_uses_the_cpus_slurm_granted_not_the_machine(slurm_env):
    # A synthetic 16-core node: only the cpus of the allocation count.
    args = ["--topology", "synthetic:core:16 pu:1", "run", "-n", "8", "--bind", "core", "--display-map", "--dry-run",
            "--", "true"]
    r = subprocess.run(["salloc", "-N4", "--ntasks-per-node=2", "--quiet", ORCH, *args], env=slurm_env,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", r.stdout.decode(), re.M)
    assert [(int(a), int(b), int(d)) for a, b, c, d in rows] == [(k, k // 2, k % 2) for k in range(8)], r.stdout
    assert b"oversubscribed" not in r.stderr
    r = subprocess.run(["salloc", "-N4", "--quiet", ORCH, *args], env=slurm_env, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert b"oversubscribed: 8 ranks on 4 slots" in r.stderr, r.stderr  # one cpu granted per node


def test_an_sbatch_script_runs_a_mesh_of_channels_over_the_nodes(slurm_env, tmp_path):
    out = tmp_path / "job.out"
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/sh\nexec {ORCH} run -- {BIN / 'chan_probe'} mesh 8 20\n")
    script.chmod(0o755)
    r = subprocess.run(["sbatch", "-N4", "--wait", "--quiet", f"--output={out}", str(script)], env=slurm_env,
                       capture_output=True, timeout=180)
    text = out.read_text() if out.exists() else ""
    assert r.returncode == 0, r.stderr.decode() + text
    assert re.search(r"mesh ok: 8 members on nodes \{0,1,2,3\}", text), text
    assert not dead_entries(shm_entries())


def test_mpi_ranks_over_the_nodes_of_an_allocation_without_mpirun(slurm_env):
    """MPICH ranks on every node of a real allocation, wired by the agents'
    PMI (no srun --mpi, no mpiexec); and MPI_Abort's code comes back."""
    prog = BIN / "mpi" / "mpi_allreduce"
    if not prog.exists():
        pytest.skip(f"{prog} not built (scripts/install-deps.sh mpi)")
    r = salloc(slurm_env, ["run", "-n", "8", "--pmi", "simple", "--", str(prog)])
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    lines = [l for l in out.splitlines() if l.startswith("allreduce ")]
    assert len(lines) == 8 and all("sum=28" in l and "vector=ok" in l for l in lines), out
    r = salloc(slurm_env, ["run", "-n", "8", "--pmi", "simple", "--", str(BIN / "mpi" / "mpi_abort"), "5", "7"])
    assert r.returncode == 7, r.stderr.decode()
    assert re.search(rb"rank 5 \(puid \d+\) aborted the job with exit code 7", r.stderr), r.stderr
    assert not dead_entries(shm_entries())


MP_SCRIPT = r'''
import json, os
import dragon
import multiprocessing as mp
from dragon.native.machine import System, current

def work(q, i):
    q.put((i, current().h_uid, os.environ.get("SLURMD_NODENAME", "")))

if __name__ == "__main__":
    mp.set_start_method("dragon")
    q = mp.Queue()
    ps = [mp.Process(target=work, args=(q, i)) for i in range(4)]
    for p in ps:
        p.start()
    got = sorted(tuple(q.get(timeout=60)) for _ in ps)
    for p in ps:
        p.join(60)
    print(json.dumps({"nnodes": System().nnodes, "cpus": mp.cpu_count(), "got": got,
                      "codes": [p.exitcode for p in ps]}))
'''


def test_multiprocessing_with_the_dragon_start_method_in_an_allocation(slurm_env, tmp_path):
    import json

    script = tmp_path / "mp_script.py"
    script.write_text(MP_SCRIPT)
    env = dict(slurm_env)
    env["PYTHONPATH"] = str(BUILD / "python")
    r = salloc(env, ["run", "--", "/usr/bin/python3", str(script)], nodes=2, timeout=180)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    out = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert out["nnodes"] == 2 and out["codes"] == [0, 0, 0, 0]
    assert [g[0] for g in out["got"]] == [0, 1, 2, 3]
    assert sorted({g[1] for g in out["got"]}) == [0, 1]  # dealt over both nodes of the allocation
    assert {g[2] for g in out["got"]} == {"n1", "n2"}  # ... which are Slurm's nodes
    assert out["cpus"] >= 2
    assert not dead_entries(shm_entries())


DDICT_SCRIPT = r'''
import json, os, sys
import dragon
import multiprocessing as mp
from dragon.data.ddict import DDict
from dragon.native.process import Popen, ProcessTemplate
from dragon.native.process_group import ProcessGroup
from dragon.infrastructure.policy import Policy

def client(ser, me, rounds):
    # node 0's client writes first (its own group), then node 1's reads it all
    d = DDict.attach(ser)
    for i in range(rounds):
        d[("own", me, i)] = (me, i, dragon.current_runtime().node_id)
    seen = [d[("own", 0, i)] for i in range(rounds)] if me == 1 else []
    d[("done", me)] = {"node": dragon.current_runtime().node_id, "slurm": os.environ.get("SLURMD_NODENAME", ""),
                       "local": d.local_managers, "seen": len(seen)}
    d.detach()

def mp_child(d, k):
    d[("mp", k)] = os.environ.get("SLURMD_NODENAME", "")

if __name__ == "__main__":
    exe = sys.argv[1]
    out = {}
    d = DDict(1, 2, 256 << 20, timeout=120)
    ser = d.serialize()
    mgr = d._meta["managers"]
    out["manager_nodes"] = [m["node"] for m in mgr]
    out["manager_slurm"] = [dict(l.split("=", 1) for l in open(f"/proc/{m['pid']}/environ").read().split("\0")
                                 if "=" in l).get("SLURMD_NODENAME", "") for m in mgr]
    rounds = 200
    out["codes"] = []
    for me in range(2):
        with ProcessGroup() as pg:
            pg.add_process(1, ProcessTemplate(client, args=(ser, me, rounds),
                                              policy=Policy(placement=Policy.Placement.HOST_ID, host_id=me)))
            pg.start(); pg.join(120)
            out["codes"] += [c for _, c in pg.exit_status]
    out["done"] = [d[("done", me)] for me in range(2)]
    out["own"] = all(d[("own", me, i)][:2] == (me, i) for me in range(2) for i in range(rounds))
    out["keys_per_manager"] = [s["keys"] for s in d.stats]
    mp.set_start_method("dragon")
    ps = [mp.Process(target=mp_child, args=(d, k)) for k in range(4)]
    for p in ps: p.start()
    for p in ps: p.join(60)
    out["mp"] = [[p.exitcode for p in ps], sorted(d[("mp", k)] for k in range(4))]
    # a C++ client on node 1 (the example squares "input" into "result")
    d["input"] = b"9"
    d["py_big"] = b"p" * (5 << 20)
    with ProcessGroup() as pg:
        pg.add_process(1, ProcessTemplate(exe, args=(ser,), stdout=Popen.PIPE,
                                          policy=Policy(placement=Policy.Placement.HOST_ID, host_id=1)))
        pg.start(); pg.join(120)
        out["cpp_code"] = pg.exit_status[0][1]
    out["result"] = d["result"].decode()
    out["len"] = len(d)
    out["pids"] = [m["pid"] for m in mgr]
    d.destroy()
    out["run"] = dragon.current_runtime().run_id
    print(json.dumps(out), flush=True)
'''


def test_a_distributed_dictionary_over_the_nodes_of_an_allocation(slurm_env, tmp_path):
    """DDict managers on both nodes of a real allocation, Python clients
    (ProcessGroup members, multiprocessing children) and the C++ client
    reading and writing each other's keys across nodes; nothing left after."""
    import json

    exe = BIN / "dragon-ddict-example"
    assert exe.exists(), f"{exe} is not built"
    script = tmp_path / "ddict_script.py"
    script.write_text(DDICT_SCRIPT)
    env = dict(slurm_env)
    env["PYTHONPATH"] = str(BUILD / "python")
    r = salloc(env, ["run", "--", "/usr/bin/python3", str(script), str(exe)], nodes=2, timeout=300)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    out = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert out["manager_nodes"] == [0, 1]
    assert out["manager_slurm"] == ["n1", "n2"]  # one manager on each of Slurm's nodes
    assert out["codes"] == [0, 0]
    assert [(x["node"], x["slurm"], x["local"]) for x in out["done"]] == [(0, "n1", [0]), (1, "n2", [1])]
    assert out["done"][1]["seen"] == 200  # node 1's client read every key node 0's client wrote
    assert out["own"] is True
    assert all(k > 0 for k in out["keys_per_manager"])  # both shards hold keys
    assert out["mp"][0] == [0] * 4 and set(out["mp"][1]) <= {"n1", "n2"}
    assert out["cpp_code"] == 0 and out["result"] == "81 (squared by C++ on node 1)"
    assert all(wait_gone(pid) for pid in out["pids"])
    assert not dead_entries(shm_entries())
