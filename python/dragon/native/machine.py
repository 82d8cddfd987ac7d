"""The runtime's nodes, with DragonHPC's names (``dragon.native.machine``).

    from dragon.native.machine import System, Node, current, cpu_count
    s = System()
    s.nnodes                 # nodes of the runtime
    [Node(h).hostname for h in s.nodes]
    current().h_uid          # the node this process runs on
    cpu_count()              # cpus granted over every node

A node's ``h_uid`` is its node id (0 .. nnodes-1, node 0 hosts the global
services). The table is asked of the runtime once per process: nodes do not
change during a run.
"""

from __future__ import annotations

from dragon._runtime import current_runtime


import os

_cache: list | None = None


def table(rt=None) -> list[dict]:
    """The runtime's nodes, [{node, hostname, cpus, cores}] by node id,
    asked once per process (they do not change during a run)."""
    global _cache
    if _cache is None:
        _cache = (rt or current_runtime()).machine()
    return _cache


def _forget_after_fork() -> None:
    global _cache
    _cache = None


os.register_at_fork(after_in_child=_forget_after_fork)


class Node:
    """One node: ``Node(h_uid)`` or ``Node("hostname")`` (the first node of
    that name: virtual nodes of one machine share it)."""

    def __init__(self, ident: int | str):
        rows = table()
        row = None
        if isinstance(ident, str):
            row = next((r for r in rows if r["hostname"] == ident), None)
        else:
            row = next((r for r in rows if int(r["node"]) == int(ident)), None)
        if row is None:
            raise ValueError(f"Node({ident!r}): no such node in this runtime "
                             f"(nodes {[int(r['node']) for r in rows]}, hosts {sorted({r['hostname'] for r in rows})})")
        self._row = row

    @property
    def h_uid(self) -> int:
        return int(self._row["node"])

    @property
    def hostname(self) -> str:
        return self._row["hostname"]

    name = hostname

    @property
    def num_cpus(self) -> int:
        """Logical cpus the runtime was granted on this node."""
        return int(self._row["cpus"])

    @property
    def num_cores(self) -> int:
        """Physical cores behind them."""
        return int(self._row["cores"])

    def __eq__(self, other) -> bool:
        return isinstance(other, Node) and other.h_uid == self.h_uid

    def __hash__(self) -> int:
        return hash(self.h_uid)

    def __repr__(self) -> str:
        return f"Node(h_uid={self.h_uid}, hostname={self.hostname!r}, num_cpus={self.num_cpus})"


class System:
    """The runtime as a whole."""

    def __init__(self):
        self._rows = table()

    @property
    def nnodes(self) -> int:
        return len(self._rows)

    @property
    def nodes(self) -> list[int]:
        """The nodes' h_uids."""
        return [int(r["node"]) for r in self._rows]

    @property
    def hostnames(self) -> list[str]:
        return [r["hostname"] for r in self._rows]

    @property
    def primary_node(self) -> Node:
        return Node(0)

    def cpu_count(self) -> int:
        return cpu_count()

    def __repr__(self) -> str:
        return f"System(nnodes={self.nnodes})"


def current() -> Node:
    """The node this process runs on."""
    return Node(int(current_runtime().node_id))


def cpu_count() -> int:
    """Logical cpus the runtime was granted, over every node."""
    return sum(int(r["cpus"]) for r in table())


__all__ = ["Node", "System", "cpu_count", "current"]
