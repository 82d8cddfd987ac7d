"""``multiprocessing.connection.wait`` over Dragon connections too.

A Dragon connection is a channel, not a file descriptor. ``wait`` therefore
sorts what it is given:

- only descriptors (process sentinels, stdlib connections, sockets): the
  standard library's ``wait``, unchanged;
- only Dragon connections whose channels are on this node: one
  ``dragon._core.poll`` over them, sleeping in the channels' futex, no
  polling loop;
- anything else (a channel of another node, or channels and descriptors
  mixed): rounds that look at everything without blocking, sleeping between
  rounds in the descriptors' ``select`` (or the local channels' poll) for a
  slice that grows from 50 us to 5 ms while nothing happens.

The answer keeps the order of the list, as the stdlib's does.
"""

from __future__ import annotations

import sys
import time

_std_wait = None
_SLICE_MIN = 0.00005
_SLICE_MAX = 0.005


def _is_dragon(o) -> bool:
    mod = sys.modules.get("dragon.infrastructure.connection")
    return mod is not None and isinstance(o, mod.Connection)  # none exist before it is imported


def _ready_now(conns) -> list:
    out = []
    for c in conns:
        if c._closed:
            raise OSError("handle is closed")
        if c._in is None:
            raise OSError("connection is write-only")
        if c._ready(0):
            out.append(c)
    return out


def wait(object_list, timeout=None):
    """Waits until an object of the list is ready; returns those that are
    (see the module's doc)."""
    objs = list(object_list)
    conns = [o for o in objs if _is_dragon(o)]
    if not conns:
        return _std_wait(objs, timeout)
    from dragon import _core

    others = [o for o in objs if not _is_dragon(o)]
    deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
    all_local = not others and all(c._in is not None and c._in.is_local for c in conns)
    pause = _SLICE_MIN
    while True:
        ready = set(_ready_now(conns))
        if others:
            ready.update(_std_wait(others, 0))
        left = None if deadline is None else deadline - time.monotonic()
        if ready or (left is not None and left <= 0):
            return [o for o in objs if o in ready]
        if all_local:
            # Sleep until a message (or a control record) arrives in one of
            # them, then look again: a control record alone is not "ready".
            _core.poll([(c._in, _core.READABLE) for c in conns], left)
            continue
        step = pause if left is None else min(pause, left)
        if others:
            _std_wait(others, step)
        else:
            local = [(c._in, _core.READABLE) for c in conns if c._in.is_local]
            if local:
                _core.poll(local, step)
            else:
                time.sleep(step)
        pause = min(pause * 2, _SLICE_MAX)


def patch(connection_module) -> None:
    global _std_wait
    if _std_wait is None:
        _std_wait = connection_module.wait
        wait.__wrapped__ = _std_wait
        connection_module.wait = wait
