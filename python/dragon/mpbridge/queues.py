"""The ``dragon`` context's queues, with the standard library's signatures.

``Queue`` and ``JoinableQueue`` are :class:`dragon.native.queue.Queue` (one
channel; a feeder thread for an unbounded queue, as the stdlib's).
``SimpleQueue`` is what the stdlib's is, a one-way pipe, here a Dragon one:
``get``/``put``/``empty``/``close`` plus the ``_reader``/``_writer``/
``_rlock``/``_wlock``/``_poll`` attributes that ``multiprocessing.pool``
uses. A channel delivers whole messages to one reader each, so the locks
the stdlib needs around its pipe are not needed: they are no-ops here.

Unlike the stdlib's, these queues may also be passed after a process
started (through another queue or a pipe), not only to a starting child.
"""

from __future__ import annotations

from dragon.infrastructure.connection import Pipe, _dumps, _loads
from dragon.native.queue import Queue as _NativeQueue


class _StdlibPut:
    """``put`` as the standard library's: an object that cannot be pickled
    does not raise in the caller (the stdlib pickles in its feeder thread);
    ``_on_queue_feeder_error`` reports it on stderr and the object is
    dropped. ``dragon.native.queue.Queue.put`` raises instead."""

    def put(self, obj, block: bool = True, timeout: float | None = None) -> None:
        self._check_open()
        try:
            data = _dumps(obj)
        except Exception as e:
            self._on_queue_feeder_error(e, obj)
            return
        self._put_data(data, block, timeout)

    @staticmethod
    def _on_queue_feeder_error(e, obj):
        import traceback

        traceback.print_exception(e)


class Queue(_StdlibPut, _NativeQueue):
    """``multiprocessing.Queue`` on a runtime channel."""

    def __init__(self, maxsize: int = 0, *, ctx=None):
        super().__init__(maxsize)


class JoinableQueue(_StdlibPut, _NativeQueue):
    """``multiprocessing.JoinableQueue``: a Queue with ``task_done``/``join``."""

    def __init__(self, maxsize: int = 0, *, ctx=None):
        super().__init__(maxsize, joinable=True)


class _NoLock:
    """A lock that never blocks (channel messages are atomic already)."""

    def acquire(self, block: bool = True, timeout=None) -> bool:
        return True

    def release(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


class SimpleQueue:
    """``multiprocessing.SimpleQueue`` on a Dragon pipe."""

    def __init__(self, *, ctx=None):
        # Many processes may read it: no writer counting (see Pipe).
        self._reader, self._writer = Pipe(duplex=False, counted=False)
        self._rlock = _NoLock()
        self._wlock = _NoLock()
        self._poll = self._reader.poll

    def close(self) -> None:
        self._reader.close()
        self._writer.close()

    def empty(self) -> bool:
        r = self._reader
        if r._pending:
            return False
        # Asked without taking anything off the channel (another node's is
        # asked of that node, over the lane).
        return r._in.queued() == 0

    def get(self):
        return _loads(self._reader.recv_bytes())

    def put(self, obj) -> None:
        self._writer.send_bytes(_dumps(obj))

    def __getstate__(self):
        return (self._reader, self._writer)

    def __setstate__(self, state):
        self._reader, self._writer = state
        self._rlock = _NoLock()
        self._wlock = _NoLock()
        self._poll = self._reader.poll

    def __repr__(self) -> str:
        return "<dragon SimpleQueue>"


__all__ = ["JoinableQueue", "Queue", "SimpleQueue"]
