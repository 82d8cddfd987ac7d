"""Children's output into the notebook, and the groups a cell started.

A Jupyter kernel's ``sys.stdout`` is not its file descriptor 1: ipykernel
sends what is written to ``sys.stdout`` to the front end as the output of
the executing cell. A member of a group writes to its own fd 1, which the
runtime sends to ``dragon-orchestrate``'s terminal (or the embedded
runtime's), not to the cell. So, in the kernel, every group this process
starts (ProcessGroup, Process, multiprocessing's dragon children, Pool
workers, DDict managers: all are ``_core.Group``) gets its members' stdout
and stderr that were left to the runtime (``inherit``) *piped* instead, and
one forwarder thread reads the pipes and writes to ``sys.stdout`` and
``sys.stderr``: the cell running at the time shows them.

``enable()`` installs this (the Dragon kernel calls it at start); the
registry it keeps also lets the kernel stop what an interrupted cell started
and everything at shutdown.
"""

from __future__ import annotations

import sys
import threading
import weakref

from dragon import _core

POLL = 0.05  # seconds between passes over the pipes while something runs

_lock = threading.Lock()
_groups: "weakref.WeakSet[_ForwardingGroup]" = weakref.WeakSet()
_cell = [None]  # the id of the cell running now (set by the kernel), None between cells
_wake = threading.Event()
_thread: threading.Thread | None = None
_enabled = False
_BaseGroup = _core.Group


class _ForwardingGroup(_BaseGroup):
    """A ``_core.Group`` whose inherited output is piped to this process."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._fw_ranks: list[tuple[int, str]] = []  # (rank, "out" | "err") to forward
        self._fw_next_rank = 0
        self._fw_done: set[tuple[int, str]] = set()
        self._fw_decoders: dict = {}
        self._fw_cell = None
        self._fw_main = False
        self._fw_released = False
        self._fw_lock = threading.Lock()  # one reader per group at a time (its decoders)

    def add(self, argv, cwd="", env=(), stdin="discard", stdin_path="", stdout="inherit", stdout_path="",
            stderr="inherit", stderr_path="", count=1, node=-1, host="", cpus=(), fast_start=False):
        first = self._fw_next_rank
        if stdout == "inherit":
            stdout = "pipe"
            self._fw_ranks += [(r, "out") for r in range(first, first + count)]
        if stderr == "inherit":
            stderr = "pipe"
            self._fw_ranks += [(r, "err") for r in range(first, first + count)]
        super().add(argv, cwd=cwd, env=list(env), stdin=stdin, stdin_path=stdin_path, stdout=stdout,
                    stdout_path=stdout_path, stderr=stderr, stderr_path=stderr_path, count=count, node=node,
                    host=host, cpus=list(cpus), fast_start=fast_start)
        self._fw_next_rank = first + count

    def start(self):
        super().start()
        self._fw_main = threading.current_thread() is threading.main_thread()
        self._fw_cell = _cell[0] if self._fw_main else None
        if self._fw_ranks:
            with _lock:
                _groups.add(self)
            _ensure_thread()
            _wake.set()
        elif self._fw_main:
            with _lock:
                _groups.add(self)  # still stopped when its cell is interrupted

    def join(self, timeout=None):
        done = super().join(timeout)
        if done and self._fw_ranks:
            # What the members wrote before they ended comes before what the
            # caller prints next (join returns once every member has ended).
            try:
                _drain(self, final=True)
            except Exception:
                pass
        return done

    def release(self):
        if not self._fw_released:
            self._fw_released = True
            try:
                _drain(self, final=True)
            except Exception:
                pass
            with _lock:
                _groups.discard(self)
        super().release()

    def close(self):
        try:
            _drain(self, final=True)
        except Exception:
            pass
        super().close()


def _write(stream: str, text: str) -> None:
    out = sys.stdout if stream == "out" else sys.stderr
    try:
        out.write(text)
        out.flush()
    except Exception:
        pass


def _drain(g: _ForwardingGroup, final: bool = False) -> bool:
    """Reads what each forwarded pipe has now; True if anything came."""
    with g._fw_lock:
        return _drain_locked(g, final)


def _drain_locked(g: _ForwardingGroup, final: bool) -> bool:
    got = False
    for key in list(g._fw_ranks):
        if key in g._fw_done:
            continue
        rank, stream = key
        dec = g._fw_decoders.get(key)
        if dec is None:
            import codecs

            dec = g._fw_decoders[key] = codecs.getincrementaldecoder("utf-8")("replace")
        while True:
            try:
                data = _BaseGroup.read_output(g, rank, stream, 0)
            except TimeoutError:
                break  # nothing now; the member runs on
            except Exception:
                # Released, or the runtime is gone: nothing more will come.
                data = b""
            if not data:
                tail = dec.decode(b"", final=True)
                if tail:
                    _write(stream, tail)
                g._fw_done.add(key)
                break
            got = True
            text = dec.decode(data)
            if text:
                _write(stream, text)
            if final is False:
                break
    return got


def _loop() -> None:
    while True:
        with _lock:
            live = [g for g in _groups if g._fw_ranks and len(g._fw_done) < len(g._fw_ranks)
                    and not g._fw_released]
        if not live:
            _wake.wait(1.0)
            _wake.clear()
            continue
        got = False
        for g in live:
            try:
                got |= _drain(g)
            except Exception:
                pass
        if not got:
            _wake.wait(POLL)
            _wake.clear()
        del live, g


def _ensure_thread() -> None:
    global _thread
    with _lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_loop, name="dragon-output", daemon=True)
            _thread.start()


def drain_all() -> None:
    """Everything the groups wrote so far, now (the kernel calls this as a
    cell ends, so a cell's output does not spill into the next one)."""
    with _lock:
        live = list(_groups)
    for g in live:
        if g._fw_ranks and not g._fw_released:
            try:
                _drain(g, final=True)
            except Exception:
                pass


def set_cell(cell) -> None:
    _cell[0] = cell


def _running(g) -> bool:
    try:
        return bool(g.started) and g.outcome is None and not g.join(0)
    except Exception:
        return False


def _kill_running(groups) -> int:
    n = 0
    for g in groups:
        if _running(g):
            try:
                _BaseGroup.kill(g)
                n += 1
            except Exception:
                pass
    drain_all()
    return n


def stop_cell(cell) -> int:
    """Kills the groups the cell ``cell`` started (from the main thread) that
    still run; returns how many."""
    with _lock:
        mine = [g for g in _groups if g._fw_cell == cell and cell is not None]
    return _kill_running(mine)


def stop_all() -> int:
    """Kills every group this process started that still runs."""
    with _lock:
        every = list(_groups)
    return _kill_running(every)


def enable() -> None:
    """Pipes the output of every group this process starts from now on to
    its sys.stdout / sys.stderr."""
    global _enabled
    if _enabled:
        return
    _core.Group = _ForwardingGroup
    _enabled = True
