"""Fixtures for the Python package's tests: run a script with Debian's
interpreter and the package from the build tree, embedded or under
dragon-orchestrate, and check that nothing is left behind."""
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

BUILD = pathlib.Path(os.environ.get("DRAGON_BUILD_DIR", pathlib.Path(__file__).resolve().parents[2] / "build"))
ORCH = str(BUILD / "bin" / "dragon-orchestrate")
PY = "/usr/bin/python3"
PYPATH = str(BUILD / "python")


def env_for_scripts(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = PYPATH
    env.pop("DRAGON_AGENT_SOCKET", None)
    env.pop("DRAGON_PUID", None)
    env.pop("DRAGON_EMBEDDED_ARGS", None)
    env.update(extra or {})
    return env


def shm_of(run_id):
    return [e for e in os.listdir("/dev/shm") if run_id and run_id in e]


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_gone(pids, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(pid_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


class Script:
    """A Python script file written for one test."""

    def __init__(self, tmp_path, parts, name="script.py"):
        self.path = tmp_path / name
        self.path.write_text("\n".join(textwrap.dedent(p) for p in parts))
        self.cwd = tmp_path

    def run(self, *args, under=None, timeout=120, env=None, check=True):
        """Runs it embedded (under=None) or under `dragon-orchestrate run
        <under...> --`; returns the CompletedProcess."""
        cmd = [PY, str(self.path), *args]
        if under is not None:
            cmd = [ORCH, "run", *under, "--", *cmd]
        p = subprocess.run(cmd, cwd=self.cwd, env=env_for_scripts(env), capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{cmd} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        return p

    def start(self, *args, env=None):
        return subprocess.Popen([PY, str(self.path), *args], cwd=self.cwd, env=env_for_scripts(env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def script(tmp_path):
    return lambda *parts, name="script.py": Script(tmp_path, parts, name)


def no_residue_of(run_id):
    """No shared memory and no PMIx directory of this run remain."""
    left = shm_of(run_id) + [e for e in os.listdir("/tmp") if run_id in e]
    return left
