"""Fixtures for integration tests that run the real dragon-orchestrate and dragon-agent."""
import os
import pathlib
import signal
import subprocess
import time

import pytest

BUILD = pathlib.Path(os.environ.get("DRAGON_BUILD_DIR", pathlib.Path(__file__).resolve().parents[2] / "build"))
BIN = BUILD / "bin"
ORCH = str(BIN / "dragon-orchestrate")
PY = "/usr/bin/python3"
# `gateway_probe basic` prints one "ok"/"FAILED" line per check; fewer means it stopped early.
GATEWAY_PROBE_BASIC_CHECKS = 16


def shm_entries():
    return {e for e in os.listdir("/dev/shm") if e.startswith("dragon-")}


def dead_entries(entries):
    """Entries whose run is dead: no lock file, or a lock nobody holds.
    Live runs (of other processes, or still tearing down) are not residue."""
    import fcntl
    dead = set()
    for e in entries:
        run_node = e.rsplit("-", 1)[0]
        lock = f"/dev/shm/{run_node}-lock"
        try:
            fd = os.open(lock, os.O_RDONLY)
        except FileNotFoundError:
            dead.add(e)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            dead.add(e)  # we could take it: its agent is gone
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
    return dead


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # a process being reaped may give ESRCH
        return False


def wait_gone(pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return False


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


@pytest.fixture(autouse=True)
def no_residue():
    """No test may leave shared memory of a dead run behind."""
    before = shm_entries()
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and dead_entries(shm_entries() - before):
        time.sleep(0.05)
    left = dead_entries(shm_entries() - before)
    assert not left, f"shared memory of a dead run left behind: {sorted(left)}"


def run(args, input=None, timeout=60, env=None, **kw):
    """Runs dragon-orchestrate with args; returns CompletedProcess (bytes)."""
    full_env = dict(os.environ)
    full_env.pop("DRAGON_LOG_LEVEL", None)
    if env:
        full_env.update(env)
    return subprocess.run([ORCH, *args], input=input, capture_output=True, timeout=timeout, env=full_env, **kw)


def start(args, env=None, **kw):
    """Starts dragon-orchestrate in the background (its own session, like a terminal job)."""
    full_env = dict(os.environ)
    full_env.pop("DRAGON_LOG_LEVEL", None)
    if env:
        full_env.update(env)
    return subprocess.Popen([ORCH, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                            start_new_session=True, **kw)


def read_line_with_timeout(stream, timeout=20):
    """Reads one line from a pipe; fails the test instead of hanging."""
    import select
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"no line within {timeout}s (got {buf!r})"
        r, _, _ = select.select([stream], [], [], left)
        if r:
            ch = os.read(stream.fileno(), 1)
            assert ch, f"stream closed (got {buf!r})"
            buf += ch
    return buf.decode()


def pytest_configure(config):
    config.addinivalue_line("markers", "system: several nodes (a virtual cluster) or fault injection")
    config.addinivalue_line("markers", "slurm: inside a real Slurm cluster on this machine (scripts/slurm-cluster.sh)")
    config.addinivalue_line("markers", "mpi: real MPI programs (MPICH, NetPIPE, Slurm's PMI-2 client) under --pmi")
