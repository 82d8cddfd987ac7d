"""Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event, Barrier of
the ``dragon`` start method, and the shared memory under its Value, Array,
RawValue and RawArray (docs/multiprocessing.md, "Locks, events, barriers").

Every object is built on ``_core.Sync``: a counting semaphore with holder
records and optional shared data in one block of a node's pool (C++:
``channels/include/dragon/channels/sync.hpp``). Its home is the node of the
process that made it. ``_core.SemLock`` (a plain CPython type over a Sync,
no pybind11 on its hot path) stands where the standard library's
``_multiprocessing.SemLock`` stands (``acquire``, ``release``, ``_count``,
``_is_mine``, ``_get_value``, ``kind``, ``maxvalue``), so the standard
library's own Condition algorithm runs over it unchanged. Event is one
flag word in a block, and Barrier runs threading's algorithm over a Lock
and an epoch word (``_EpochCondition``): neither makes the Condition's
round trip per waiter.

Any of them pickles as its block's descriptor (pool name, generation,
offset, id), through Process arguments, queues and pipes alike, and
re-attaches on the other side. A process reaches the block in shared memory
when the home node's pool is on its host (its own node, or another virtual
node of the same machine); see ``_remote.py`` for the rest.
"""

from __future__ import annotations

import atexit
import ctypes
import struct
import threading
import time
from multiprocessing import synchronize as _ms
from multiprocessing import sharedctypes as _msc
from multiprocessing import util as _mp_util

from dragon import _core
from dragon._runtime import current_runtime

SEMAPHORE = 0
RECURSIVE_MUTEX = 1
SEM_VALUE_MAX = _ms.SEM_VALUE_MAX

# A normal exit drops this process's holder records: counts it took were used
# (a Semaphore as a signal, Condition's internals), not held; only a process
# that dies otherwise (killed, crashed, os._exit) has its counts given back.
# multiprocessing's children run util's finalizers before their exit; any
# process runs atexit.
atexit.register(_core.sync_exit)
_mp_util.Finalize(None, _core.sync_exit, exitpriority=-100)


def _ctx():
    import multiprocessing

    return multiprocessing.get_context("dragon")


def _create(value: int, maximum: int, data_bytes: int = 0):
    """A new block in this node's pool."""
    return _core.Sync.create(current_runtime(), int(value), int(maximum), int(data_bytes))


def _attach(desc):
    pool_name, generation, offset, ident = desc
    try:
        s = _core.Sync.attach(current_runtime(), pool_name, generation, offset, ident)
    except _core.DragonNotFoundError as e:
        raise RuntimeError(
            f"dragon sync object of {pool_name} is not reachable from this node: its home node's pool is on "
            f"another host ({e}); objects of other hosts are not supported yet (docs/multiprocessing.md)") from e
    return s


def _rebuild_semlock(desc, kind):
    return _core.SemLock(_attach(desc), kind)


# ---- SemLock-based classes ------------------------------------------------------


class _DragonSemLock:
    """Mixed in before the standard library's SemLock subclasses: makes the
    ``_semlock`` a Dragon block and pickles it by descriptor (into children
    and through queues and pipes, on any node)."""

    def _dragon_init(self, kind: int, value: int, maximum: int) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._semlock = _core.SemLock(_create(value, maximum), kind)
        self._make_methods()

    def __getstate__(self):
        sl = self._semlock
        return (sl.descriptor, sl.kind)

    def __setstate__(self, state):
        self._semlock = _rebuild_semlock(*state)
        self._make_methods()

    def __enter__(self):
        return self._semlock.acquire()

    def __exit__(self, *args):
        return self._semlock.release()


class Semaphore(_DragonSemLock, _ms.Semaphore):
    def __init__(self, value=1, *, ctx=None):
        self._dragon_init(SEMAPHORE, value, SEM_VALUE_MAX)

    def get_value(self):
        return self._semlock._get_value()


class BoundedSemaphore(_DragonSemLock, _ms.BoundedSemaphore):
    def __init__(self, value=1, *, ctx=None):
        self._dragon_init(SEMAPHORE, value, value)


class Lock(_DragonSemLock, _ms.Lock):
    def __init__(self, *, ctx=None):
        self._dragon_init(SEMAPHORE, 1, 1)


class RLock(_DragonSemLock, _ms.RLock):
    def __init__(self, *, ctx=None):
        self._dragon_init(RECURSIVE_MUTEX, 1, 1)


# ---- Condition, Event, Barrier: the standard library's algorithms ------------------


class Condition(_ms.Condition):
    """The standard library's Condition over Dragon semaphores; pickles
    anywhere (the standard library's only while spawning)."""

    def __init__(self, lock=None, *, ctx=None):
        super().__init__(lock if lock is not None else RLock(), ctx=_ctx())

    def __getstate__(self):
        return (self._lock, self._sleeping_count, self._woken_count, self._wait_semaphore)


class Event:
    """multiprocessing's Event as one flag word in a Dragon block: ``set``
    stores 1 and wakes every waiter (one FUTEX_WAKE, only when someone
    sleeps), ``wait`` sleeps on the block's futex word until the flag is
    up, ``clear`` stores 0. The standard library's Event is a Condition
    dance of a dozen semaphore operations in which ``set`` waits for every
    waiter to wake; this one does not wait for anyone."""

    def __init__(self, *, ctx=None):
        self._sync = _create(0, SEM_VALUE_MAX)

    def is_set(self) -> bool:
        return self._sync.value() > 0

    def set(self) -> None:
        self._sync.event_set()

    def clear(self) -> None:
        self._sync.event_clear()

    def wait(self, timeout=None) -> bool:
        return self._sync.event_wait(timeout)

    def __getstate__(self):
        return self._sync.descriptor

    def __setstate__(self, desc):
        self._sync = _attach(desc)

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} at {id(self):#x} {'set' if self.is_set() else 'unset'}>"


class SharedBuffer:
    """Zeroed shared memory in a Dragon block: what ``heap.BufferWrapper`` is
    to the standard library (``create_memoryview``), pickled by descriptor."""

    def __init__(self, size: int, *, _block=None):
        if _block is None:
            if size < 0:
                raise ValueError(f"shared buffer size must be >= 0 (got {size})")
            _block = _create(0, 0, size)  # its semaphore is unused
        self._block = _block
        self._size = len(_block.buffer())

    def create_memoryview(self) -> memoryview:
        return self._block.buffer()

    def __reduce__(self):
        return (_attach_buffer, (self._block.descriptor,))

    def __repr__(self) -> str:
        return f"<dragon SharedBuffer {self._size} bytes on node {self._block.node_id}>"


def _attach_buffer(desc):
    return SharedBuffer(0, _block=_attach(desc))


class _EpochCondition:
    """What threading.Barrier asks of its Condition (``with``, ``wait``,
    ``wait_for``, ``notify_all``), as a Dragon Lock and an epoch word:
    ``notify_all`` (called with the lock held) bumps the epoch and wakes
    every sleeper; ``wait`` reads the epoch under the lock, releases it,
    sleeps until the epoch moved, and takes the lock again. The standard
    library's Condition makes ``notify_all`` wait for each sleeper to wake
    in turn, a round trip per party per round."""

    def __init__(self, lock=None, epoch=None):
        self._lock = lock if lock is not None else Lock()
        self._epoch = epoch if epoch is not None else _create(0, SEM_VALUE_MAX)

    def __enter__(self):
        return self._lock.acquire()

    def __exit__(self, *args):
        self._lock.release()

    def __getstate__(self):
        return (self._lock, self._epoch.descriptor)

    def __setstate__(self, state):
        lock, desc = state
        self.__init__(lock, _attach(desc))

    def wait(self, timeout=None) -> bool:
        seen = self._epoch.value()
        self._lock.release()
        try:
            return self._epoch.epoch_wait(seen, timeout)
        finally:
            self._lock.acquire()

    def wait_for(self, predicate, timeout=None):
        endtime = None
        waittime = timeout
        result = predicate()
        while not result:
            if waittime is not None:
                if endtime is None:
                    endtime = time.monotonic() + waittime
                else:
                    waittime = endtime - time.monotonic()
                    if waittime <= 0:
                        break
            self.wait(waittime)
            result = predicate()
        return result

    def notify_all(self) -> None:
        self._epoch.epoch_bump()


class Barrier(_ms.Barrier):
    """The standard library's Barrier (threading's algorithm) with its two
    shared ints in a Dragon block and an epoch condition (above) in place
    of a Condition."""

    def __init__(self, parties, action=None, timeout=None, *, ctx=None):
        if parties <= 0:
            raise ValueError("parties must be > 0")
        wrapper = SharedBuffer(struct.calcsize("i") * 2)
        self.__setstate__((parties, action, timeout, _EpochCondition(), wrapper))
        self._state = 0
        self._count = 0


# ---- Value, Array, RawValue, RawArray --------------------------------------------------


def _reduce_ctype(obj):
    w = obj.__dict__.get("_wrapper")
    if not isinstance(w, SharedBuffer):
        return _msc.reduce_ctype(obj)
    if isinstance(obj, ctypes.Array):
        return _rebuild_ctype, (obj._type_, w, obj._length_)
    return _rebuild_ctype, (type(obj), w, None)


def _rebuild_ctype(type_, wrapper, length):
    if length is not None:
        type_ = type_ * length
    _msc._ForkingPickler.register(type_, _reduce_ctype)
    obj = type_.from_buffer(wrapper.create_memoryview())
    obj._wrapper = wrapper
    return obj


def _new_value(type_):
    return _rebuild_ctype(type_, SharedBuffer(ctypes.sizeof(type_)), None)


def RawValue(typecode_or_type, *args):
    type_ = _msc.typecode_to_type.get(typecode_or_type, typecode_or_type)
    obj = _new_value(type_)
    obj.__init__(*args)
    return obj


def RawArray(typecode_or_type, size_or_initializer):
    type_ = _msc.typecode_to_type.get(typecode_or_type, typecode_or_type)
    if isinstance(size_or_initializer, int):
        return _new_value(type_ * size_or_initializer)
    result = _new_value(type_ * len(size_or_initializer))
    result.__init__(*size_or_initializer)
    return result


def _reduce_synchronized(s):
    # ForkingPickler's table wins over __reduce__, whose assert_spawning
    # refuses queues and pipes: ours pickle anywhere, the stdlib's as before.
    if isinstance(s._obj.__dict__.get("_wrapper"), SharedBuffer):
        return _msc.synchronized, (s._obj, s._lock)
    return s.__reduce__()


for _cls in (_msc.Synchronized, _msc.SynchronizedArray, _msc.SynchronizedString):
    _msc._ForkingPickler.register(_cls, _reduce_synchronized)


def _synchronized(obj, lock):
    if lock is False:
        return obj
    if lock in (True, None):
        lock = RLock()
    if not hasattr(lock, "acquire"):
        raise AttributeError("%r has no method 'acquire'" % lock)
    s = _msc.synchronized(obj, lock, ctx=_ctx())
    if type(s) not in _msc._ForkingPickler._extra_reducers:  # a wrapper of a ctypes Structure
        _msc._ForkingPickler.register(type(s), _reduce_synchronized)
    return s


def Value(typecode_or_type, *args, lock=True):
    return _synchronized(RawValue(typecode_or_type, *args), lock)


def Array(typecode_or_type, size_or_initializer, *, lock=True):
    return _synchronized(RawArray(typecode_or_type, size_or_initializer), lock)


__all__ = ["Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Event", "Barrier", "Value", "Array",
           "RawValue", "RawArray", "SharedBuffer"]
