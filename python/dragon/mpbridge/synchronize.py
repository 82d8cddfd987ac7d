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
node of the same machine); a process of another host reaches it through the
home node's agent (``_core.RemoteSync``, one round trip per operation): the
SemLock, the data area and the ctypes objects over it have stand-ins here
(``_RemoteSemLock``, ``_RemoteMemory``, ``_RemoteCtype``) with the same
interface and semantics.
"""

from __future__ import annotations

import atexit
import ctypes
import operator
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
    """The block in shared memory when its pool is on this host, else its
    home node's agent's stand-in (``_core.RemoteSync``)."""
    pool_name, generation, offset, ident = desc
    rt = current_runtime()
    try:
        return _core.Sync.attach(rt, pool_name, generation, offset, ident)
    except _core.DragonNotFoundError:
        pass  # another host's pool (or DRAGON_SYNC_THROUGH_HOME=1): through its home
    try:
        return _core.RemoteSync.attach(rt, pool_name, generation, offset, ident)
    except _core.DragonError as e:
        raise RuntimeError(f"dragon sync object {ident:#x} of {pool_name} is not reachable from node "
                           f"{rt.node_id}: {e}") from e


def _is_remote(block) -> bool:
    return isinstance(block, _core.RemoteSync)


def _rebuild_semlock(desc, kind):
    block = _attach(desc)
    if _is_remote(block):
        return _RemoteSemLock(block, kind)
    return _core.SemLock(block, kind)


class _RemoteSemLock:
    """``_core.SemLock``'s interface over a block of another host: what a
    process holds through this object (count, owner thread, for RLock and
    ``_is_mine``) is kept here, as CPython's semlock.c keeps it; acquire and
    release are done by the block's home agent (an acquire waits there, in
    requests of at most 1 s, so Ctrl-C is seen between them)."""

    __slots__ = ("sync", "kind", "_held", "_tid")

    def __init__(self, sync, kind: int):
        self.sync, self.kind = sync, kind
        self._held, self._tid = 0, 0

    @property
    def maxvalue(self):
        return self.sync.maximum()

    @property
    def descriptor(self):
        return self.sync.descriptor

    def acquire(self, block=True, timeout=None):
        me = threading.get_ident()
        if self.kind == RECURSIVE_MUTEX and self._held > 0 and self._tid == me:
            self._held += 1
            return True
        if not block:
            timeout = 0.0
        elif timeout is not None and timeout != timeout:
            raise ValueError("timeout is NaN")
        if not self.sync.acquire(timeout):
            return False
        self._held += 1
        self._tid = me
        return True

    def release(self):
        if self.kind == RECURSIVE_MUTEX:
            if self._held == 0 or self._tid != threading.get_ident():
                raise AssertionError("attempt to release recursive lock not owned by thread")
            if self._held > 1:
                self._held -= 1
                return
        self.sync.release()
        if self._held > 0:
            self._held -= 1

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *args):
        self.release()

    def _count(self):
        return self._held

    def _is_mine(self):
        return self._held > 0 and self._tid == threading.get_ident()

    def _get_value(self):
        return self.sync.value()

    def _is_zero(self):
        return self.sync.value() == 0

    def _after_fork(self):
        self._held = 0


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
        self._size = None if _is_remote(_block) else len(_block.buffer())  # (another host's: asked when needed)

    def create_memoryview(self):
        """A memoryview of the block; of another host's block, a stand-in
        whose items are read and written at the home (``_RemoteMemory``)."""
        if _is_remote(self._block):
            return _RemoteMemory(self._block)
        return self._block.buffer()

    def __reduce__(self):
        return (_attach_buffer, (self._block.descriptor,))

    def __repr__(self) -> str:
        size = self._block.data_size if self._size is None else self._size
        return f"<dragon SharedBuffer {size} bytes on node {self._block.node_id}>"


def _attach_buffer(desc):
    return SharedBuffer(0, _block=_attach(desc))


class _RemoteMemory:
    """What ``create_memoryview`` gives for another host's block: indexing
    (and ``cast``) as a memoryview's, each item read or written by the home
    agent. Barrier's two shared ints live in one."""

    __slots__ = ("_block", "_fmt", "_item")

    def __init__(self, block, fmt: str = "B"):
        self._block, self._fmt = block, fmt
        self._item = struct.calcsize(fmt)

    def cast(self, fmt: str) -> "_RemoteMemory":
        return _RemoteMemory(self._block, fmt)

    @property
    def _n(self) -> int:
        return self._block.data_size // self._item

    def __len__(self) -> int:
        return self._n

    def _index(self, i: int) -> int:
        i = operator.index(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("index out of bounds on dimension 1")
        return i

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._n))]
        i = self._index(i)
        return struct.unpack(self._fmt, self._block.read(i * self._item, self._item))[0]

    def __setitem__(self, i, value) -> None:
        i = self._index(i)
        self._block.write(i * self._item, struct.pack(self._fmt, value))


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
    if _is_remote(wrapper._block):
        return _RemoteCtype(type_, wrapper)
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


class _RemoteCtype:
    """A ctypes object (simple value, array, structure) over another host's
    block: ``value``, items, slices, ``raw`` and fields read and written by
    the home agent, each access one round trip, coherent with the home's
    own processes (they use the same bytes). What the standard library's
    ``Synchronized*`` wrappers and user code ask of a ctypes object works;
    ``ctypes.sizeof``/``addressof``/``memoryview`` of it do not (there is no
    local memory)."""

    def __init__(self, type_, wrapper):
        d = self.__dict__
        d["_ctype"], d["_wrapper"], d["_block"] = type_, wrapper, wrapper._block
        d["_size"] = ctypes.sizeof(type_)

    def _read(self, offset: int = 0, size: int | None = None) -> bytes:
        return self._block.read(offset, self._size - offset if size is None else size)

    def _whole(self):
        return self._ctype.from_buffer_copy(self._read())

    # -- simple values
    @property
    def value(self):
        return self._whole().value

    @value.setter
    def value(self, v) -> None:
        local = self._ctype() if issubclass(self._ctype, ctypes._SimpleCData) else self._whole()
        local.value = v
        self._block.write(0, bytes(local))

    @property
    def raw(self):
        return self._whole().raw

    @raw.setter
    def raw(self, v) -> None:
        local = self._whole()
        local.raw = v
        self._block.write(0, bytes(local))

    # -- arrays
    @property
    def _type_(self):
        return self._ctype._type_

    @property
    def _length_(self):
        return self._ctype._length_

    def __len__(self) -> int:
        return self._ctype._length_

    def _elem(self, i):
        i = operator.index(i)
        n = self._ctype._length_
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("invalid index")
        return i, ctypes.sizeof(self._ctype._type_)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self._whole()[i]
        i, size = self._elem(i)
        return (self._ctype._type_ * 1).from_buffer_copy(self._read(i * size, size))[0]

    def __setitem__(self, i, value) -> None:
        if isinstance(i, slice):
            start, stop, step = i.indices(self._ctype._length_)
            local = self._whole()
            local[i] = value
            idx = range(start, stop, step)
            if not idx:
                return
            size = ctypes.sizeof(self._ctype._type_)
            lo, hi = min(idx) * size, (max(idx) + 1) * size
            self._block.write(lo, bytes(local)[lo:hi])
            return
        i, size = self._elem(i)
        one = (self._ctype._type_ * 1)()
        one[0] = value
        self._block.write(i * size, bytes(one))

    def __iter__(self):
        return iter(self._whole())

    # -- structures and unions
    def __getattr__(self, name):
        fields = [f[0] for f in getattr(self._ctype, "_fields_", ())]
        if name in fields:
            return getattr(self._whole(), name)
        raise AttributeError(f"{type(self).__name__} of {self._ctype.__name__} has no attribute {name!r}")

    def __setattr__(self, name, value) -> None:
        if isinstance(getattr(type(self), name, None), property):  # value, raw
            return object.__setattr__(self, name, value)
        fields = [f[0] for f in getattr(self._ctype, "_fields_", ())]
        if name not in fields:
            raise AttributeError(f"{type(self).__name__} of {self._ctype.__name__}: no field {name!r}")
        field = getattr(self._ctype, name)
        local = self._whole()
        setattr(local, name, value)
        raw = bytes(local)
        if field.size >> 16:  # a bit field: its word is shared with others, write it whole
            lo, hi = field.offset, field.offset + ctypes.sizeof(ctypes.c_uint64)
            hi = min(hi, len(raw))
        else:
            lo, hi = field.offset, field.offset + field.size
        self._block.write(lo, raw[lo:hi])

    def __repr__(self) -> str:
        return f"<{self._ctype.__name__} of node {self._block.node_id}, through its home>"

    def __reduce__(self):
        t = self._ctype
        if issubclass(t, ctypes.Array):
            return _rebuild_ctype, (t._type_, self._wrapper, t._length_)
        return _rebuild_ctype, (t, self._wrapper, None)

    def _synchronized(self, lock):
        """The standard library's wrapper that fits this object's type."""
        t = self._ctype
        if issubclass(t, ctypes._SimpleCData):
            return _msc.Synchronized(self, lock)
        if issubclass(t, ctypes.Array):
            cls = _msc.SynchronizedString if t._type_ is ctypes.c_char else _msc.SynchronizedArray
            return cls(self, lock)
        cls = _remote_struct_wrappers.get(t)
        if cls is None:
            props = {f[0]: _msc.make_property(f[0]) for f in t._fields_}
            cls = _remote_struct_wrappers[t] = type("Synchronized" + t.__name__, (_msc.SynchronizedBase,), props)
            _msc._ForkingPickler.register(cls, _reduce_synchronized)
        return cls(self, lock)


_remote_struct_wrappers: dict = {}


def _rebuild_synchronized(obj, lock):
    if isinstance(obj, _RemoteCtype):
        return obj._synchronized(lock)
    return _msc.synchronized(obj, lock)


def _reduce_synchronized(s):
    # ForkingPickler's table wins over __reduce__, whose assert_spawning
    # refuses queues and pipes: ours pickle anywhere, the stdlib's as before.
    if isinstance(s._obj.__dict__.get("_wrapper"), SharedBuffer):
        return _rebuild_synchronized, (s._obj, s._lock)
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
