"""The runtime this process talks to.

A process started by Dragon (``dragon-orchestrate run -- python3 script.py``,
or a member of a group) finds its node's agent in ``DRAGON_AGENT_SOCKET`` and
joins that runtime. Any other process starts an *embedded* runtime on first
use: ``dragon-orchestrate serve`` as a child in its own session (so Ctrl-C
reaches only this interpreter), torn down when the interpreter exits. If the
interpreter dies without exiting (SIGKILL), the runtime sees its stdin close
and tears itself down all the same.
"""

from __future__ import annotations

import atexit
import os
import threading

# subprocess, json, select, shlex and shutil load only when an embedded
# runtime starts: members that merely use channels do not pay for them.

from dragon import _core
from dragon._core import DragonError, DragonNotFoundError

_lock = threading.RLock()
_runtime: _core.Runtime | None = None
_owner_pid = 0  # the process _runtime belongs to (a forked child makes its own)
_embedded: "_Embedded | None" = None

# Seconds the embedded runtime gets to start, and to stop once asked.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def orchestrate_path() -> str:
    """Where dragon-orchestrate is: $DRAGON_ORCHESTRATE, the build tree this
    package was assembled in, the prefix it was installed under, or PATH."""
    env = os.environ.get("DRAGON_ORCHESTRATE")
    if env:
        return env
    candidates = []
    try:
        from dragon import _build_paths  # generated in the build tree only

        candidates.append(os.path.join(_build_paths.BIN_DIR, "dragon-orchestrate"))
    except ImportError:
        pass
    # Installed: <prefix>/lib/python3/dist-packages/dragon -> <prefix>/bin
    here = os.path.dirname(os.path.abspath(__file__))
    candidates.append(os.path.normpath(os.path.join(here, "..", "..", "..", "..", "bin", "dragon-orchestrate")))
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    import shutil

    found = shutil.which("dragon-orchestrate")
    if found:
        return found
    raise DragonNotFoundError(
        "dragon-orchestrate not found (looked in " + ", ".join(candidates) + " and PATH); set DRAGON_ORCHESTRATE"
    )


class _Embedded:
    """A `dragon-orchestrate serve` child: the runtime of this interpreter."""

    def __init__(self, args: list[str]):
        import json
        import subprocess

        exe = orchestrate_path()
        r, w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [exe, "serve", "--ready-fd", str(w), *args],
                stdin=subprocess.PIPE,
                pass_fds=(w,),
                start_new_session=True,  # Ctrl-C is ours; we tear it down
            )
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        try:
            line = self._read_ready(r)
        finally:
            os.close(r)
        try:
            info = json.loads(line)
            self.socket = info["agent_socket"]
            self.run_id = info["run_id"]
        except (ValueError, KeyError) as e:
            self.stop()
            raise DragonError(f"dragon-orchestrate serve said {line!r}, not where its agent is ({e})") from None

    def _read_ready(self, fd: int) -> str:
        import select
        import time

        buf = b""
        deadline = time.monotonic() + START_TIMEOUT
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise DragonError(f"the embedded runtime did not start within {START_TIMEOUT:.0f} s")
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                code = self.proc.wait()
                raise DragonError(
                    f"the embedded runtime did not start: dragon-orchestrate serve exited with code {code} "
                    "(its error is above)"
                )
            buf += chunk
        return buf.split(b"\n", 1)[0].decode()

    def forget_in_child(self) -> None:
        """In a forked child: let go of the runtime's stdin (only the
        interpreter that started the runtime keeps it open)."""
        try:
            if self.proc is not None and self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        self.proc = None  # type: ignore[assignment]

    def stop(self) -> int | None:
        """Closes the runtime's stdin: it stops every process and exits."""
        import signal
        import subprocess

        p = self.proc
        if p is None:
            return None
        try:
            if p.stdin is not None:
                p.stdin.close()
        except OSError:
            pass
        try:
            return p.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGTERM)
            try:
                return p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                return p.wait()


def start_runtime(launcher: str | None = None, nodes: int | None = None, args: list[str] | None = None) -> _core.Runtime:
    """Starts the embedded runtime now, with the given launcher options
    (``start_runtime(launcher="virtual", nodes=2)``: two agents on this
    machine). Outside Dragon the first use of the package does this with no
    options, or with those in $DRAGON_EMBEDDED_ARGS. Under Dragon it is an
    error: the process already belongs to a runtime."""
    global _runtime, _owner_pid, _embedded
    with _lock:
        if os.environ.get("DRAGON_AGENT_SOCKET"):
            raise DragonError("this process runs under Dragon already (DRAGON_AGENT_SOCKET is set)")
        if _runtime is not None and _owner_pid == os.getpid():
            raise DragonError("the embedded runtime is already running; stop_runtime() first")
        argv = list(args or [])
        if launcher:
            argv += ["--launcher", launcher]
        if nodes:
            argv += ["--nodes", str(int(nodes))]
        _embedded = _Embedded(argv)
        try:
            _runtime = _core.Runtime(_embedded.socket, 0)
        except BaseException:
            _embedded.stop()
            _embedded = None
            raise
        _owner_pid = os.getpid()
        return _runtime


def current_runtime() -> _core.Runtime:
    """The runtime of this process: joined or (outside Dragon) started."""
    global _runtime, _owner_pid
    with _lock:
        if _runtime is not None and _owner_pid == os.getpid():
            return _runtime
        sock = os.environ.get("DRAGON_AGENT_SOCKET")
        if sock:
            _runtime = _core.Runtime(sock, int(os.environ.get("DRAGON_PUID") or 0))
            _owner_pid = os.getpid()
            return _runtime
        import shlex

        return start_runtime(args=shlex.split(os.environ.get("DRAGON_EMBEDDED_ARGS", "")))


def in_runtime() -> bool:
    """Whether this process was started by Dragon."""
    return bool(os.environ.get("DRAGON_AGENT_SOCKET"))


def stop_runtime() -> None:
    """Stops the embedded runtime (every process it started) and waits for
    it; the next use starts a new one. Runs at interpreter exit by itself."""
    global _runtime, _embedded
    with _lock:
        emb, _embedded = _embedded, None
        _runtime = None
        if emb is not None:
            emb.stop()


_exit_hooks: list = []


def at_exit(fn) -> None:
    """Runs ``fn()`` at interpreter exit while the runtime is still up (before
    an embedded runtime stops), hooks in the reverse order of registration:
    multiprocessing joins its children and queues flush here."""
    _exit_hooks.append(fn)


def _at_exit() -> None:
    while _exit_hooks:
        fn = _exit_hooks.pop()
        try:
            fn()
        except Exception as e:  # one broken hook must not keep the runtime up
            import sys

            sys.stderr.write(f"dragon: at exit: {fn!r} failed: {e}\n")
    stop_runtime()


def _after_fork_in_child() -> None:
    global _embedded, _runtime, _lock
    _lock = threading.RLock()  # another thread may have held it at the fork
    if _embedded is not None:
        _embedded.forget_in_child()
    _embedded = None
    _runtime = None


atexit.register(_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
