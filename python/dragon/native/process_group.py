"""ProcessGroup: start, place, watch, signal, restart and join many processes
as one (DragonHPC's API; the C++ ProcessGroup underneath, docs/procgroup.md).

    pg = ProcessGroup(restart=False)
    pg.add_process(16, ProcessTemplate("./worker", args=("--size", "8")))
    pg.add_process(4, ProcessTemplate(my_function, args=(1, 2)))
    pg.init()
    pg.start()
    pg.join()        # DragonUserCodeError if a member failed
    pg.close()

Failure handling:

- ``restart=False`` (default): the first member that fails (a non-zero exit,
  a signal, an exception in a callable) stops the others (SIGINT, SIGTERM,
  SIGKILL); ``join()`` then raises ``DragonUserCodeError`` with every failed
  member's exit code and the exceptions of callables, with tracebacks.
- ``ignore_error_on_exit=True``: failures stop nothing and raise nothing;
  every member runs to its end and ``exit_status`` tells how each ended.
- ``restart=True``: a member that fails is replaced by a new process of
  the same rank, until ``stop()``/``close()``; members that exit 0 are done.
- ``walltime``: seconds after ``start()`` at which the group is stopped.
"""

from __future__ import annotations

import atexit
import os
import pickle
import signal
import threading
import weakref
from typing import Iterable

from dragon import _core
from dragon._runtime import current_runtime
from dragon.exceptions import DragonError, DragonProcessGroupError, DragonUserCodeError, RemoteException
from dragon.infrastructure.facts import PMIBackend
from dragon.infrastructure.policy import Policy, resolve
from dragon.native.process import PipeConnection, ProcessTemplate

# Groups of this process by the puids of their members (Process(None, ident=puid)).
_groups: "weakref.WeakSet[ProcessGroup]" = weakref.WeakSet()


def _forget_all_in_child() -> None:
    """After fork: the groups are the parent's. Drop them without a word to
    the agent (the C++ side sees the fork and says nothing either)."""
    for g in list(_groups):
        g._group = None
        g._errors = None
        g._finalizer.detach()
        g._closed = True
        g._forked = True
        g._start_thread = None


os.register_at_fork(after_in_child=_forget_all_in_child)


def _finalize(group, errors) -> None:
    """A group collected without close(): killed (if it runs) and released,
    and its errors channel freed."""
    if group is not None:
        try:
            group.release()
        except Exception:
            pass
    if errors is not None:
        try:
            errors.destroy()
        except Exception:
            pass


@atexit.register
def _release_all() -> None:
    """At interpreter exit, before the runtime goes: groups still running
    are killed, every group is released."""
    for g in list(_groups):
        g._release()


def _member_by_puid(puid: int):
    for g in list(_groups):
        for r, p in g._rank_puids().items():
            if puid in p:
                return g, r
    return None


def _exit_code(exit_code: int, sig: int) -> int:
    """subprocess's convention: minus the signal number if one ended it."""
    return -sig if sig else exit_code


class ProcessGroup:
    """A group of processes on the nodes of the runtime.

    :param restart: replace members that fail, until stop() or close()
    :param ignore_error_on_exit: failures neither stop the group nor raise
    :param pmi: a PMIBackend (or "simple", "cray", "pmix"): the members are
        ranks of one MPI job, served PMI by their agents (no mpirun)
    :param walltime: seconds after start() at which the group is stopped
    :param policy: where members go (a template's own policy wins)
    :param critical: accepted for DragonHPC compatibility; unused
    :param name: a name for messages
    """

    def __init__(self, restart: bool = False, ignore_error_on_exit: bool = False,
                 pmi: PMIBackend | str | None = None, walltime: float | None = None,
                 policy: Policy | None = None, critical: bool = False, name: str | None = None,
                 pmi_enabled: bool = False):
        self.restart = bool(restart)
        self.ignore_error_on_exit = bool(ignore_error_on_exit)
        if pmi is None and pmi_enabled:
            pmi = PMIBackend.SIMPLE
        try:
            self.pmi = PMIBackend.from_str(pmi) if pmi is not None else None
        except ValueError as e:
            raise ValueError(f"ProcessGroup: {e}") from None
        try:
            _core.check_group_options(self.restart, self.pmi.value if self.pmi else "none")
        except ValueError as e:
            raise ValueError(f"ProcessGroup: {e}") from None
        if walltime is not None and not walltime > 0:
            raise ValueError(f"ProcessGroup: walltime must be > 0 seconds, got {walltime!r}")
        self.walltime = walltime
        if policy is not None and not isinstance(policy, Policy):
            raise TypeError(f"policy must be a Policy, not {type(policy).__name__}")
        # The policy of the `with Policy(...)` blocks around the creation counts.
        self.policy = Policy.merge(Policy.thread_policy(), policy) if Policy.thread_policy() else policy
        self.critical = critical
        self.name = name or "ProcessGroup"
        self._entries: list[tuple[int, ProcessTemplate]] = []
        self._group: _core.Group | None = None
        self._errors: _core.Channel | None = None
        self._exceptions: list[RemoteException] = []
        self._pipes: dict[tuple[int, str], PipeConnection] = {}
        self._timer: threading.Timer | None = None
        self.walltime_expired = False
        self._closed = False
        self._final_info: dict | None = None
        self._finalizer = weakref.finalize(self, _finalize, None, None)
        self._forked = False  # set in a forked child: the group is the parent's
        self._start_thread: threading.Thread | None = None  # a start(wait=False) not yet settled
        self._start_done: threading.Event | None = None
        self._start_error: BaseException | None = None
        self.on_started = None
        _groups.add(self)

    # ---- building ------------------------------------------------------------------

    def add_process(self, nproc: int, template: ProcessTemplate) -> None:
        """Adds ``nproc`` members running ``template``; ranks follow in the
        order added."""
        if self._start_thread is not None or (self._group is not None and self._group.started):
            raise DragonProcessGroupError(f"{self.name}: add_process after start()")
        if not isinstance(template, ProcessTemplate):
            raise TypeError(f"add_process: template must be a ProcessTemplate, not {type(template).__name__}")
        n = int(nproc)
        if n < 1:
            raise ValueError(f"add_process: nproc must be >= 1, got {nproc!r}")
        self._entries.append((n, template))

    def init(self) -> None:
        """Connects to the runtime (starting the embedded one if needed)."""
        if self._closed:
            raise DragonProcessGroupError(f"{self.name} is closed")
        if self._group is not None:
            return
        rt = current_runtime()
        placement = "cyclic"
        if resolve(self.policy, None).distribution == Policy.Distribution.BLOCK:
            placement = "block"
        # ignore_error_on_exit: a failure is final for that member, the others go on.
        restart = self.restart or self.ignore_error_on_exit
        if self.pmi is not None and not self.restart:
            restart = False  # the ranks of an MPI job stand or fall together
        self._group = _core.Group(rt, placement=placement, restart=restart,
                                  max_restarts=(1 << 30) if self.restart else 0,
                                  pmi=self.pmi.value if self.pmi else "none")
        self._runtime = rt

    def start(self, wait: bool = True) -> None:
        """Places and starts every member (one request; returns once all
        are started). A member that cannot start fails the group: join()
        tells.

        ``wait=False`` returns once the placement is known to be possible;
        the members are started on a thread meanwhile, and run as soon as
        each is started (a Pool serves its first tasks while its later
        workers are still starting). Every other method waits for that start
        to end first, and raises a start that failed; ``starting`` tells
        whether it still runs, ``on_started`` (a callable of the error or
        None) is called on that thread when it ends."""
        if not self._entries:
            raise DragonProcessGroupError(f"{self.name}: nothing to start (add_process first)")
        self.init()
        if self._group.started or self._start_thread is not None:
            raise DragonProcessGroupError(f"{self.name} is already started")
        try:
            if any(t.is_python for _, t in self._entries):
                callables = sum(n for n, t in self._entries if t.is_python)
                cap = 256 if self.restart else max(16, min(callables, 1024))
                self._errors = _core.Channel.create(self._runtime, capacity=cap, block_size=1024)
            errors = self._errors.descriptor if self._errors is not None else None
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _finalize, self._group, self._errors)
            for n, t in self._entries:
                pol = resolve(self.policy, t.policy)
                self._group.add(t.argv(), cwd=t.cwd, env=t.environment(errors), count=n, **t.redirects(),
                                fast_start=t.fast_start, **_constraints(pol, self._runtime))
            if wait:
                self._group.start()
            else:
                self._group.plan()  # what the runtime would refuse, refused here
        except BaseException:
            self._start_failed()
            raise
        if not wait:
            self._start_done = threading.Event()
            self._start_thread = threading.Thread(target=self._start_in_background, name=f"{self.name}-start")
            self._start_thread.start()
        if self.walltime is not None:
            self._timer = threading.Timer(self.walltime, self._walltime_expired)
            self._timer.daemon = True
            self._timer.start()

    def _start_failed(self) -> None:
        """A refused start leaves nothing behind, and start() may be tried again."""
        self._finalizer()
        self._group = None
        self._errors = None

    def _start_in_background(self) -> None:
        error = None
        try:
            self._group.start()
        except BaseException as e:  # raised by the next call that needs the group
            error = e
        self._start_error = error
        self._start_done.set()
        if self.on_started is not None:
            try:
                self.on_started(error)
            except Exception:
                pass

    @property
    def starting(self) -> bool:
        """True while a start(wait=False) is still starting members."""
        return self._start_done is not None and not self._start_done.is_set()

    def _settle(self) -> None:
        """Waits for a start(wait=False) to end; raises what it raised (once:
        the group is then as if start() had not been called)."""
        if self._start_thread is None:
            return
        if self._start_thread is not threading.current_thread():
            self._start_thread.join()
        self._start_thread = None
        error, self._start_error = self._start_error, None
        if error is not None:
            if self._timer is not None:
                self._timer.cancel()
            self._start_failed()
            raise error

    def _walltime_expired(self) -> None:
        g = self._group
        if g is None or self._closed:
            return
        if g.outcome is None and not g.join(0):
            self.walltime_expired = True
            try:
                g.stop(2.0)
            except DragonError:
                pass

    # ---- running ---------------------------------------------------------------------

    def join(self, timeout: float | None = None) -> None:
        """Waits until every member has ended (with restart: until stop()).
        TimeoutError after ``timeout`` seconds; DragonUserCodeError if a
        member failed and ignore_error_on_exit is False."""
        g = self._started_group("join")
        if not g.join(timeout):
            raise TimeoutError(f"{self.name}: members still run after {timeout} s")
        self._check_errors()

    def send_signal(self, sig: signal.Signals | int, hide_stderr: bool = False) -> None:
        """Sends ``sig`` to every running member."""
        self._started_group("send_signal").send_signal(int(sig))

    def terminate(self, hide_stderr: bool = False) -> None:
        """SIGTERM to every running member."""
        self.send_signal(signal.SIGTERM)

    def kill(self, hide_stderr: bool = False) -> None:
        """SIGKILL to every member; returns once all have ended."""
        self._started_group("kill").kill()

    def stop(self, patience: float = 5.0) -> None:
        """SIGINT, then SIGTERM after ``patience`` seconds, then SIGKILL after
        as long again; returns once every member has ended."""
        self._started_group("stop").stop(float(patience))

    def stop_restart(self) -> None:
        raise NotImplementedError("stop_restart: not supported; stop() ends a restarting group")

    def close(self, patience: float = 5.0) -> None:
        """Stops the group if it still runs and releases it. Never raises
        for failed members (join() does)."""
        if self._closed:
            return
        try:
            self._settle()
        except BaseException:
            pass  # a start that failed left nothing to stop
        if self._timer is not None:
            self._timer.cancel()
        g = self._group
        if g is not None and g.started:
            if g.outcome is None and not g.join(0):
                g.stop(float(patience))
            g.join(None)
            self._drain_errors()
            self._final_info = g.info()  # what the properties answer once closed
            g.close()
        self._closed = True  # only now: an interrupted close() can be called again
        self._finalizer()    # releases the C++ group and frees the errors channel
        self._group = None
        self._errors = None

    def _release(self) -> None:
        """Drops the C++ group without waiting for patience: one still
        running is killed (its release)."""
        self._closed = True
        try:
            self._settle()
        except BaseException:
            pass
        if self._timer is not None:
            self._timer.cancel()
        self._finalizer()
        self._group = None
        self._errors = None

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- what we know ------------------------------------------------------------------

    @property
    def puids(self) -> list[int]:
        """The puids of the members that run now."""
        self._check_not_forked("puids")
        self._settle()
        if self._final_info is None and (self._group is None or not self._group.started):
            return []
        return [p["puid"] for p in self._info()["processes"] if p["state"] == "running"]

    @property
    def inactive_puids(self) -> list[tuple[int, int]]:
        """(puid, exit code) of every process of the group that has ended,
        restarted ones included; minus the signal number when one ended it."""
        self._settle()
        if self._final_info is None and (self._group is None or not self._group.started):
            return []
        out = []
        for p in self._info()["processes"]:
            for puid, _pid, exited, code, sig in p["runs"]:
                if exited:
                    out.append((puid, _exit_code(code, sig)))
        return out

    @property
    def exit_status(self) -> list[tuple[int, int]]:
        """As inactive_puids (DragonHPC's name)."""
        return self.inactive_puids

    @property
    def exceptions(self) -> list[RemoteException]:
        """Exceptions raised by Python-callable members so far."""
        self._drain_errors()
        return list(self._exceptions)

    def read_output(self, rank: int, stream: str = "out", timeout: float | None = None) -> bytes:
        """Bytes rank ``rank`` wrote to its piped stdout ("out") or stderr
        ("err") since the last read; b"" once it ended and all was read."""
        return self._started_group("read_output").read_output(rank, stream, timeout)

    def write_stdin(self, rank: int, data: bytes, eof: bool = False) -> None:
        """Writes to rank ``rank``'s piped stdin; ``eof`` closes it."""
        self._started_group("write_stdin").write_stdin(rank, data, eof)

    @property
    def members(self) -> list[dict]:
        """Rank, puid, pid, node, local rank and cpus of each member as started."""
        return self._started_group("members").members

    # ---- internals --------------------------------------------------------------------

    def _core_group(self) -> _core.Group:
        return self._started_group("this")

    def _check_not_forked(self, what: str) -> None:
        if self._forked:
            raise DragonProcessGroupError(f"{self.name}: {what}: the group belongs to the parent process "
                                          "(this is a forked child)")

    def _started_group(self, what: str) -> _core.Group:
        self._check_not_forked(what)
        self._settle()
        if self._group is None or not self._group.started:
            raise DragonProcessGroupError(f"{self.name}: {what} before start()")
        return self._group

    def _info(self) -> dict:
        self._check_not_forked("its state")
        self._settle()
        if self._final_info is not None:
            return self._final_info
        if self._group is None:
            raise DragonProcessGroupError(f"{self.name} is released")
        return self._group.info()

    def _rank_puids(self) -> dict[int, set[int]]:
        if self.starting:
            return {}  # (not known before the start's answer; not waited for here)
        if self._final_info is None and (self._group is None or not self._group.started or self._closed):
            return {}
        return {p["rank"]: {r[0] for r in p["runs"]} | {p["puid"]} for p in self._info()["processes"]}

    def _template_of(self, rank: int) -> ProcessTemplate:
        base = 0
        for n, t in self._entries:
            if rank < base + n:
                return t
            base += n
        raise IndexError(f"{self.name} has no rank {rank}")

    def _pipe(self, rank: int, stream: str) -> PipeConnection:
        key = (rank, stream)
        if key not in self._pipes:
            self._pipes[key] = PipeConnection(self, rank, stream)
        return self._pipes[key]

    def _drain_errors(self) -> None:
        ch = self._errors
        if ch is None:
            return
        while True:
            try:
                data = ch.recv(0)
            except TimeoutError:
                return
            try:
                r = pickle.loads(data)
                exc = None
                if r.get("pickled") is not None:
                    try:
                        exc = pickle.loads(r["pickled"])
                    except Exception:
                        exc = None
                self._exceptions.append(RemoteException(r["puid"], r["rank"], r["type"], r["message"],
                                                        r["traceback"], exc))
            except Exception as e:  # a report we cannot read is named, not lost
                self._exceptions.append(RemoteException(0, -1, "UnreadableReport", str(e), ""))

    def _check_errors(self) -> None:
        self._drain_errors()
        if self.ignore_error_on_exit or self.restart:
            return
        out = self._group.outcome
        if out is None or out["outcome"] != "failed":
            return
        failed: dict[int, int] = {}
        for p in self._info()["processes"]:
            for puid, _pid, exited, code, sig in p["runs"]:
                if exited and (code != 0 or sig != 0):
                    failed[puid] = _exit_code(code, sig)
        rank, puid = out["fail_rank"], out["fail_puid"]
        if out["fail_kind"] == "not_started":
            first = f"rank {rank} could not start: {out['fail_error']}"
        elif out["fail_kind"] in ("lost", "runtime", "aborted") and out["fail_error"]:
            first = f"rank {rank} (puid {puid}): {out['fail_error']}"
        elif out["fail_signal"]:
            first = f"rank {rank} (puid {puid}) was killed by signal {out['fail_signal']}"
        else:
            first = f"rank {rank} (puid {puid}) exited with code {out['fail_exit_code']}"
        lines = [f"{self.name}: error(s) in user-provided code resulted in exit codes: {failed}; first: {first}"]
        for e in self._exceptions:
            lines.append(f"{e}\n{e.traceback.rstrip()}")
        raise DragonUserCodeError("\n".join(lines), failed, self._exceptions)


def _constraints(pol: Policy, rt: _core.Runtime) -> dict:
    """A resolved policy as the C++ entry's placement constraints."""
    out: dict = {}
    P = Policy.Placement
    if pol.placement == P.HOST_NAME:
        out["host"] = pol.host_name
    elif pol.placement == P.HOST_ID:
        out["node"] = int(pol.host_id)
    elif pol.placement == P.LOCAL:
        out["node"] = int(rt.node_id)
    if pol.cpu_affinity:
        out["cpus"] = list(pol.cpu_affinity)
    return out
