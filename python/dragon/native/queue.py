"""Queue: a FIFO of picklable objects between any processes of the runtime,
on one node or many (DragonHPC's ``dragon.native.queue.Queue``; the
``dragon`` multiprocessing context's Queue, JoinableQueue and SimpleQueue
are this class).

    q = Queue(maxsize=0)        # a channel in this node's pool
    q.put(obj); q.get()         # block, timeout as queue.Queue's
    q.size()                    # messages in it now (DragonHPC's name; qsize() too)

The queue is one channel. ``maxsize > 0`` is its capacity: ``put`` blocks
(``queue.Full`` after its timeout) while it holds that many. ``maxsize <= 0``
is unbounded, as the standard library's: the channel holds ``BUFFER``
messages and further ``put`` calls hand their objects to a feeder thread
that sends them as room appears (``join_thread``, ``cancel_join_thread``
and the flush at exit work as the standard library's).

Objects are pickled in ``put``: one that cannot be pickled raises there and
the queue is unchanged. Each object is one message (any size: a large one
sits in its own block of the pool), so many producers and consumers never
see half an object. A queue pickles as its channel's descriptor: pass it to
processes on any node. The node that created it holds it; the others reach
it over their lanes (``qsize``/``empty``/``full`` there ask the queue's node).

``joinable=True`` adds ``task_done``/``join``: a second channel holds one
token per unfinished task (at most ``TASKS`` of them at once).
"""

from __future__ import annotations

import pickle
import queue as _stdq
import threading
import time
from collections import deque

from dragon import _core
from dragon.infrastructure import large
from dragon.infrastructure.connection import _dumps, new_channel

BUFFER = 1024   # messages the channel of an unbounded queue holds
BLOCK = 240     # bytes inline per message (slot of 256 B); larger ones take a pool block
TASKS = 4096    # unfinished tasks of a joinable queue at once
MAX_CAPACITY = 1 << 16
QUEUED_BYTES = 8 << 20  # large-message bytes in an unbounded queue's channel (then the feeder holds them)
FEED_BATCH = 256  # messages the feeder sends per GIL hand-off
_SIZE_PATIENCE = 1.0  # seconds size() waits for this process's sends to another node to land
_LARGE = large.LARGE
_RECORD = large.RECORD

_Timeout = _core.DragonTimeoutError


_loads = pickle.loads


class Queue:
    """A queue of the runtime (see the module's doc)."""

    def __init__(self, maxsize: int = 0, block_size: int = BLOCK, joinable: bool = False, *, _attach=None):
        if _attach is not None:
            from dragon._runtime import current_runtime

            rt = current_runtime()
            desc, tasks, self._maxsize = _attach
            self._owned = None
            self._ch = _core.Channel.attach(rt, desc)
            self._tasks = _core.Channel.attach(rt, tasks) if tasks else None
            self._tasks_owned = None
        else:
            maxsize = int(maxsize)
            self._maxsize = maxsize if 0 < maxsize <= MAX_CAPACITY else 0
            cap = self._maxsize if self._maxsize else BUFFER
            # An unbounded queue bounds the bytes of large messages queued in
            # its channel (put() never blocks: its feeder holds the rest), so
            # that a fast producer neither fills the node's pool (which every
            # pipe and queue of the node allocates from) nor cycles through
            # more pool blocks than the caches hold. A bounded queue holds
            # maxsize objects of any size, as the standard library's.
            self._owned = new_channel(capacity=cap, block=int(block_size),
                                      max_queued_bytes=0 if self._maxsize else QUEUED_BYTES)
            self._ch = self._owned.ch
            self._tasks_owned = new_channel(capacity=TASKS, block=0) if joinable else None
            self._tasks = self._tasks_owned.ch if joinable else None
        self._joinable = self._tasks is not None
        self._closed = False
        self._buffer: deque = deque()
        self._mutex = threading.Lock()  # (entered directly on the hot path: Condition's is Python code)
        self._cond = threading.Condition(self._mutex)
        self._local = self._ch.is_local
        self._thread: threading.Thread | None = None
        self._sending = False  # the feeder is sending the head of _buffer
        self._joincancelled = False
        self._error: BaseException | None = None

    # ---- passing it on -------------------------------------------------------------

    def __getstate__(self):
        raise TypeError("use __reduce__")

    def __reduce__(self):
        for o in (self._owned, self._tasks_owned):
            if o is not None:
                o.share()
        return (_rebuild, (type(self), self._ch.descriptor, self._tasks.descriptor if self._tasks else None,
                           self._maxsize))

    # ---- putting -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")

    def put(self, obj, block: bool = True, timeout: float | None = None) -> None:
        """Puts ``obj``; with ``block=False`` or a ``timeout``, ``queue.Full``
        if a bounded queue stays full. An object that cannot be pickled
        raises here (the pickler's exception) and the queue is unchanged."""
        self._check_open()
        self._put_data(_dumps(obj), block, timeout)

    def _put_data(self, data: bytes, block: bool, timeout: float | None) -> None:
        if self._joinable:
            self._task_token(block, timeout)
        if self._maxsize:
            try:
                large.send(self._ch, data, (timeout if timeout is not None else None) if block else 0)
            except _Timeout:
                if self._joinable:
                    self._untoken()
                raise _stdq.Full from None
            return
        with self._mutex:
            # Straight into this node's channel when nothing put before is
            # still on its way (FIFO): the feeder only takes over while the
            # channel is full, and hands back as soon as it has caught up.
            # Another node's channel: always the feeder, whose sends are
            # pipelined (a try-once send there is a round trip per message).
            if (not self._buffer and not self._sending and self._local
                    and len(data) <= _LARGE):  # a large one streams: the feeder's job
                try:
                    self._ch.send(data, 0)
                    return
                except _Timeout:
                    pass
            self._buffer.append(data)
            if self._thread is None:
                self._start_thread()
            self._cond.notify()

    def put_nowait(self, obj) -> None:
        self.put(obj, False)

    def _task_token(self, block, timeout) -> None:
        try:
            self._tasks.send(b"", (timeout if timeout is not None else None) if block else 0)
        except _Timeout:
            raise _stdq.Full(f"{TASKS} unfinished tasks") from None

    def _untoken(self) -> None:
        try:
            self._tasks.recv(0)
        except _Timeout:
            pass

    def _start_thread(self) -> None:
        t = threading.Thread(target=self._feed, name="dragon-queue-feeder", daemon=True)
        self._thread = t
        t.start()
        from dragon._runtime import at_exit

        at_exit(self._flush_at_exit)

    def _feed(self) -> None:
        """Sends what put() buffered, in order. All the small messages
        buffered go in one ``send_many`` call, with the GIL released for the
        whole batch: a feeder that needed the GIL back after every message
        got it only at the producer's next forced switch (every
        ``sys.getswitchinterval()``, 5 ms) while the producer kept putting,
        i.e. one 1 MiB message per 5 ms (issue 19: the 0.17 GB/s mode)."""
        ch = self._ch
        while True:
            with self._cond:
                while not self._buffer and not self._closed:
                    self._cond.wait()
                if not self._buffer:
                    return  # closed and drained
                batch = []
                for d in self._buffer:
                    if len(d) > large.LARGE or len(batch) >= FEED_BATCH:
                        break
                    batch.append(d)
                big = None if batch else self._buffer[0]
                self._sending = True
            try:
                if batch:
                    n = ch.send_many(batch)
                else:
                    large.send(ch, big, None)
                    n = 1
            except Exception as e:  # the channel or the runtime went away
                self._error = e
                with self._cond:
                    self._buffer.clear()
                    self._sending = False
                    self._cond.notify_all()
                return
            del batch, big
            with self._cond:
                for _ in range(n):
                    self._buffer.popleft()
                self._sending = False
                drained = not self._buffer
                self._cond.notify_all()
            if drained and not ch.is_local:
                try:
                    ch.flush(None)  # arrived, not only on its way, before the feeder idles or ends
                except Exception as e:
                    self._error = e

    def _flush_at_exit(self) -> None:
        if not self._joincancelled:
            self.close()
            self.join_thread()

    # ---- getting -------------------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None):
        """The next object; ``queue.Empty`` if none comes in time (at once
        with ``block=False``)."""
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        if block and timeout is None:  # the common case, straight
            recv_view = self._ch.recv_view
            while True:
                data = recv_view(None)  # bytes when small, else a view of the message
                if type(data) is not bytes:
                    data = memoryview(data)
                if data[:2] != _RECORD:
                    return _loads(data)
                data = large.fetch(data)
                if data is not None:  # (None: its producer died while sending it)
                    return _loads(data)
        deadline = None if timeout is None or not block else time.monotonic() + max(timeout, 0.0)
        while True:
            left = 0 if not block else (None if deadline is None else max(deadline - time.monotonic(), 0.0))
            try:
                # Unpickled straight from the channel's memory (a large one
                # from its pool block, freed once unpickled): one copy fewer.
                data = memoryview(self._ch.recv_view(left))
            except _Timeout:
                raise _stdq.Empty from None
            if large.is_record(data):
                data = large.fetch(data)
                if data is None:
                    continue  # its producer died while sending it: nothing of it is returned
            return _loads(data)

    def get_nowait(self):
        return self.get(False)

    def poll(self, timeout: float | None = 0) -> bool:
        """Whether the queue holds something, waiting up to ``timeout``
        (this node's queues only)."""
        ready = _core.poll([(self._ch, _core.READABLE)], timeout)
        return bool(ready[0])

    # ---- size ----------------------------------------------------------------------

    def size(self) -> int:
        """Objects in the queue now (and in this process's feeder). A queue
        of another node is asked over the lane, once what this process sent
        to it has arrived: its puts are counted once, either in the feeder
        or in the channel (unless the channel stays full for a second,
        which makes the answer approximate, as the standard library's)."""
        if self._local:
            return self._ch.queued() + len(self._buffer)
        with self._cond:  # the feeder starts no batch meanwhile
            if self._cond.wait_for(lambda: not self._sending, _SIZE_PATIENCE):
                try:
                    self._ch.flush(_SIZE_PATIENCE)
                except _Timeout:
                    pass
            return self._ch.queued() + len(self._buffer)

    def qsize(self) -> int:
        return self.size()

    def empty(self) -> bool:
        return self.size() == 0

    def full(self) -> bool:
        return bool(self._maxsize) and self.size() >= self._maxsize

    @property
    def maxsize(self) -> int:
        return self._maxsize

    # ---- joinable ------------------------------------------------------------------

    def task_done(self) -> None:
        """One task got from the queue is done."""
        if not self._joinable:
            raise ValueError("task_done: not a joinable queue")
        try:
            self._tasks.recv(0)
        except _Timeout:
            raise ValueError("task_done() called too many times") from None

    def join(self) -> None:
        """Waits until every object put was got and marked done."""
        if not self._joinable:
            raise ValueError("join: not a joinable queue")
        if not self._tasks.is_local:
            self._tasks.flush(None)  # (this process's puts counted their tasks)
        pause = 0.0002  # (another node's queue: each look is a round trip over the lane)
        while self._tasks.queued():
            time.sleep(pause)
            pause = min(pause * 2, 0.02)

    # ---- the end -------------------------------------------------------------------

    def close(self) -> None:
        """No more puts from this process; the feeder sends what it holds, then ends."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def join_thread(self) -> None:
        """Waits for the feeder to send everything put (after close())."""
        if not self._closed:
            raise ValueError("join_thread: close() the queue first")
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join()

    def cancel_join_thread(self) -> None:
        """Exit without waiting for the feeder (what it holds may be lost)."""
        self._joincancelled = True

    def destroy(self) -> None:
        """Frees the queue's channels now (its creator only)."""
        self.close()
        for o in (self._owned, self._tasks_owned):
            if o is not None:
                o.ch.destroy()

    def __repr__(self) -> str:
        return f"<dragon Queue maxsize={self._maxsize} node={self._ch.node_id}>"


def _rebuild(cls, desc, tasks, maxsize):
    q = cls.__new__(cls)
    Queue.__init__(q, _attach=(desc, tasks, maxsize))
    return q


__all__ = ["Queue"]
