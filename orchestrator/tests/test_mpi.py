"""Real MPI under `dragon-orchestrate run --pmi`: Debian's MPICH 4.0.2 (ch4:ucx,
its simple PMI-1 client), NetPIPE, and Slurm's real PMI-2 client library, on one
node and over virtual clusters of 4 agents on loopback addresses. Also MPI_Abort,
a rank that leaves without finalize, and ranks that speak broken PMI: each must
end the run promptly with a clear message and nothing left running.

The programs are tests/mpi/*.c, built into build/bin/mpi/ when mpicc.mpich
(scripts/install-deps.sh mpi) is installed; without them these tests skip.

MPICH needs no extra environment here: with UCX's default transports it runs
several ranks per node and ranks that believe (from PMI_process_mapping) they
are on different nodes of one host alike. (UCX_TLS=tcp alone hangs in
MPI_Finalize; UCX_TLS=tcp,self UCX_NET_DEVICES=lo also works.) Its shared
memory cannot collide between virtual nodes: MPICH's segments are
/dev/shm/mpich_shar_tmpXXXXXX (mkstemp) and UCX's ucx_shm_posix_<random>, both
created O_EXCL, and UCX also reaches ranks of other virtual nodes of the host
by CMA (process_vm_readv), which is right: they are on one host (strace -f on
the ranks of `--launcher virtual --nodes 2 -n 4`).

Every job runs without the caller's OMPI_MCA_* variables (run_job): what a
test needs it says itself.
"""
import os
import re
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from conftest import BIN, ORCH, PY, dead_entries, pid_alive

pytestmark = pytest.mark.mpi

MPI_BIN = BIN / "mpi"
V4 = ["--launcher", "virtual", "--nodes", "4"]
SIMPLE = ["--pmi", "simple"]
NETPIPE = shutil.which("NPmpich2")


def prog(name):
    p = MPI_BIN / name
    if not p.exists():
        pytest.skip(f"{p} not built (needs mpicc.mpich / libpmi2-0-dev: scripts/install-deps.sh mpi)")
    return str(p)


# --- running a job and proving nothing is left --------------------------------

def tagged_pids(tag):
    """Processes whose environment carries this test's tag: only what this
    test started (the orchestrator, its agents and every rank inherit it)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if tag in f.read().split(b"\0"):
                    found.append(int(d))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return [p for p in found if pid_alive(p)]


class Job:
    def __init__(self, returncode, out, err, elapsed, left):
        self.returncode, self.out, self.err, self.elapsed, self.left = returncode, out, err, elapsed, left

    def __repr__(self):
        return f"rc={self.returncode} after {self.elapsed:.1f}s\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}"


def run_job(args, timeout=120, env=None, cwd=None):
    """Runs dragon-orchestrate in its own session. On a timeout the session is
    killed and the test fails (no hang). Afterwards no process started by this
    run may be left (a short grace for exits in flight); any that is, is killed
    and reported in Job.left."""
    tag_value = uuid.uuid4().hex
    tag = f"DRAGON_MPI_TEST_TAG={tag_value}".encode()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OMPI_MCA_")}
    full_env.pop("DRAGON_LOG_LEVEL", None)
    full_env.update(env or {})
    full_env["DRAGON_MPI_TEST_TAG"] = tag_value
    t0 = time.monotonic()
    p = subprocess.Popen([ORCH, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                         start_new_session=True, cwd=cwd)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = p.communicate()
        for pid in tagged_pids(tag):
            os.kill(pid, signal.SIGKILL)
        pytest.fail(f"dragon-orchestrate {' '.join(args)} did not end within {timeout}s\n"
                    f"--- stdout\n{out.decode(errors='replace')[-2000:]}\n--- stderr\n{err.decode(errors='replace')[-2000:]}")
    elapsed = time.monotonic() - t0
    deadline = time.monotonic() + 5
    left = tagged_pids(tag)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = tagged_pids(tag)
    left_desc = []
    for pid in left:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            left_desc.append(f"{pid}: {cmdline}")
        except OSError:
            left_desc.append(str(pid))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return Job(p.returncode, out.decode(errors="replace"), err.decode(errors="replace"), elapsed, left_desc)


RUN_ENTRY = re.compile(r"dragon-[0-9a-f]+-n\d+-[a-z0-9_.]+")


def run_entries():
    """The runtime's per-node entries (dragon-<run>-n<node>-<what>) in
    /dev/shm (segments, the lock, Open MPI's backing directory) and in /tmp
    (the PMIx servers' directories, Open MPI's session directories inside)."""
    return {(d, e) for d in ("/dev/shm", "/tmp") for e in os.listdir(d) if RUN_ENTRY.fullmatch(e)}


def left_by_runs_since(before):
    """Entries new since `before` whose run is over (its node lock free or
    gone), after a short grace for teardown in flight: what a finished run
    left behind. Live runs of other processes on this host are not counted."""
    deadline = time.monotonic() + 5
    while True:
        left = sorted(f"{d}/{e}" for d, e in run_entries() - before if dead_entries({e}))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def ok(job):
    assert job.returncode == 0, job
    assert not job.left, f"left running: {job.left}\n{job}"
    return job


def per_rank(out, word, n):
    """The `word rank=R size=S k=v ...` lines: exactly one per rank 0..n-1,
    size n in each; returns {rank: {key: value}}."""
    ranks = {}
    for line in out.splitlines():
        if not line.startswith(word + " "):
            continue
        kv = dict(m.groups() for m in re.finditer(r"(\w+)=(\S+)", line))
        r = int(kv["rank"])
        assert r not in ranks, f"rank {r} twice:\n{out}"
        assert int(kv["size"]) == n, line
        ranks[r] = kv
    assert sorted(ranks) == list(range(n)), f"want one '{word}' line from each of {n} ranks:\n{out}"
    return ranks


def check_program(name, out, n):
    word = {"mpi_hello": "hello", "mpi_allreduce": "allreduce", "mpi_ring": "ring", "mpi_bcast": "bcast"}[name]
    ranks = per_rank(out, word, n)
    for r, kv in ranks.items():
        if name == "mpi_allreduce":
            assert int(kv["sum"]) == n * (n - 1) // 2 and kv["vector"] == "ok", kv
        elif name == "mpi_ring":
            assert (int(kv["left"]), int(kv["right"])) == ((r - 1) % n, (r + 1) % n), kv
        elif name == "mpi_bcast":
            assert int(kv["bytes"]) == 16 << 20, kv
    return ranks


PROGRAMS = ["mpi_hello", "mpi_allreduce", "mpi_ring", "mpi_bcast"]


# --- one node ---------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 4, 16])
@pytest.mark.parametrize("name", PROGRAMS)
def test_mpi_program_on_one_node(name, n):
    job = ok(run_job(["run", "-n", str(n), *SIMPLE, "--", prog(name)], timeout=180))
    ranks = check_program(name, job.out, n)
    if name == "mpi_hello":
        for r, kv in ranks.items():  # MPICH sees one node of n ranks (PMI_process_mapping)
            assert (int(kv["local_rank"]), int(kv["local_size"])) == (r, n), kv


# --- a virtual cluster of 4 nodes on this host --------------------------------

@pytest.mark.parametrize("placement", ["block", "cyclic"])
@pytest.mark.parametrize("name", PROGRAMS)
def test_mpi_program_over_4_virtual_nodes(name, placement):
    n = 8
    job = ok(run_job(["run", *V4, "-n", str(n), "--placement", placement, *SIMPLE, "--", prog(name)], timeout=180))
    ranks = check_program(name, job.out, n)
    if name == "mpi_hello":
        for r, kv in ranks.items():
            node, local = (r // 2, r % 2) if placement == "block" else (r % 4, r // 4)
            assert int(kv["node"]) == node, kv
            # MPICH's own view of the layout (from PMI_process_mapping): 2 ranks on each node
            assert (int(kv["local_rank"]), int(kv["local_size"])) == (local, 2), kv


# The plain commands on virtual nodes of this host: 2 ranks per node (block
# placement), so each pair shares memory and pairs of different nodes talk
# over the network; values checked, nothing of the run left afterwards.
@pytest.mark.parametrize("pmi", ["simple", "cray"])
@pytest.mark.parametrize("nodes", [2, 4])
@pytest.mark.parametrize("name", ["mpi_allreduce", "mpi_ring"])
def test_mpich_on_virtual_nodes_needs_no_settings_and_leaves_nothing(name, nodes, pmi):
    before = run_entries()
    n = 2 * nodes
    job = ok(run_job(["run", "--launcher", "virtual", "--nodes", str(nodes), "-n", str(n), "--pmi", pmi, "--",
                      prog(name)], timeout=180))
    check_program(name, job.out, n)
    left = left_by_runs_since(before)
    assert not left, f"left behind by the run: {left}"


def test_pmi_port_instead_of_pmi_fd():
    job = ok(run_job(["run", *V4, "-n", "8", *SIMPLE, "--pmi-port", "--", prog("mpi_allreduce")], timeout=180))
    check_program("mpi_allreduce", job.out, 8)


ENV_DUMP = r"""
import os, stat
e = os.environ
fd = e.get("PMI_FD")
kind = "none" if fd is None else ("socket" if stat.S_ISSOCK(os.fstat(int(fd)).st_mode) else "other")
keys = ["PMI_RANK", "PMI_SIZE", "PMI_LOCAL_RANK", "PMI_LOCAL_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS",
        "PMI_UNIVERSE_SIZE", "DRAGON_NODE_ID", "PMI_JOBID", "PMI_PORT", "PMI_ID"]
print("env", " ".join(f"{k}={e.get(k, '-')}" for k in keys), f"fd={kind}", flush=True)
"""


@pytest.mark.parametrize("port", [False, True])
def test_pmi_environment_of_each_rank(port):
    job = ok(run_job(["run", *V4, "-n", "8", "--placement", "cyclic", *SIMPLE, *(["--pmi-port"] if port else []),
                      "--", PY, "-c", ENV_DUMP], timeout=60))
    jobids = set()
    for line in job.out.splitlines():
        kv = dict(m.groups() for m in re.finditer(r"(\w+)=(\S+)", line))
        assert kv["PMI_RANK"].isdigit(), line
        r = int(kv["PMI_RANK"])
        assert kv["PMI_SIZE"] == "8" and kv["PMI_UNIVERSE_SIZE"] == "8", line
        assert kv["DRAGON_NODE_ID"] == str(r % 4), line
        for k in ("PMI_LOCAL_RANK", "MPI_LOCALRANKID"):
            assert kv[k] == str(r // 4), line
        for k in ("PMI_LOCAL_SIZE", "MPI_LOCALNRANKS"):
            assert kv[k] == "2", line
        if port:  # PMI_PORT=host:port and PMI_ID instead of PMI_FD
            assert kv["fd"] == "none" and re.fullmatch(r"[\w.\-]+:\d+", kv["PMI_PORT"]) and kv["PMI_ID"] != "-", line
        else:
            assert kv["fd"] == "socket" and kv["PMI_PORT"] == "-", line
        assert kv["PMI_JOBID"] != "-", line
        jobids.add(kv["PMI_JOBID"])
    assert len(job.out.splitlines()) == 8 and len(jobids) == 1, job


# --- NetPIPE ------------------------------------------------------------------

@pytest.mark.skipif(NETPIPE is None, reason="NPmpich2 not installed (scripts/install-deps.sh mpi)")
@pytest.mark.parametrize("nodes", [[], V4[:2] + ["--nodes", "2"]], ids=["one-node", "two-virtual-nodes"])
def test_netpipe_integrity_and_timing(nodes, tmp_path):
    # -i: integrity check of every message instead of timing; then a timed run up to 64 KiB.
    job = ok(run_job(["run", *nodes, "-n", "2", "--placement", "cyclic", *SIMPLE, "--",
                      NETPIPE, "-i", "-u", "65536", "-n", "5", "-p", "0", "-o", str(tmp_path / "i.out")], timeout=120))
    progress = job.out + job.err  # NPmpich2 prints its per-size lines on stderr
    passed = re.findall(r"^\s*\d+:\s+(\d+) bytes .*Integrity check passed", progress, re.M)
    assert passed and "fail" not in progress.lower(), job
    assert max(int(b) for b in passed) >= 32768, job
    out = tmp_path / "np.out"
    job = ok(run_job(["run", *nodes, "-n", "2", "--placement", "cyclic", *SIMPLE, "--",
                      NETPIPE, "-u", "65536", "-n", "10", "-p", "0", "-o", str(out)], timeout=120))
    rows = [line.split() for line in out.read_text().splitlines() if line.strip()]
    sizes = [int(r[0]) for r in rows]
    assert sizes and sizes[0] == 1 and max(sizes) == 65536, rows
    assert all(float(r[1]) > 0 for r in rows), rows  # Mbps


# --- Slurm's PMI-2 client -----------------------------------------------------

@pytest.mark.parametrize("placement", ["block", "cyclic"])
def test_slurm_pmi2_client_over_4_virtual_nodes(placement):
    job = ok(run_job(["run", *V4, "-n", "8", "--placement", placement, *SIMPLE, "--", prog("slurm_pmi2_probe")],
                     timeout=60))
    ranks = per_rank(job.out, "pmi2probe", 8)
    assert len({kv["jobid"] for kv in ranks.values()}) == 1, job
    for r, kv in ranks.items():
        assert int(kv["gets"]) == 7, kv
        assert int(kv["node"]) == (r // 2 if placement == "block" else r % 4), kv  # from PMI_process_mapping


# --- Dragon's Cray-PMI shim (libpmi.so.0 / libpmi2.so.0) ------------------------

def shim(name):
    p = BIN / name
    if not p.exists():
        pytest.skip(f"{p} not built")
    return str(p)


@pytest.mark.parametrize("placement", ["block", "cyclic"])
@pytest.mark.parametrize("mode", ["pmi1", "pmi2"])
def test_cray_shim_every_call_over_4_nodes_x_2_ranks(mode, placement):
    """shim_probe calls every exported function and checks what it can itself
    (allgather/allgatherv/bcast contents, ring neighbours, puts of other ranks
    after a fence, node attributes); here its answers are checked against the
    placement: nid and SMP peers of every rank, and the PALS environment."""
    job = ok(run_job(["run", *V4, "-n", "8", "--placement", placement, "--pmi", "cray", "--",
                      shim("shim_probe"), mode], timeout=90))
    ranks = per_rank(job.out, "shim", 8)
    node = (lambda r: r // 2) if placement == "block" else (lambda r: r % 4)
    for r, kv in ranks.items():
        assert int(kv["nid"]) == node(r), kv
        peers = sorted(q for q in range(8) if node(q) == node(r))
        assert [int(x) for x in kv["clique"].split(",")] == peers, kv
        assert int(kv["smp"]) == 2 and kv["mode"] == mode and kv["mapping"] == "found", kv
        for check in ("kvs", "jobattr", "nodeattr", "allgather", "allgather_big", "allgatherv", "bcast", "ring"):
            assert kv[check] == "ok", (check, kv)
    assert len({kv["kvsname"] for kv in ranks.values()}) == 1, job


def test_cray_environment_and_our_libpmi_first():
    env_dump = (
        "import os; e=os.environ; print('pals', ' '.join(f'{k}={e.get(k, \"-\")}' for k in "
        "['PALS_RANKID','PALS_NODEID','PALS_LOCAL_RANKID','PALS_LOCAL_SIZE','PALS_APID','PALS_DEPTH','PMI_RANK']), "
        "'ld=' + e.get('LD_LIBRARY_PATH', '-').split(':')[0], flush=True)")
    job = ok(run_job(["run", *V4, "-n", "8", "--pmi", "cray", "--", PY, "-c", env_dump], timeout=60))
    apids = set()
    lines = [l for l in job.out.splitlines() if l.startswith("pals ")]
    assert len(lines) == 8, job
    for line in lines:
        kv = dict(m.groups() for m in re.finditer(r"(\w+)=(\S+)", line))
        r = int(kv["PALS_RANKID"])
        assert kv["PMI_RANK"] == str(r)
        assert kv["PALS_NODEID"] == str(r // 2) and kv["PALS_LOCAL_RANKID"] == str(r % 2), line
        assert kv["PALS_LOCAL_SIZE"] == "2" and kv["PALS_DEPTH"] == "1", line
        assert os.path.exists(os.path.join(kv["ld"], "libpmi.so.0")), line
        apids.add(kv["PALS_APID"])
    assert len(apids) == 1


# --- the C++ ProcessGroup API ------------------------------------------------------

def test_mpi_job_from_the_cpp_process_group_api():
    probe = str(BIN / "group_probe")
    job = ok(run_job(["run", *V4, "--", probe, "mpi", prog("mpi_allreduce"), "8"], timeout=90))
    check_program("mpi_allreduce", job.out, 8)
    assert "outcome=succeeded" in job.out, job
    job = ok(run_job(["run", *V4, "--", probe, "mpi", prog("mpi_abort"), "8", "3", "7"], timeout=90))
    assert re.search(r"outcome=failed fail_rank=3 fail_code=7 ", job.out), job
    assert "fail_kind=3" in job.out, job  # aborted


# --- failures: MPI_Abort, no finalize, broken PMI ------------------------------

def pids_of(out, word):
    return [int(m[1]) for m in re.finditer(rf"^{word} rank=\d+ .*pid=(\d+)", out, re.M)]


@pytest.mark.parametrize("layout", [["-n", "4"], [*V4, "-n", "8", "--placement", "cyclic"]], ids=["4-ranks", "8-ranks-4-nodes"])
def test_mpi_abort_ends_the_run_with_its_code(layout):
    n = int(layout[layout.index("-n") + 1])
    victim = n - 2  # on node 2 in the cyclic 4-node layout
    job = run_job(["run", *layout, *SIMPLE, "--", prog("mpi_abort"), str(victim), "7"], timeout=60)
    assert job.returncode == 7, job
    assert not job.left, f"left running: {job.left}\n{job}"
    pids = pids_of(job.out, "abort")
    assert len(pids) == n, job  # every rank was up (past a barrier) before the abort
    assert not [p for p in pids if pid_alive(p)], job
    # the runtime's message names the aborting rank (MPICH's own "Abort(7) on node ..." line does not count)
    ours = [line for line in job.err.splitlines() if not line.startswith("Abort(")]
    assert any(re.search(rf"\brank {victim}\b", line) for line in ours), job
    assert "FAIL" not in job.err, job  # no barrier completed after the abort
    assert job.elapsed < 30, job


def test_a_rank_leaving_without_finalize_fails_the_run_instead_of_hanging():
    job = run_job(["run", "-n", "4", *SIMPLE, "--", prog("mpi_no_finalize"), "1"], timeout=90)
    assert job.returncode != 0, job
    assert not job.left, f"left running: {job.left}\n{job}"
    assert re.search(r"\brank 1\b", job.err), job
    assert "FAIL" not in job.err, job
    assert not [p for p in pids_of(job.out, "nofinalize") if pid_alive(p)], job
    assert job.elapsed < 60, job


# A rank that speaks broken PMI-1 on PMI_FD (rank 0) next to a well-behaved one
# (rank 1) that waits in the PMI barrier. Whatever rank 0 does, the server must
# fail the job promptly: rank 0 gives up by itself only after 30 s.
BAD_PMI = r"""
import os, select, sys, time
fd = int(os.environ["PMI_FD"])
rank = int(os.environ["PMI_RANK"])
mode = sys.argv[1]

def say(msg):
    print(f"badpmi rank={rank} {msg}", file=sys.stderr, flush=True)

def send(b):
    os.write(fd, b)

def line(timeout):
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        try:
            c = os.read(fd, 1)
        except ConnectionResetError:
            c = b""
        if not c:
            return b""  # EOF
        buf += c
    return buf

def init():
    send(b"cmd=init pmi_version=1 pmi_subversion=1\n")
    r = line(20)
    assert r and b"rc=0" in r, r

if rank != 0:
    init()
    send(b"cmd=get_my_kvsname\n")
    line(20)
    send(b"cmd=barrier_in\n")
    r = line(3600)
    say(f"FAIL: the barrier completed without rank 0: {r!r}")
    sys.exit(4)

if mode == "garbage":
    send(b"\x00\xff\xfe this is not PMI at all \x01\n")
elif mode == "overlong":
    init()
    send(b"cmd=put kvsname=x key=k value=" + b"v" * 2000)  # over the 1024-byte limit, no newline
elif mode == "put-missing-fields":
    init()
    send(b"cmd=put\n")
elif mode == "close-early":
    init()
    os.close(fd)
    say("closed its PMI socket")
    time.sleep(30)
    sys.exit(0)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    r = line(deadline - time.monotonic())
    if r is None:
        break
    if r == b"":
        say("the server closed the PMI connection")
        sys.exit(12)
    if b"rc=0" in r:
        say(f"ACCEPTED the malformed request: {r!r}")
    else:
        say(f"the server refused: {r!r}")
        sys.exit(11)  # as an MPI library would abort on a PMI error
say("no reaction from the server in 30 s")
sys.exit(0)
"""


@pytest.mark.parametrize("mode", ["garbage", "overlong", "put-missing-fields", "close-early"])
def test_broken_pmi_client_fails_its_job_cleanly(mode):
    job = run_job(["run", "-n", "2", *SIMPLE, "--", PY, "-c", BAD_PMI, mode], timeout=60)
    assert job.returncode != 0, job
    assert not job.left, f"left running: {job.left}\n{job}"
    assert "ACCEPTED" not in job.err and "FAIL" not in job.err, job
    assert "no reaction" not in job.err, job
    assert re.search(r"\brank 0\b", job.err), job  # the message names the bad rank
    assert job.elapsed < 25, job  # the server acted, not rank 0's own 30 s give-up
    # the runtime itself is fine: the next job runs
    ok(run_job(["run", "-n", "2", *SIMPLE, "--", prog("mpi_hello")], timeout=60))
