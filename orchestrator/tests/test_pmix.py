"""Real Open MPI under `dragon-orchestrate run --pmi pmix`: Debian's Open MPI
4.1.4 (its PMIx client is OpenPMIx 4.2.2), mpi4py 3.1.4 and NPopenmpi, started
directly by the agents' PMIx servers, on one node and over virtual clusters of
4 agents on this host. Also MPI_Abort and a rank killed by SIGKILL: each must
end the run promptly with a clear message and nothing left running, and no
PMIx temporary directory left behind.

The programs are the Open MPI builds of tests/mpi/*.c in build/bin/ompi/
(mpicc.openmpi: scripts/install-deps.sh mpi); without them these tests skip.

What Open MPI needs from the runtime, checked against `srun --mpi=pmix` on the
local Slurm cluster (docs/slurm.md) with every variable but PMIX_* removed:
- OMPI_MCA_schizo=^orte and OMPI_MCA_ess=pmi: without them each rank quietly
  becomes a singleton (size 1) although PMIX_NAMESPACE/PMIX_RANK are set.
- Nothing for root: only mpirun refuses root (--allow-run-as-root or
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1); directly
  launched ranks run as root as they are.
- Several "nodes" on one host: Open MPI names vader's segments
  /dev/shm/vader_segment.<host>.<uid>.<jobid>.<local rank> and its session
  directory /tmp/ompi.<host>.<uid>/jf.<family>/<job>/<rank>; the nodes of a
  virtual cluster have the same host, job and local ranks, so their local
  rank 0s mapped one segment and the first collective segfaulted
  (strace -f -e trace=openat,mkdir,unlink on the ranks). The agents give
  each node's ranks a backing directory of its own
  (/dev/shm/dragon-<run>-n<node>-ompi), a session directory inside the node's
  PMIx directory, and TCP over loopback (orchestrator/src/agent/ompi_env.hpp);
  the user's own OMPI_MCA_* settings win. Directly launched ranks never remove
  their session directory: it goes with the PMIx directory.
- Every job runs without the caller's OMPI_MCA_* variables (run_job).
"""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import BIN, PY, pid_alive
from test_mpi import V4, check_program, left_by_runs_since, ok, per_rank, pids_of, run_entries, run_job

pytestmark = pytest.mark.mpi

OMPI_BIN = BIN / "ompi"
PMIX = ["--pmi", "pmix"]
NETPIPE = shutil.which("NPopenmpi")
MPI4PY_PROBE = str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "mpi" / "mpi4py_probe.py")


def prog(name):
    p = OMPI_BIN / name
    if not p.exists():
        pytest.skip(f"{p} not built (needs mpicc.openmpi: scripts/install-deps.sh mpi)")
    return str(p)


def have_mpi4py():
    return subprocess.run([PY, "-c", "import mpi4py"], capture_output=True).returncode == 0


# --- PMIx temporary directories -------------------------------------------------

def pmix_tmp_entries():
    """Entries in /tmp that a PMIx server or an Open MPI rank would make there
    (pmix-PID rendezvous files, pmix_dstor_* stores, ompi.HOST.UID session
    directories; mpirun.openmpi leaves an empty ompi.HOST.UID behind, so only
    new entries count). The agents' servers must keep theirs under their run
    directory and remove them."""
    try:
        return {e for e in os.listdir("/tmp") if re.match(r"(pmix[-_.]|ompi\.)", e)}
    except FileNotFoundError:
        return set()


@pytest.fixture
def no_pmix_tmp():
    """Fails the test if it left new PMIx/Open MPI entries in /tmp. (Another
    run on this machine making one at the same moment would be a false alarm:
    the name is in the message.)"""
    before = pmix_tmp_entries()
    yield
    left = pmix_tmp_entries() - before
    assert not left, f"PMIx / Open MPI temporary entries left in /tmp: {sorted(left)}"


# --- one node ---------------------------------------------------------------

PROGRAMS = ["mpi_hello", "mpi_allreduce", "mpi_ring", "mpi_bcast"]


@pytest.mark.parametrize("n", [1, 4, 16])
@pytest.mark.parametrize("name", PROGRAMS)
def test_open_mpi_program_on_one_node(name, n, no_pmix_tmp):
    job = ok(run_job(["run", "-n", str(n), *PMIX, "--", prog(name)], timeout=180))
    ranks = check_program(name, job.out, n)
    if name == "mpi_hello":
        for r, kv in ranks.items():  # Open MPI sees one node of n ranks (PMIX_LOCAL_PEERS)
            assert (int(kv["local_rank"]), int(kv["local_size"])) == (r, n), kv
            assert kv["node"] == "0", kv


# --- virtual clusters on this host: no settings needed ----------------------------

VIRTUAL_PROGRAMS = ["mpi_hello", "mpi_allreduce", "mpi_ring"]


@pytest.mark.parametrize("nodes", [2, 4])
@pytest.mark.parametrize("name", VIRTUAL_PROGRAMS)
def test_open_mpi_on_virtual_nodes_needs_no_settings_and_leaves_nothing(name, nodes, no_pmix_tmp):
    """The plain command, no OMPI_MCA_* anywhere: 2 ranks per node (block
    placement), so each pair shares memory (vader) and pairs of different
    nodes talk TCP. Before the agents gave each node its own directories the
    nodes' local rank 0s mapped one vader segment and crashed in the first
    collective. Nothing of the run may be left in /dev/shm or /tmp."""
    before = run_entries()
    n = 2 * nodes
    job = ok(run_job(["run", "--launcher", "virtual", "--nodes", str(nodes), "-n", str(n), *PMIX, "--", prog(name)],
                     timeout=180))
    ranks = check_program(name, job.out, n)
    if name == "mpi_hello":
        for r, kv in ranks.items():
            assert int(kv["node"]) == r // 2 and (int(kv["local_rank"]), int(kv["local_size"])) == (r % 2, 2), kv
    left = left_by_runs_since(before)
    assert not left, f"left behind by the run: {left}"


VADER_PROBE = r"""
import os
from mpi4py import MPI
c = MPI.COMM_WORLD
total = c.allreduce(c.Get_rank())
d = os.environ.get("OMPI_MCA_btl_vader_backing_directory", "-")
c.Barrier()
segments = len([f for f in os.listdir(d) if f.startswith("vader_segment.")]) if os.path.isdir(d) else -1
c.Barrier()
print(f"vader rank={c.Get_rank()} size={c.Get_size()} sum={total} run={os.environ['DRAGON_RUN_ID']}",
      f"node={os.environ['DRAGON_NODE_ID']} dir={d} segments={segments}", flush=True)
"""


@pytest.mark.skipif(not have_mpi4py(), reason="mpi4py not installed for /usr/bin/python3 (scripts/install-deps.sh mpi)")
@pytest.mark.parametrize("nodes", [2, 4])
def test_vader_segments_of_each_virtual_node_in_its_own_directory(nodes, no_pmix_tmp):
    """Shared memory is really used between the ranks of a node: while they
    run, each node's backing directory holds one vader segment per local rank
    (its own node's, none of another's), and it is gone afterwards."""
    n = 2 * nodes
    job = ok(run_job(["run", "--launcher", "virtual", "--nodes", str(nodes), "-n", str(n), *PMIX, "--",
                      PY, "-c", VADER_PROBE], timeout=120))
    ranks = per_rank(job.out, "vader", n)
    for r, kv in ranks.items():
        assert int(kv["sum"]) == n * (n - 1) // 2, kv
        assert int(kv["node"]) == r // 2, kv
        assert kv["dir"] == f"/dev/shm/dragon-{kv['run']}-n{kv['node']}-ompi", kv
        assert int(kv["segments"]) == 2, kv
    dirs = {kv["dir"] for kv in ranks.values()}
    assert len(dirs) == nodes, dirs
    assert not [d for d in dirs if os.path.exists(d)], dirs


# --- a virtual cluster of 4 nodes on this host --------------------------------

@pytest.mark.parametrize("placement", ["block", "cyclic"])
@pytest.mark.parametrize("name", PROGRAMS)
def test_open_mpi_program_over_4_virtual_nodes(name, placement, no_pmix_tmp):
    n = 8
    job = ok(run_job(["run", *V4, "-n", str(n), "--placement", placement, *PMIX, "--", prog(name)],
                     timeout=180))
    ranks = check_program(name, job.out, n)
    if name == "mpi_hello":
        for r, kv in ranks.items():
            node, local = (r // 2, r % 2) if placement == "block" else (r % 4, r // 4)
            assert int(kv["node"]) == node, kv
            # Open MPI's own view of the layout (the servers' PMIX_LOCAL_PEERS): 2 ranks on each node
            assert (int(kv["local_rank"]), int(kv["local_size"])) == (local, 2), kv


# --- mpi4py ---------------------------------------------------------------------

@pytest.mark.skipif(not have_mpi4py(), reason="mpi4py not installed for /usr/bin/python3 (scripts/install-deps.sh mpi)")
@pytest.mark.parametrize("placement", ["block", "cyclic"])
def test_mpi4py_allreduce_and_ring_over_2_virtual_nodes(placement, no_pmix_tmp):
    job = ok(run_job(["run", "--launcher", "virtual", "--nodes", "2", "-n", "4", "--placement", placement, *PMIX,
                      "--", PY, MPI4PY_PROBE, "10"], timeout=120))
    ranks = per_rank(job.out, "mpi4py", 4)
    for r, kv in ranks.items():
        assert int(kv["sum"]) == 6 and kv["vendor"] == "Open_MPI", kv
        assert (int(kv["left"]), int(kv["right"])) == ((r - 1) % 4, (r + 1) % 4), kv
        assert int(kv["rounds"]) == 10, kv


# --- the environment of a rank ------------------------------------------------------

ENV_DUMP = r"""
import os
e = os.environ
keys = ["PMIX_NAMESPACE", "PMIX_RANK", "PMIX_SERVER_URI41", "PMIX_SERVER_TMPDIR", "OMPI_MCA_ess", "OMPI_MCA_schizo",
        "DRAGON_RANK", "DRAGON_NODE_ID", "DRAGON_RUN_ID", "OMPI_MCA_btl", "OMPI_MCA_btl_vader_backing_directory",
        "OMPI_MCA_orte_tmpdir_base", "OMPI_MCA_btl_tcp_if_include", "OMPI_MCA_btl_tcp_if_exclude"]
pmi1 = [k for k in ("PMI_FD", "PMI_PORT", "PMI_ID", "PMI_SIZE", "PMI_RANK", "PMI_JOBID", "PMI_process_mapping") if k in e]
print("env", " ".join(f"{k}={e.get(k, '-').replace(' ', '_')}" for k in keys), "pmi1=" + (",".join(pmi1) or "-"),
      flush=True)
"""


def env_lines(out, n):
    lines = [dict(m.groups() for m in re.finditer(r"(\w+)=(\S+)", l)) for l in out.splitlines() if l.startswith("env ")]
    assert len(lines) == n, out
    return lines


@pytest.mark.parametrize("layout", [["-n", "4"], [*V4, "-n", "8", "--placement", "cyclic"]],
                         ids=["one-node", "4-virtual-nodes"])
def test_pmix_environment_of_each_rank(layout, no_pmix_tmp):
    n = int(layout[layout.index("-n") + 1])
    job = ok(run_job(["run", *layout, *PMIX, "--", PY, "-c", ENV_DUMP], timeout=60))
    namespaces, tmpdirs, uris, backing = set(), {}, {}, set()
    for kv in env_lines(job.out, n):
        assert kv["PMIX_RANK"] == kv["DRAGON_RANK"], kv
        assert kv["PMIX_NAMESPACE"] != "-" and kv["PMIX_SERVER_URI41"] != "-", kv
        # never both families: MPICH refuses PMI-1 variables next to PMIx ones
        assert kv["pmi1"] == "-", kv
        assert kv["OMPI_MCA_ess"] == "pmi" and kv["OMPI_MCA_schizo"] == "^orte", kv
        assert kv["OMPI_MCA_btl"] == "-", kv  # run_job passes no OMPI_MCA_* on
        # Open MPI's files of each node in directories of the node's own, gone with the run
        run, node = kv["DRAGON_RUN_ID"], kv["DRAGON_NODE_ID"]
        assert kv["OMPI_MCA_btl_vader_backing_directory"] == f"/dev/shm/dragon-{run}-n{node}-ompi", kv
        assert kv["OMPI_MCA_orte_tmpdir_base"] == f"/tmp/dragon-{run}-n{node}-pmix/ompi", kv
        backing.add(kv["OMPI_MCA_btl_vader_backing_directory"])
        # several nodes of one host: TCP between them over loopback (there may be no other interface)
        assert kv["OMPI_MCA_btl_tcp_if_include"] == ("lo" if "--nodes" in layout else "-"), kv
        namespaces.add(kv["PMIX_NAMESPACE"])
        tmpdirs.setdefault(kv["DRAGON_NODE_ID"], set()).add(kv["PMIX_SERVER_TMPDIR"])
        uris.setdefault(kv["DRAGON_NODE_ID"], set()).add(kv["PMIX_SERVER_URI41"])
    assert len(namespaces) == 1, job
    nodes = 4 if "--nodes" in layout else 1
    assert len(tmpdirs) == nodes and all(len(t) == 1 for t in tmpdirs.values()), tmpdirs
    # one server per agent, each with its own rendezvous directory (several agents share this host)
    assert len({next(iter(t)) for t in tmpdirs.values()}) == nodes, tmpdirs
    assert len({next(iter(u)) for u in uris.values()}) == nodes, uris
    for t in tmpdirs.values():
        d = next(iter(t))
        if d != "-":
            assert os.path.normpath(d) != "/tmp", d  # under the agent's run directory, not loose in /tmp
            assert not os.path.exists(d), f"the PMIx server's directory {d} outlived the run"
    assert len(backing) == nodes, backing
    assert not [d for d in backing if os.path.exists(d)], backing


def test_a_users_own_open_mpi_settings_win(tmp_path, no_pmix_tmp):
    """What the caller's environment says about Open MPI's directories and
    TCP interfaces reaches the ranks as it is (if_exclude excludes the
    runtime's if_include: Open MPI refuses the two together)."""
    mine = {"OMPI_MCA_btl": "self,vader,tcp", "OMPI_MCA_btl_vader_backing_directory": str(tmp_path),
            "OMPI_MCA_orte_tmpdir_base": str(tmp_path), "OMPI_MCA_btl_tcp_if_exclude": "127.0.0.1/8,sppp"}
    job = ok(run_job(["run", *V4, "-n", "8", *PMIX, "--", PY, "-c", ENV_DUMP], timeout=60, env=mine))
    for kv in env_lines(job.out, 8):
        for k, v in mine.items():
            assert kv[k] == v, (k, kv)
        assert kv["OMPI_MCA_btl_tcp_if_include"] == "-", kv


def test_simple_pmi_ranks_get_no_pmix_variables():
    job = ok(run_job(["run", "-n", "2", "--pmi", "simple", "--", PY, "-c", ENV_DUMP], timeout=60))
    for kv in env_lines(job.out, 2):
        assert kv["PMIX_NAMESPACE"] == "-" and kv["PMIX_SERVER_URI41"] == "-", kv
        assert kv["OMPI_MCA_ess"] == "-", kv


# --- NetPIPE ------------------------------------------------------------------

@pytest.mark.skipif(NETPIPE is None, reason="NPopenmpi not installed (scripts/install-deps.sh mpi)")
@pytest.mark.parametrize("nodes", [[], ["--launcher", "virtual", "--nodes", "2"]], ids=["one-node", "two-virtual-nodes"])
def test_netpipe_openmpi_integrity_and_timing(nodes, tmp_path, no_pmix_tmp):
    job = ok(run_job(["run", *nodes, "-n", "2", "--placement", "cyclic", *PMIX, "--",
                      NETPIPE, "-i", "-u", "65536", "-n", "5", "-p", "0", "-o", str(tmp_path / "i.out")],
                     timeout=120))
    progress = job.out + job.err
    passed = re.findall(r"^\s*\d+:\s+(\d+) bytes .*Integrity check passed", progress, re.M)
    assert passed and "fail" not in progress.lower(), job
    assert max(int(b) for b in passed) >= 32768, job
    out = tmp_path / "np.out"
    job = ok(run_job(["run", *nodes, "-n", "2", "--placement", "cyclic", *PMIX, "--",
                      NETPIPE, "-u", "65536", "-n", "10", "-p", "0", "-o", str(out)], timeout=120))
    rows = [line.split() for line in out.read_text().splitlines() if line.strip()]
    sizes = [int(r[0]) for r in rows]
    assert sizes and sizes[0] == 1 and max(sizes) == 65536, rows
    assert all(float(r[1]) > 0 for r in rows), rows  # Mbps


# --- failures: MPI_Abort and a rank killed ---------------------------------------

def ours(err):
    """stderr without Open MPI's own help block ("MPI_ABORT was invoked on rank
    R ...", which the rank prints itself): what is left is the runtime's."""
    return [l for l in err.splitlines() if "MPI_ABORT was invoked" not in l and not l.startswith("[")]


LAYOUTS = [["-n", "4"], [*V4, "-n", "8", "--placement", "cyclic"]]


@pytest.mark.parametrize("layout", LAYOUTS, ids=["4-ranks", "8-ranks-4-nodes"])
def test_mpi_abort_ends_the_run_with_its_code(layout, no_pmix_tmp):
    n = int(layout[layout.index("-n") + 1])
    victim = n - 2  # on node 2 in the cyclic 4-node layout
    job = run_job(["run", *layout, *PMIX, "--", prog("mpi_abort"), str(victim), "7"], timeout=60)
    assert job.returncode == 7, job
    assert not job.left, f"left running: {job.left}\n{job}"
    pids = pids_of(job.out, "abort")
    assert len(pids) == n, job  # every rank was up (past a barrier) before the abort
    assert not [p for p in pids if pid_alive(p)], job
    assert any(re.search(rf"\brank {victim}\b", line) for line in ours(job.err)), job
    assert "FAIL" not in job.err, job  # no barrier completed after the abort
    assert job.elapsed < 30, job


@pytest.mark.parametrize("layout", LAYOUTS, ids=["4-ranks", "8-ranks-4-nodes"])
def test_a_rank_killed_by_sigkill_ends_the_run_instead_of_hanging(layout, no_pmix_tmp):
    """The rank says nothing to its PMIx server: it is just gone while the
    others wait for it in MPI_Barrier. The run fails with 128+9, names it."""
    n = int(layout[layout.index("-n") + 1])
    victim = 1
    job = run_job(["run", *layout, *PMIX, "--", prog("mpi_sigkill"), str(victim)], timeout=90)
    assert job.returncode == 128 + 9, job
    assert not job.left, f"left running: {job.left}\n{job}"
    pids = pids_of(job.out, "sigkill")
    assert len(pids) == n, job
    assert not [p for p in pids if pid_alive(p)], job
    assert any(re.search(rf"\brank {victim}\b", line) for line in ours(job.err)), job
    assert "FAIL" not in job.err, job
    assert job.elapsed < 30, job


# --- several PMIx jobs in one runtime (the C++ API) ---------------------------------

@pytest.mark.parametrize("nodes", [[], V4], ids=["one-node", "4-virtual-nodes"])
def test_pmix_groups_at_once_and_one_after_another(nodes, no_pmix_tmp):
    """group_probe pmix_many: 2 groups of 4 ranks at once, then 3 one after
    another, all in one runtime (one PMIx server per agent, a namespace per group)."""
    probe = BIN / "group_probe"
    if not probe.exists():
        pytest.skip(f"{probe} not built")
    job = ok(run_job(["run", *nodes, "--", str(probe), "pmix_many", prog("mpi_allreduce")], timeout=180))
    outcomes = re.findall(r"^pmix_many phase=(\w+) group=(\d) outcome=(\w+)", job.out, re.M)
    assert outcomes == [("together", "0", "succeeded"), ("together", "1", "succeeded"),
                        ("sequence", "0", "succeeded"), ("sequence", "1", "succeeded"),
                        ("sequence", "2", "succeeded")], job
    lines = [l for l in job.out.splitlines() if l.startswith("allreduce ")]
    assert len(lines) == 5 * 4, job  # 5 groups of 4, each a world of its own
    assert all(" size=4 sum=6 vector=ok" in l for l in lines), job
