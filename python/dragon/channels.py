"""Channels: bounded message queues in a node's shared memory, usable from
any process of the runtime on any node.

    ch = Channel(capacity=64)            # in this node's pool; this process owns it
    desc = ch.descriptor                 # text: hand it to other processes
    other = Channel.attach(desc)         # anywhere in the runtime
    other.send(b"hello", timeout=1.0)
    ch.recv(timeout=None)                # -> b"hello"

``send``/``recv`` block up to ``timeout`` seconds (None: forever, 0: try
once) and raise ``TimeoutError`` (``DragonTimeoutError``) when they could
not; nothing was sent or received then. Messages of one sender arrive in
the order sent. A channel on another node is reached through the agents;
there a ``send`` without a timeout returns once the message is on its way
(docs/channels.md). ``poll`` waits on several channels of this node.
"""

from __future__ import annotations

from typing import Iterable

from dragon import _core
from dragon._runtime import current_runtime

READABLE = _core.READABLE
WRITABLE = _core.WRITABLE


class Channel:
    """A channel of the runtime (see the module's doc)."""

    def __init__(self, capacity: int = 256, block_size: int = 496, *, _core_channel: _core.Channel | None = None):
        self._ch = _core_channel if _core_channel is not None else _core.Channel.create(
            current_runtime(), capacity=int(capacity), block_size=int(block_size))
        # The hot pair goes straight to _core (same signatures as the methods
        # below, which document them): no Python frame per message.
        self.send = self._ch.send
        self.recv = self._ch.recv

    @classmethod
    def attach(cls, descriptor: str) -> "Channel":
        """The channel a descriptor (``Channel.descriptor`` of its creator) names."""
        return cls(_core_channel=_core.Channel.attach(current_runtime(), str(descriptor)))

    @property
    def descriptor(self) -> str:
        return self._ch.descriptor

    @property
    def node_id(self) -> int:
        return self._ch.node_id

    @property
    def is_local(self) -> bool:
        return self._ch.is_local

    def send(self, data, timeout: float | None = None) -> None:
        """Sends a copy of ``data`` (bytes, bytearray, memoryview, any
        contiguous buffer)."""
        self._ch.send(data, timeout)

    def recv(self, timeout: float | None = None) -> bytes:
        """The next message."""
        return self._ch.recv(timeout)

    def flush(self, timeout: float | None = None) -> None:
        """Waits until this process's sends without a timeout to channels of
        other nodes have arrived; raises the first failure not yet reported."""
        self._ch.flush(timeout)

    def queued(self) -> int:
        """Messages in the channel now (a channel of this node)."""
        return self._ch.queued()

    @property
    def capacity(self) -> int:
        return self._ch.capacity()

    def destroy(self) -> None:
        """Frees the channel (its creator only, once nobody uses it)."""
        self._ch.destroy()

    def __enter__(self) -> "Channel":
        return self

    def __exit__(self, *exc) -> None:
        if self._ch.owned:
            self.destroy()

    def __reduce__(self):
        # Pickled (say, as an argument of a Python-callable member), a channel
        # travels as its descriptor and attaches on the other side.
        return (Channel.attach, (self.descriptor,))

    def __repr__(self) -> str:
        return f"Channel(node={self.node_id}, local={self.is_local})"


def poll(channels: Iterable[Channel | tuple[Channel, int]], timeout: float | None = None) -> list[int]:
    """Waits until one of this node's channels is ready. Items are channels
    (READABLE) or (channel, READABLE|WRITABLE) pairs; returns each one's
    ready events (all 0 on timeout)."""
    items = [(c._ch, READABLE) if isinstance(c, Channel) else (c[0]._ch, int(c[1])) for c in channels]
    return _core.poll(items, timeout)


__all__ = ["Channel", "poll", "READABLE", "WRITABLE"]
