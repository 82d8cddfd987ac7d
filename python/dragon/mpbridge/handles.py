"""``multiprocessing.reduction.send_handle``/``recv_handle`` over Dragon
connections too.

The standard library passes a file descriptor as ancillary data on the
connection's own Unix socket. A Dragon connection is a channel: here the
descriptor travels as the standard library's spawn start method passes
descriptors to its children, through the sender's resource sharer
(``multiprocessing.resource_sharer.DupFd``: the sender keeps a duplicate
and a listener thread that gives it to the first process that asks with the
runtime's authkey), and what goes over the connection is the ticket to it.
So, as with spawn's:

- the receiver gets its own descriptor; the sender may close its own at once;
- the sender's process must still run when the receiver calls
  ``recv_handle`` (over a socket the kernel held it meanwhile);
- both processes must be on one host (a descriptor means nothing on
  another): a ticket from another host raises ``OSError`` naming it.

``recv_handle`` of a message that is not a ticket raises ``RuntimeError``,
as the standard library's does for data without a descriptor. Other
connections (sockets, stdlib pipes) get the standard library's functions
unchanged.
"""

from __future__ import annotations

import socket

_std_send = None
_std_recv = None


class _Ticket:
    """What ``send_handle`` sends: a resource sharer's claim and the host
    it is valid on."""

    __slots__ = ("dup", "host")

    def __init__(self, dup, host: str):
        self.dup = dup
        self.host = host

    def __reduce__(self):
        return (_Ticket, (self.dup, self.host))


def _is_dragon(conn) -> bool:
    from dragon.infrastructure.connection import Connection

    return isinstance(conn, Connection)


def send_handle(conn, handle, destination_pid):
    """Sends descriptor ``handle`` to the process reading ``conn``."""
    if not _is_dragon(conn):
        return _std_send(conn, handle, destination_pid)
    from multiprocessing import resource_sharer

    conn.send(_Ticket(resource_sharer.DupFd(handle), socket.gethostname()))


def recv_handle(conn):
    """The descriptor the next message of ``conn`` carries."""
    if not _is_dragon(conn):
        return _std_recv(conn)
    t = conn.recv()
    if not isinstance(t, _Ticket):
        raise RuntimeError(f"received a {type(t).__name__}, not a descriptor sent with send_handle")
    here = socket.gethostname()
    if t.host != here:
        raise OSError(f"a file descriptor cannot pass between hosts: it was sent on {t.host!r}, this is {here!r}")
    return t.dup.detach()


def patch(reduction_module) -> None:
    global _std_send, _std_recv
    if _std_send is None and hasattr(reduction_module, "send_handle"):
        _std_send, _std_recv = reduction_module.send_handle, reduction_module.recv_handle
        send_handle.__wrapped__ = _std_send
        recv_handle.__wrapped__ = _std_recv
        reduction_module.send_handle = send_handle
        reduction_module.recv_handle = recv_handle
