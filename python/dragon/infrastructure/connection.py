"""Pipe and Connection on channels: multiprocessing's Connection API between
any two processes of the runtime, on one node or on two.

    a, b = Pipe()                 # duplex: two channels in this node's pool
    a.send({"x": 1}); b.recv()    # pickled objects
    b.send_bytes(b"raw")          # bytes, no pickling
    r, w = Pipe(duplex=False)     # r receives only, w sends only

A connection pickles as its channels' descriptors, so it can be passed to a
child (as an argument, through another connection or a queue) on any node;
the receiver attaches the same channels.

End of file: every end that can write to a channel is a *writer handle*. The
channel's reader counts them: the first end counts one, every pickled copy
announces itself (in the channel, before the pickle is handed out) and every
handle that is closed, collected or left at process exit says so. When the
count drops to zero and every message before it was read, ``recv`` raises
``EOFError``, as a pipe does once every copy of its write end is closed. A
process killed by a signal cannot say so: its handles stay counted.

Messages: a message on the channel is the payload as sent, except when it
begins with the two bytes ``ff fe`` (a control record: writer opened or
closed), ``ff fc`` (a message larger than 8 MiB, sent in chunks: see
``large.py``) or ``ff fd`` (an escaped payload that began with ``ff fc``,
``ff fd`` or ``ff fe``: the two bytes are stripped). Pickles begin with
``80``, so objects never pay for the escape.
"""

from __future__ import annotations

import os
import pickle
import threading
from io import BytesIO as _BytesIO
from multiprocessing.reduction import ForkingPickler as _ForkingPickler
import time
import weakref
from collections import deque

from dragon import _core
from dragon._runtime import current_runtime
from dragon.infrastructure import large, memory

memory.tune()  # message-sized buffers from the heap, not fresh pages (see memory.py)

_CTL = b"\xff\xfe"
_ESC = b"\xff\xfd"
_OPEN = _CTL + b"+"
_CLOSE = _CTL + b"-"

# A pipe's buffer: CAPACITY messages of up to BLOCK bytes inline, larger ones
# in their own pool block (64 KiB of pool per channel, as a pipe's buffer).
CAPACITY = 512
BLOCK = 112

_Timeout = _core.DragonTimeoutError

# A receiver blocked on the channel looks up every SLICE seconds whether a
# poll() in another thread took its message (see Connection._ready); every
# WATCHED_SLICE seconds on an end whose fileno() watcher runs, which wakes
# with every message and may take one just as a recv starts waiting.
SLICE = 0.1
WATCHED_SLICE = 0.002
_PENDING = object()


_pickler = None  # pickle.Pickler with ForkingPickler's dispatch table
_pickler_from = ({}, {}, None)  # copies of the two tables it was built from, and the reducer_override
_reused = None  # (BytesIO, _pickler on it): kept for the next small pickle
_reused_lock = threading.Lock()
SMALL_PICKLE = 64 << 10  # up to this, a pickle is returned as bytes and the pickler kept


def _forget_reused() -> None:
    global _reused, _reused_lock
    _reused, _reused_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_reused)  # (another thread may have held the lock)


# Exact instances of these pickle the same with any dispatch table or
# reducer_override: the pickler writes them before it looks at either
# (pickle's docs, Pickler.reducer_override). pickle.dumps is then the
# ForkingPickler's pickle at a fifth of the cost of the path below (0.16 vs
# 0.8 us for 64 B of bytes: the most common message of a Queue).
_ATOMIC = frozenset((bytes, str, int, float, bool, type(None)))
_plain_dumps = pickle.dumps
_fp_attrs = vars(_ForkingPickler)  # (live: a reducer_override set on the class later shows here)


def _dumps(obj):
    """The pickle of ``obj`` (multiprocessing's reducers), protocol 5: a
    numpy array's data is written straight into the buffer, 40-60x faster
    for 1 MiB than protocol 4's copy through ``tobytes``.

    What ``ForkingPickler.dumps`` gives, without its cost per call: it
    copies copyreg's dispatch table, adds its registered reducers and makes
    a pickler and a buffer for every object (~1-2 us, most of a small put).
    Here the merged table is built once, and again whenever either table
    changed (``ForkingPickler.register``, ``copyreg.pickle``; comparing
    them, a handful of entries each, costs ~0.1 us) or ForkingPickler got
    another ``reducer_override`` (dragon.jupyter's), and one pickler and
    its buffer serve every small pickle (bytes, ~0.3 us). A large one comes
    back as a memoryview of its own buffer, not copied again (the channel
    takes the buffer as it is); a pickle made while the kept pickler is busy
    (another thread, or a reducer that pickles) gets a pickler of its own."""
    global _pickler, _pickler_from, _reused
    if type(obj) in _ATOMIC:
        return _plain_dumps(obj, 5)
    fp = _ForkingPickler
    base, extra = fp._copyreg_dispatch_table, fp._extra_reducers
    override = _fp_attrs.get("reducer_override")  # (the Jupyter kernel's sets one)
    if (_pickler is None or base != _pickler_from[0] or extra != _pickler_from[1]
            or override is not _pickler_from[2]):
        table = base.copy()
        table.update(extra)
        attrs = {"dispatch_table": table}
        if override is not None:
            attrs["reducer_override"] = override
        _pickler = type("_Pickler", (pickle.Pickler,), attrs)
        _pickler_from = (base.copy(), extra.copy(), override)
        _reused = None
    lock = _reused_lock
    if lock.acquire(False):
        try:
            kept = _reused
            if kept is None:
                buf = _BytesIO()
                kept = _reused = (buf, _pickler(buf, 5))
            buf, pickler = kept
            try:
                pickler.dump(obj)
                if buf.tell() <= SMALL_PICKLE:
                    return buf.getvalue()
                _reused = None  # (its buffer is exported now: the next pickle makes another)
                return buf.getbuffer()
            finally:
                if _reused is kept:
                    pickler.clear_memo()
                    buf.seek(0)
                    buf.truncate()
        finally:
            lock.release()
    buf = _BytesIO()
    _pickler(buf, 5).dump(obj)
    return buf.getbuffer()


def _loads(data):
    return pickle.loads(data)


class _Closer:
    """Says "one writer fewer" on a channel once, when the handle is closed,
    collected, or the process exits."""

    __slots__ = ("ch", "done", "__weakref__")

    def __init__(self, ch):
        self.ch = ch
        self.done = False

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self.ch.send(_CLOSE, None)
        except Exception:
            pass  # the channel or the runtime is gone: nobody is left to read it


_live_closers: "weakref.WeakSet[_Closer]" = weakref.WeakSet()
_exit_hooked = False


def _close_all_at_exit() -> None:
    for c in list(_live_closers):
        c()


def _hook_exit() -> None:
    global _exit_hooked
    if not _exit_hooked:
        from dragon._runtime import at_exit

        at_exit(_close_all_at_exit)
        _exit_hooked = True


class _Owned:
    """A channel this process created for a pipe or a queue: freed when the
    last local object using it goes, unless a handle to it was passed on
    (pickled): then it lives until the runtime ends, as other processes may
    still use it."""

    __slots__ = ("ch", "state", "__weakref__")

    def __init__(self, ch: _core.Channel):
        self.ch = ch
        self.state = [False]  # shared
        f = weakref.finalize(self, _destroy_private, ch, self.state)
        f.atexit = False

    def share(self) -> None:
        self.state[0] = True


def _destroy_private(ch, state) -> None:
    if not state[0]:
        try:
            ch.destroy()
        except Exception:
            pass


class Connection:
    """One end of a Pipe (see the module's doc). ``readable``/``writable``
    say which ways it goes."""

    def __init__(self, inbox: _core.Channel | None, outbox: _core.Channel | None, *, _counted: bool = True,
                 _keep: tuple = ()):
        self._keep = _keep  # the _Owned channels this end uses (its creator's side)
        self._counted = _counted
        self._in = inbox
        self._out = outbox
        self._out_local = outbox is None or outbox.is_local
        self._pending: deque = deque()  # data read by poll(), not yet returned
        self._writers = 1  # writer handles of the inbox (only meaningful for a reader)
        self._eof = False
        self._closed = False
        self._closer = None
        self._lock = threading.Lock()  # guards _pending, _eof, _receiving
        self._receiving = 0  # threads blocked in the channel's recv for this end
        self._watch = None  # the _Readiness behind fileno(), once asked for
        self._slice = SLICE  # (WATCHED_SLICE once it is)
        if outbox is not None and _counted:
            self._closer = _Closer(outbox)
            _live_closers.add(self._closer)
            self._finalizer = weakref.finalize(self, self._closer)
            self._finalizer.atexit = False  # the runtime's exit hook does it, while the runtime is up
            _hook_exit()

    # ---- state -----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def readable(self) -> bool:
        return self._in is not None

    @property
    def writable(self) -> bool:
        return self._out is not None

    def _check_closed(self) -> None:
        if self._closed:
            raise OSError("handle is closed")

    def _check_readable(self) -> None:
        if self._in is None:
            raise OSError("connection is write-only")

    def _check_writable(self) -> None:
        if self._out is None:
            raise OSError("connection is read-only")

    def fileno(self) -> int:
        """A descriptor that is readable while ``recv`` would not block (a
        message or the end is there), for ``select``, ``selectors`` and
        asyncio's ``add_reader``. The messages themselves do not go through
        it: read them with ``recv``/``recv_bytes``, and write nothing to it.
        It costs a watcher thread (see ``_Readiness``), started by the
        first call; ``multiprocessing.connection.wait`` does not need it.
        A write-only end has nothing to read: its descriptor never becomes
        readable."""
        self._check_closed()
        w = self._watch
        if w is None:
            with self._lock:
                w = self._watch
                made = w is None
                if made:
                    self._slice = WATCHED_SLICE
                    w = self._watch = _Readiness(self)
            if made:
                w.start(self)
        return w.fd

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._closer is not None:
            self._closer()
            self._finalizer.detach()
        self._pending.clear()
        if self._watch is not None:
            self._watch.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        pass  # the finalizer says "closed" for a collected writer

    # ---- sending -----------------------------------------------------------------------

    def send_bytes(self, buf, offset: int = 0, size: int | None = None) -> None:
        """Sends ``buf[offset:offset+size]`` (any bytes-like object) as one message."""
        if self._closed:
            raise OSError("handle is closed")
        out = self._out
        if out is None:
            raise OSError("connection is read-only")
        m = memoryview(buf)
        if m.itemsize > 1:
            m = m.cast("B")
        n = m.nbytes
        if offset or size is not None:
            if offset < 0:
                raise ValueError("offset is negative")
            if n < offset:
                raise ValueError("buffer length < offset")
            if size is None:
                size = n - offset
            elif size < 0:
                raise ValueError("size is negative")
            elif offset + size > n:
                raise ValueError("buffer length < offset + size")
            if offset or size != n:
                m = m[offset:offset + size]
                n = size
        if n >= 2 and m[0] == 0xFF and m[1] in (0xFE, 0xFD, 0xFC):
            m = _ESC + bytes(m)
            n += 2
        if n <= large.LARGE:
            out.send(m, None)
        else:
            large.send(out, m, None)
        if not self._out_local:
            out.flush(None)

    def _send(self, m) -> None:
        if len(m) >= 2 and m[0] == 0xFF and m[1] in (0xFE, 0xFD, 0xFC):
            m = _ESC + bytes(m)
        large.send(self._out, m, None)
        self._delivered()

    def send(self, obj) -> None:
        """Sends a picklable object. An object that cannot be pickled raises
        here, and nothing was sent."""
        self._check_closed()
        self._check_writable()
        large.send(self._out, _dumps(obj), None)
        self._delivered()

    def _delivered(self) -> None:
        """A send to another node's channel returns once the message is in
        it, as a pipe's write: a process that sends, then tells a third
        (a lock, a barrier) cannot be overtaken by that third's message."""
        if not self._out_local:
            self._out.flush(None)

    # ---- receiving -----------------------------------------------------------------------

    def _take(self, timeout: float | None) -> bytes | None:
        """The next payload within ``timeout`` (None: forever); None if none
        came; raises EOFError at the end. Control records are applied."""
        lock = self._lock
        lock.acquire()
        if self._pending:
            data = self._pending.popleft()
            lock.release()
            if self._watch is not None:
                self._watch.kick.set()
            return data
        if self._eof:
            lock.release()
            raise EOFError
        self._receiving += 1  # poll() in another thread must not take from under us
        lock.release()
        try:
            if timeout is None:
                # The common case first: a plain payload within one slice.
                try:
                    data = self._in.recv(self._slice)
                except _Timeout:
                    data = self._take_from_channel(None) if not self._pending else _PENDING
                else:
                    if data[:1] == b"\xff":
                        data = self._apply(data)
                        if data is None:
                            data = self._take_from_channel(None)
            else:
                data = self._take_from_channel(timeout)
        finally:
            lock.acquire()
            self._receiving -= 1
            lock.release()
        if data is _PENDING:
            with lock:
                data = self._pending.popleft()
        if self._watch is not None:
            self._watch.kick.set()  # (its descriptor may have to go quiet)
        return data

    def _take_from_channel(self, timeout: float | None):
        """The next payload from the channel, None at the timeout, or
        _PENDING if another thread's poll() put one into ``_pending``
        meanwhile (a rare race: looked for every ``_slice`` seconds)."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        step = self._slice
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                data = self._in.recv(step if left is None else min(left, step))
            except _Timeout:
                if self._pending:
                    return _PENDING
                if self._eof:  # (another thread took the last writer's end)
                    raise EOFError
                if left is not None and left <= step:
                    return None
                continue
            if data[:1] != b"\xff":  # a payload as sent (pickles begin with 80): the common case
                return data
            data = self._apply(data)
            if data is not None:
                return data

    def _apply(self, data):
        """A message that begins with ff: a control record is applied (None;
        EOFError at the end), an escaped payload unescaped, a large one fetched."""
        if data[:2] == _CTL:
            # Under the lock: two threads may apply records of one end (a
            # poll() or the fileno() watcher beside a recv), and a count
            # updated by both at once could lose one (no EOF, ever).
            with self._lock:
                if data == _OPEN:
                    self._writers += 1
                elif data == _CLOSE:
                    self._writers -= 1
                    if self._writers <= 0:
                        self._eof = True
                        raise EOFError
            return None
        if data[:2] == _ESC:
            return data[2:]
        if data[:2] == large.RECORD:
            return large.fetch(data)  # None if its sender died while sending it
        return data

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        """The next message; EOFError once every writer is closed and all was read."""
        if self._closed:
            raise OSError("handle is closed")
        if self._in is None:
            raise OSError("connection is write-only")
        if maxlength is None:
            return self._take(None)
        if maxlength < 0:
            raise ValueError("negative maxlength")
        data = self._take(None)
        if len(data) > maxlength:
            self.close()
            raise OSError("bad message length")
        return data

    def recv_bytes_into(self, buf, offset: int = 0) -> int:
        """Reads the next message into ``buf`` at byte ``offset``; returns its
        size in bytes (as the standard library's, whatever the item size of
        ``buf``). BufferTooShort (holding the message) if it does not fit."""
        self._check_closed()
        self._check_readable()
        with memoryview(buf) as m:
            itemsize = m.itemsize
            bytesize = itemsize * len(m)
            if offset < 0:
                raise ValueError("negative offset")
            if offset > bytesize:
                raise ValueError("offset too large")
            data = self._take(None)
            size = len(data)
            if bytesize < offset + size:
                from multiprocessing import BufferTooShort

                raise BufferTooShort(data)
            m.cast("B")[offset:offset + size] = data
        return size

    def recv(self):
        """The next object."""
        if self._closed:
            raise OSError("handle is closed")
        if self._in is None:
            raise OSError("connection is write-only")
        return _loads(self._take(None))

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether a message (or the end) can be read now, waiting up to
        ``timeout`` seconds (None: until one can)."""
        self._check_closed()
        self._check_readable()
        return self._ready(timeout)

    def _ready(self, timeout: float | None) -> bool:
        """Whether a message (or the end) can be read. Learning it may take
        the next message off the channel into this end's ``_pending`` (the
        next recv returns it), except while another thread of this process
        is blocked receiving on this end: then this end's channel is only
        looked at (this node's) or reported not ready (another node's), so
        the message goes to that thread instead of waiting in ``_pending``
        behind it (multiprocessing's pool waits on the reader its result
        thread reads)."""
        with self._lock:
            if self._pending or self._eof:
                return True
            busy = self._receiving > 0
            if not busy:
                self._receiving += 1
        if busy:
            if not self._in.is_local:
                return False
            return bool(_core.poll([(self._in, _core.READABLE)], timeout)[0])
        try:
            data = self._take_from_channel(timeout)
        except EOFError:
            return True
        finally:
            with self._lock:
                self._receiving -= 1
        if data is None:
            return False
        if data is _PENDING:
            return True
        with self._lock:
            self._pending.append(data)
        return True

    # ---- passing it on -----------------------------------------------------------------------

    def __reduce__(self):
        if self._closed:
            raise OSError("cannot pickle a closed connection")
        for o in self._keep:
            o.share()
        if self._out is not None and self._counted:
            # The copy is a writer handle of its own: the reader hears of it
            # before anyone can close this one (same sender, in order).
            self._out.send(_OPEN, None)
            if not self._out.is_local:
                self._out.flush(None)
        return (_rebuild, (self._in.descriptor if self._in is not None else None,
                           self._out.descriptor if self._out is not None else None, self._counted))

    def __repr__(self) -> str:
        kind = "duplex" if self._in is not None and self._out is not None else ("reader" if self._in else "writer")
        return f"<dragon Connection {kind}{' closed' if self._closed else ''}>"


class _Readiness:
    """The descriptor behind ``Connection.fileno()``: an eventfd that a
    watcher thread keeps readable exactly while the connection has a
    message (or its end) to read, as a pipe's descriptor is.

    The watcher asks the connection as ``poll(0)`` does (a control record
    is applied, not taken for data; a message it takes waits in the
    connection's ``_pending`` for the next ``recv``), then sleeps: while
    ready, until this process's ``recv`` takes something (it sets ``kick``)
    or 50 ms pass (another reader of a shared channel may have taken it);
    while not, in the channel's futex (this node's channel, 50 ms at a
    time) or in short sleeps growing to 5 ms (another node's). It ends,
    closing the eventfd, once the connection is closed or collected: the
    descriptor's number is not freed under a select that still has it."""

    __slots__ = ("fd", "kick", "_conn", "_stopped", "__weakref__")

    def __init__(self, conn: "Connection"):
        self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.kick = threading.Event()
        self._conn = weakref.ref(conn)
        self._stopped = False

    def start(self, conn: "Connection") -> None:
        """The first look happens here, in the thread that asked for the
        descriptor, and only then does the watcher start. That look opens
        whatever descriptors reaching the channel takes (the gateway's
        socket, a lane to another node): opened by the watcher, they would
        race the caller's own ``dup2`` onto free numbers (EBUSY), which
        CPython's ``test_large_fd_transfer`` does right after ``fileno()``."""
        shown = self._look(conn)
        if shown:
            os.eventfd_write(self.fd, 1)
        threading.Thread(target=self._run, args=(shown,), name="dragon-connection-fileno",
                         daemon=True).start()

    @staticmethod
    def _look(conn: "Connection") -> bool:
        try:
            return conn._in is not None and conn._ready(0)
        except Exception:
            return True  # (the channel is gone: recv raises at once)

    def stop(self) -> None:
        self._stopped = True
        self.kick.set()

    def _run(self, shown: bool) -> None:
        fd, kick = self.fd, self.kick  # shown: the eventfd is readable
        pause = 0.00005
        try:
            while not self._stopped:
                conn = self._conn()
                if conn is None or conn._closed:
                    return
                inbox = conn._in
                ready = self._look(conn)
                if ready != shown:
                    if ready:
                        os.eventfd_write(fd, 1)
                    else:
                        try:
                            os.eventfd_read(fd)
                        except BlockingIOError:
                            pass
                    shown = ready
                del conn
                if ready or inbox is None:
                    kick.wait(0.05)
                    kick.clear()
                elif inbox.is_local:
                    kick.clear()
                    _core.poll([(inbox, _core.READABLE)], 0.05)
                else:
                    if kick.wait(pause):
                        kick.clear()
                    pause = min(pause * 2, 0.005)
                    continue
                pause = 0.00005
        finally:
            os.close(fd)


def _rebuild(inbox: str | None, outbox: str | None, counted: bool = True) -> Connection:
    rt = current_runtime()
    return Connection(_core.Channel.attach(rt, inbox) if inbox else None,
                      _core.Channel.attach(rt, outbox) if outbox else None, _counted=counted)


def new_channel(capacity: int = CAPACITY, block: int = BLOCK, max_queued_bytes: int = 0) -> _Owned:
    """A channel in this node's pool, freed with its last local user unless shared."""
    return _Owned(_core.Channel.create(current_runtime(), capacity=capacity, block_size=block,
                                       max_queued_bytes=max_queued_bytes))


def Pipe(duplex: bool = True, *, counted: bool = True) -> tuple[Connection, Connection]:
    """Two connected ends: (a, b). With ``duplex=False`` a only receives and
    b only sends. ``counted=False``: no writer counting, so no EOF, for a
    channel several processes read (writer records go to whichever reader
    takes them, so only one reading process may count)."""
    if not counted:
        o = new_channel()
        return (Connection(o.ch, None, _keep=(o,), _counted=False),
                Connection(None, o.ch, _keep=(o,), _counted=False))
    if duplex:
        o1, o2 = new_channel(), new_channel()
        keep = (o1, o2)
        return Connection(o1.ch, o2.ch, _keep=keep), Connection(o2.ch, o1.ch, _keep=keep)
    o = new_channel()
    return Connection(o.ch, None, _keep=(o,)), Connection(None, o.ch, _keep=(o,))


__all__ = ["Connection", "Pipe"]
