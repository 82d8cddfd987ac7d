"""DragonHPC's native pool, ``dragon.native.pool.Pool``: the same pool as
the ``dragon`` start method's ``multiprocessing.Pool`` (a ProcessGroup of
workers over every node; docs/multiprocessing.md, "Pool"), for programs that
do not go through multiprocessing, with a ``policy`` for where its workers
go (as a ``with Policy(...)`` block around its creation does).

    from dragon.native.pool import Pool
    with Pool(64, policy=Policy(placement=Policy.Placement.HOST_ID, host_id=1)) as p:
        p.map(f, items)
"""

from __future__ import annotations

from dragon.infrastructure.policy import Policy
from dragon.mpbridge.pool import Pool as _Pool
from dragon.mpbridge.pool import WorkerLost


class Pool(_Pool):
    """A pool of worker processes placed by the runtime (see the module's doc)."""

    def __init__(self, processes: int | None = None, initializer=None, initargs=(), maxtasksperchild=None,
                 policy: Policy | None = None):
        super().__init__(processes, initializer, initargs, maxtasksperchild, policy=policy)


__all__ = ["Pool", "WorkerLost"]
