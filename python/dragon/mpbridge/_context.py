"""The ``dragon`` context class and the patches of ``BaseContext`` that route
its factories to Dragon objects. Imported by :func:`dragon.mpbridge.install`
right after ``multiprocessing.context``; it imports nothing of the runtime
until a factory is called."""

from __future__ import annotations

import sys

from multiprocessing import context, process

# BaseContext methods the dragon context answers itself.
PATCHED = ("Pipe", "Queue", "JoinableQueue", "SimpleQueue", "cpu_count", "Pool")
# ... and the synchronisation objects and shared ctypes (mpbridge/synchronize.py).
SYNC = ("Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Event", "Barrier", "Value", "Array",
        "RawValue", "RawArray")


class DragonProcess(process.BaseProcess):
    """A Process of the ``dragon`` start method: a process of the runtime."""

    _start_method = "dragon"

    @staticmethod
    def _Popen(process_obj):
        from dragon.mpbridge.popen import Popen

        return Popen(process_obj)

    @staticmethod
    def _after_fork():
        pass  # started fresh, as spawn's children: nothing inherited to reset


class DragonContext(context.BaseContext):
    _name = "dragon"
    Process = DragonProcess


def _pipe(duplex=True):
    from dragon.infrastructure.connection import Pipe

    return Pipe(duplex)


def _queue(maxsize=0):
    from dragon.mpbridge.queues import Queue

    return Queue(maxsize)


def _joinable_queue(maxsize=0):
    from dragon.mpbridge.queues import JoinableQueue

    return JoinableQueue(maxsize)


def _pool(processes=None, initializer=None, initargs=(), maxtasksperchild=None):
    from multiprocessing import get_context

    from dragon.mpbridge.pool import Pool

    return Pool(processes, initializer, initargs, maxtasksperchild, context=get_context("dragon"))


def _simple_queue():
    from dragon.mpbridge.queues import SimpleQueue

    return SimpleQueue()


def _cpu_count():
    from dragon.native.machine import cpu_count

    return cpu_count()


def _sync(name):
    def make(*args, **kwargs):
        from dragon.mpbridge import synchronize

        return getattr(synchronize, name)(*args, **kwargs)

    return make


_DRAGON = {"Pipe": _pipe, "Queue": _queue, "JoinableQueue": _joinable_queue, "SimpleQueue": _simple_queue, "Pool": _pool,
           "cpu_count": _cpu_count, **{name: _sync(name) for name in SYNC}}


def _routed(name, original):
    dragon_impl = _DRAGON[name]

    def method(self, *args, **kwargs):
        if isinstance(self.get_context(), DragonContext):
            return dragon_impl(*args, **kwargs)
        return original(self, *args, **kwargs)

    method.__name__ = original.__name__
    method.__qualname__ = original.__qualname__
    method.__doc__ = original.__doc__
    method.__wrapped__ = original
    return method


def patch_base_context(base) -> None:
    for name in PATCHED + SYNC:
        original = base.__dict__[name]
        if getattr(original, "__wrapped__", None) is not None:
            continue
        setattr(base, name, _routed(name, original))


def patch_process_init() -> None:
    """A Process remembers the ``with Policy(...)`` blocks around its
    creation (DragonHPC's rule), for the placement at start()."""
    original = process.BaseProcess.__init__
    if getattr(original, "__wrapped__", None) is not None:
        return

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        policy = sys.modules.get("dragon.infrastructure.policy")  # no blocks before it is imported
        self._dragon_policy = policy.Policy.thread_policy() if policy is not None else None

    __init__.__wrapped__ = original
    __init__.__doc__ = original.__doc__
    process.BaseProcess.__init__ = __init__
