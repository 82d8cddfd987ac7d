"""Messages larger than ``LARGE`` bytes, for pipes and queues.

A pool hands out power-of-two blocks no larger than itself, so one message
of 1 GiB would need a 2 GiB block, and a queue could not carry an object
larger than a node's pool. A large message therefore travels in chunks of
``CHUNK`` bytes (exact blocks) through a *side channel* the sender creates
in its own node's pool, ``WINDOW`` chunks deep:

1. one small record goes into the pipe or queue::

       ff fc | u64 size | u32 chunks | u32 pid | u64 puid | boot id | side channel descriptor

2. the chunks follow into the side channel, as the receiver takes them.

The record is the message: whoever receives it (one receiver, on any node)
attaches the side channel and reads the chunks, which frees their blocks as
it goes, so an object larger than the pool streams through it. A receiver
waiting for a chunk checks every ``PATIENCE`` seconds that the sender lives
(same host: its pid, checked by its puid); if it died mid-send, ``fetch``
drops that message and the pipe or queue goes on: no half message is ever
returned.

The sender destroys a side channel once it sees it drained (at its next
large send and at exit); one still unread when its sender exits keeps its
last chunks until it is read and the runtime ends.
"""

from __future__ import annotations

import os
import struct
import threading

from dragon import _core
from dragon.infrastructure import host

LARGE = 8 << 20   # larger than this travels in chunks
CHUNK = 4 << 20
WINDOW = 4        # chunks in flight per message
PATIENCE = 1.0
RECORD = b"\xff\xfc"
_HEAD = struct.Struct("<QIIQ36s")

_lock = threading.Lock()
_sides: list = []
_hooked = False


def _sweep(final: bool = False) -> None:
    with _lock:
        keep = []
        for side in _sides:
            try:
                drained = side.queued() == 0
            except Exception:
                continue  # destroyed already, or the runtime is gone
            if drained:
                try:
                    side.destroy()
                except Exception:
                    pass
            else:
                keep.append(side)
        _sides[:] = [] if final else keep


def _at_exit() -> None:
    _sweep(final=True)


def send(ch, data, timeout: float | None) -> None:
    """Sends ``data`` (bytes-like) on ``ch``: as one message, or as a record
    and chunks when it is larger than LARGE. Raises what ``ch.send`` raises
    for the record (e.g. a timeout); nothing was sent then."""
    m = memoryview(data)
    if m.nbytes <= LARGE:
        ch.send(m, timeout)
        return
    global _hooked
    from dragon._runtime import at_exit, current_runtime

    if not _hooked:
        at_exit(_at_exit)
        _hooked = True
    _sweep()
    if m.itemsize != 1 or m.ndim != 1:
        m = m.cast("B") if m.c_contiguous else memoryview(m.tobytes())
    total = m.nbytes
    n = (total + CHUNK - 1) // CHUNK
    side = _core.Channel.create(current_runtime(), capacity=WINDOW, block_size=0)
    head = _HEAD.pack(total, n, os.getpid(), int(os.environ.get("DRAGON_PUID") or 0), host.boot_id().encode())
    try:
        ch.send(RECORD + head + side.descriptor.encode(), timeout)
    except BaseException:
        side.destroy()
        raise
    for i in range(n):
        side.send(m[i * CHUNK:(i + 1) * CHUNK], None)
    with _lock:
        _sides.append(side)  # only now: a sweep must not take a side being filled for drained


def _alive(pid: int, puid: int, boot: str) -> bool:
    """Whether the sender still runs (unknown, so True, on another host)."""
    if not boot or boot != host.boot_id():
        return True
    return host.is_process(pid, puid)


def is_record(data) -> bool:
    return data[:2] == RECORD


def fetch(record) -> bytearray | None:
    """The message a record stands for, read from its side channel; None
    if its sender died before sending all of it (the caller drops it)."""
    from dragon._runtime import current_runtime

    total, n, pid, puid, boot = _HEAD.unpack_from(record, 2)
    boot = boot.rstrip(b"\0").decode()
    desc = bytes(record[2 + _HEAD.size:]).decode()
    side = _core.Channel.attach(current_runtime(), desc)
    out = bytearray(total)
    view = memoryview(out)
    off = 0
    for _ in range(n):
        while True:
            try:
                chunk = side.recv(PATIENCE)
                break
            except _core.DragonTimeoutError:
                if not _alive(pid, puid, boot):
                    return None
        view[off:off + len(chunk)] = chunk
        off += len(chunk)
    if off != total:
        raise EOFError(f"a large message came short: {off} of {total} bytes")
    return out
