"""The first code of a ``dragon`` multiprocessing child (run by
dragon._runner): what ``multiprocessing.spawn._main`` does, from the bytes
the parent pickled instead of a pipe."""

from __future__ import annotations

import os
import sys

from dragon.infrastructure import host


def _parent_sentinel(parent: str):
    """A pidfd of the parent when it runs on this host (same boot id);
    elsewhere None (parent_process().sentinel is then unknown)."""
    try:
        pid, boot = parent.split(":", 1)
        if boot and boot == host.boot_id():
            return os.pidfd_open(int(pid))
    except (ValueError, OSError, AttributeError):
        pass
    return None


def _join_tracker(spec: str) -> None:
    """Writes to the parent's resource tracker (same host), as spawn's
    children get its fd: a pipe reopened through /proc."""
    try:
        pid, fd = spec.split(":", 1)
        from multiprocessing import resource_tracker

        resource_tracker._resource_tracker._fd = os.open(f"/proc/{int(pid)}/fd/{int(fd)}", os.O_WRONLY)
    except (ValueError, OSError):
        pass  # the child starts its own tracker when it needs one


def main(data: bytes) -> None:
    import io

    from multiprocessing import process, spawn
    from multiprocessing.reduction import ForkingPickler  # noqa: F401  (registers the reducers)

    import dragon.mpbridge as bridge

    bridge.install()
    tracker = os.environ.pop("DRAGON_MP_TRACKER", "")
    if tracker:
        _join_tracker(tracker)
    import pickle

    fp = io.BytesIO(data)
    process.current_process()._inheriting = True
    try:
        prep = pickle.load(fp)
        spawn.prepare(prep)
        self = pickle.load(fp)
    finally:
        del process.current_process()._inheriting
    exitcode = self._bootstrap(parent_sentinel=_parent_sentinel(os.environ.pop("DRAGON_MP_PARENT", "")))
    sys.exit(exitcode)
