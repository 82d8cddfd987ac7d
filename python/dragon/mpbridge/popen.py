"""How a ``multiprocessing.Process`` of the ``dragon`` start method runs: as
a one-member group of the runtime (a real runtime process: puid, placement,
binding, output forwarding, exit report, teardown), not a fork of the
parent.

The parent pickles the process object as ``spawn`` does (preparation data,
then the object, under ``set_spawning_popen``), and the member runs
``dragon.mpbridge.child.main`` on it: the same ``_bootstrap`` as a spawn child,
so exit codes, tracebacks, ``current_process()`` and ``parent_process()``
are the standard library's.

``sentinel`` is a file descriptor that becomes readable when the child ends:
a pidfd when the child runs on this host (any node of a virtual cluster),
else a pipe a watcher thread closes once the runtime reports the end.
``poll()`` costs a ``select`` on it, not a round trip.
"""

from __future__ import annotations

import atexit
import io
import itertools
import os
import select
import signal
import threading

from dragon import _core
from dragon._runtime import current_runtime
from dragon.infrastructure import host
from dragon.native.machine import table as machine

# Placement: processes are dealt over the runtime's nodes one at a time
# (DragonHPC's round-robin), starting with this process's own node.
_next = itertools.count()
_env_skip = ("DRAGON_PUID", "DRAGON_RANK", "DRAGON_NRANKS", "DRAGON_LOCAL_RANK", "DRAGON_LOCAL_SIZE",
             "DRAGON_GROUP_ID", "DRAGON_NODE_ID", "DRAGON_PY_TARGET_CHUNKS", "DRAGON_PY_PATH", "DRAGON_PY_ERRORS",
             "DRAGON_AGENT_SOCKET", "DRAGON_EMBEDDED_ARGS")


def _next_node(rt) -> int | None:
    nodes = machine(rt)
    if len(nodes) <= 1:
        return None
    return (rt.node_id + next(_next)) % len(nodes)


def _pidfd_of(pid: int, same_host: bool) -> int | None:
    """A pidfd for the member if it runs on this host (the runtime placed it
    on a node of this host, and the pid was its answer a moment ago)."""
    if pid <= 0 or not same_host or not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


# Watcher threads (children on other hosts) end before the interpreter's
# finalization: a daemon thread that comes back from a runtime call (the
# GIL released) while the interpreter is being torn down is ended by
# pthread_exit, whose unwinding through the C++ binding aborts the process.
_stop_watchers = threading.Event()
_watchers: "set[threading.Thread]" = set()


def _end_watchers() -> None:
    _stop_watchers.set()
    for t in list(_watchers):
        t.join(1.0)


atexit.register(_end_watchers)


class Popen:
    """multiprocessing's Popen protocol (pid, sentinel, poll, wait,
    terminate, kill, close, returncode) for a runtime member."""

    method = "dragon"

    def __init__(self, process_obj):
        from multiprocessing import util

        util._flush_std_streams()
        self.returncode = None
        self.finalizer = None
        self._group = None
        self._watch_w = None
        self._launch(process_obj)

    def duplicate_for_child(self, fd):
        """A descriptor the child receives: through multiprocessing's
        resource sharer (a Unix socket of this process) when the child runs
        on this host; refused for another host."""
        if not self._same_host:
            raise ValueError("the dragon start method cannot pass a file descriptor to a child on another host "
                             f"(node {self._node}): pass a Dragon Connection or Queue, or keep it on this host "
                             "with Policy(placement=Policy.Placement.LOCAL)")
        from multiprocessing import resource_sharer

        return resource_sharer.DupFd(fd)

    @staticmethod
    def DupFd(shared):
        return shared  # a resource_sharer.DupFd: the child's detach() fetches the descriptor

    def _launch(self, process_obj) -> None:
        from multiprocessing import context, reduction, spawn

        from dragon.native.process import ProcessTemplate

        rt = current_runtime()
        _hook_exit()
        constraints = _placement(rt, getattr(process_obj, "_dragon_policy", None))
        self._node = constraints.get("node", constraints.get("host", rt.node_id))
        self._same_host = _on_this_host(rt, constraints)
        prep = spawn.get_preparation_data(process_obj._name)
        fp = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump(prep, fp)
            reduction.dump(process_obj, fp)
        finally:
            context.set_spawning_popen(None)
        # The parent's environment, as spawn's children have it, but not its
        # runtime identity nor Slurm's per-node variables: the child's node
        # (its agent's environment, under this) supplies those.
        env = {k: v for k, v in os.environ.items() if k not in _env_skip and not k.startswith("SLURM")}
        env["DRAGON_MP_PARENT"] = f"{os.getpid()}:{host.boot_id()}"
        # The main script, which the child would import again as __mp_main__:
        # imported once by its zygote instead (docs/runtime.md, "Fast start").
        main_path = prep.get("init_main_from_path")
        if main_path and os.path.isabs(main_path):
            env["DRAGON_ZYGOTE_MAIN"] = main_path
        if self._same_host:
            # The child shares this process's resource tracker, as spawn's
            # children do: it opens the tracker's pipe through /proc.
            from multiprocessing import resource_tracker

            env["DRAGON_MP_TRACKER"] = f"{os.getpid()}:{resource_tracker.getfd()}"
        from dragon.mpbridge import child

        tmpl = ProcessTemplate(child.main, args=(fp.getvalue(),), env=env)
        # A daemonic child ends with its parent, even a killed one; the
        # others outlive it (the standard library's orphans).
        group = _core.Group(rt, placement="cyclic", restart=False, max_restarts=0, pmi="none",
                            outlive_owner=not process_obj.daemon)
        group.add(tmpl.argv(), cwd=tmpl.cwd, env=tmpl.environment(None), count=1, **tmpl.redirects(),
                  fast_start=True, **constraints)
        group.start()
        self._group = group
        m = group.members[0]
        self.pid = int(m["pid"])
        self.puid = int(m["puid"])
        self.node = int(m["node"])
        fd = _pidfd_of(self.pid, self._same_host)
        if fd is None:
            r, w = os.pipe()
            os.set_inheritable(r, False)
            self._watch_w = w
            t = threading.Thread(target=self._watch, name=f"dragon-watch-{self.puid}", daemon=True)
            _watchers.add(t)
            t.start()
            fd = r
        self.sentinel = fd
        from multiprocessing import util as mp_util

        self.finalizer = mp_util.Finalize(self, _release, (group, fd), exitpriority=-10)

    def _watch(self) -> None:
        """Another host's child: wait for the runtime's word in short,
        unlocked steps (the session is shared with the parent's own calls)."""
        g = self._group
        try:
            while g is not None and not _stop_watchers.is_set() and not g.join(0):
                _stop_watchers.wait(0.02)
        except Exception:
            pass
        finally:
            _watchers.discard(threading.current_thread())
        w, self._watch_w = self._watch_w, None
        if w is not None:
            os.close(w)

    def _ended(self, timeout: float | None) -> bool:
        if timeout is not None:
            timeout = max(timeout, 0.0)  # join(-1) is join(0), as the stdlib's
        try:
            r, _, _ = select.select([self.sentinel], [], [], timeout)
        except (OSError, ValueError):
            return True
        return bool(r)

    def poll(self, flag=os.WNOHANG):
        if self.returncode is None:
            if flag == os.WNOHANG and not self._ended(0):
                return None
            self._collect()
        return self.returncode

    def _collect(self) -> None:
        g = self._group
        if g is None:
            return
        g.join(None)
        o = g.outcome
        if o is None:
            return
        if o["rank0_signal"]:
            self.returncode = -int(o["rank0_signal"])
        else:
            self.returncode = int(o["rank0_exit_code"])

    def wait(self, timeout=None):
        if self.returncode is None:
            if timeout is not None and not self._ended(timeout):
                return None
            self._collect()
        return self.returncode

    def _send_signal(self, sig) -> None:
        if self.returncode is None and self._group is not None:
            try:
                self._group.send_signal(int(sig))
            except _core.DragonError:
                if self.wait(timeout=0.1) is None:
                    raise

    def terminate(self) -> None:
        self._send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self._send_signal(signal.SIGKILL)

    def close(self) -> None:
        if self.finalizer is not None:
            self.finalizer()


def _release(group, fd) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
    try:
        if group.outcome is not None:
            group.close()
        else:
            group.release()
    except Exception:
        pass


def _placement(rt, created_under) -> dict:
    """Where the next child goes: the ``with Policy(...)`` blocks around
    the Process's creation, then those around start(), decide; else the
    next node in turn."""
    from dragon.infrastructure.policy import Policy
    from dragon.native.process_group import _constraints

    out = _constraints(Policy.merge(Policy.thread_policy(), created_under), rt)
    if "node" not in out and "host" not in out:
        node = _next_node(rt)
        if node is not None:
            out["node"] = node
    return out


def _on_this_host(rt, constraints: dict) -> bool:
    nodes = {int(n["node"]): n["hostname"] for n in machine(rt)}
    mine = nodes.get(int(rt.node_id))
    if "host" in constraints:
        return constraints["host"] == mine
    return nodes.get(int(constraints.get("node", rt.node_id))) == mine


_exit_hooked = False


def _hook_exit() -> None:
    """multiprocessing's exit work (terminate daemonic children, join the
    others, run finalizers) runs while the runtime is still up, whichever
    of the two registered with atexit first."""
    global _exit_hooked
    if not _exit_hooked:
        from multiprocessing import util

        from dragon._runtime import at_exit

        at_exit(lambda: util._exit_function())
        _exit_hooked = True
