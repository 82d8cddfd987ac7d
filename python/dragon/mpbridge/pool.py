"""``Pool`` of the ``dragon`` start method (issue 21; WORK IN PROGRESS, not
hooked into the context yet): the standard library's front (apply_async,
map, imap, starmap... and their result objects, from multiprocessing.pool)
over Dragon's machinery:

- the workers are one ProcessGroup (one start request for all of them,
  forked by each node's zygote, spread over the nodes, ``restart=True`` so a
  worker that dies is replaced with the same rank);
- each worker makes its inbox, a queue on its own node, and says hello with
  it on the pool's result queue (on the parent's node);
- a dispatcher thread of the parent sends each task to a worker with credit
  (at most ``CREDIT`` tasks in flight per worker), so the parent knows which
  worker holds which task: when a worker dies (its rank says hello with a
  new puid, or the group reports the puid ended) its tasks fail with
  ``WorkerLost`` instead of hanging, as the standard library's do;
- a result thread sets the results (the standard library's ApplyResult,
  MapResult, IMapIterator objects) and gives the worker its credit back.

``maxtasksperchild``: a worker that has done its tasks says goodbye and
exits with RETIRE, which the group replaces (exit 0 is never restarted).
"""

from __future__ import annotations

import os
import queue
import threading
from multiprocessing import pool as _mp_pool

from dragon.native.queue import Queue

CREDIT = 2         # tasks in flight per worker
RETIRE = 75        # a worker's exit after maxtasksperchild tasks: replaced by the group
HEALTH_PERIOD = 1.0

_HELLO, _RESULT, _BYE = 0, 1, 2


class WorkerLost(RuntimeError):
    """The worker running a task ended before it answered."""


def _worker(prep, results: Queue, initializer, initargs, maxtasks, wrap_exception=True) -> None:
    # As a spawn child: the parent's sys.path, directory and main module (as
    # __mp_main__), so that tasks naming functions of __main__ unpickle.
    from multiprocessing import process, spawn

    process.current_process()._inheriting = True
    try:
        spawn.prepare(prep)
    finally:
        del process.current_process()._inheriting
    rank = int(os.environ.get("DRAGON_RANK", "0"))
    puid = int(os.environ.get("DRAGON_PUID", "0"))
    inbox = Queue()
    results.put((_HELLO, rank, puid, inbox))
    if initializer is not None:
        initializer(*initargs)
    completed = 0
    while maxtasks is None or completed < maxtasks:
        task = inbox.get()
        if task is None:
            break
        job, i, func, args, kwds = task
        try:
            result = (True, func(*args, **kwds))
        except Exception as e:
            if wrap_exception and func is not _mp_pool._helper_reraises_exception:
                e = _mp_pool.ExceptionWithTraceback(e, e.__traceback__)
            result = (False, e)
        try:
            results.put((_RESULT, rank, puid, (job, i, result)))
        except Exception as e:
            wrapped = _mp_pool.MaybeEncodingError(e, result[1])
            results.put((_RESULT, rank, puid, (job, i, (False, wrapped))))
        task = job = result = func = args = kwds = None
        completed += 1
    if maxtasks is not None and completed >= maxtasks:
        results.put((_BYE, rank, puid, None))
        inbox.destroy()
        os._exit(RETIRE)
    inbox.destroy()


class _Worker:
    __slots__ = ("rank", "puid", "inbox", "credit", "inflight", "retiring")

    def __init__(self, rank, puid, inbox):
        self.rank, self.puid, self.inbox = rank, puid, inbox
        self.credit = CREDIT
        self.inflight: dict[tuple[int, int], object] = {}
        self.retiring = False


class Pool(_mp_pool.Pool):
    """multiprocessing.Pool over a ProcessGroup (see the module's doc)."""

    def __init__(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None, context=None):
        from dragon.native.machine import cpu_count
        from dragon.native.process import ProcessTemplate
        from dragon.native.process_group import ProcessGroup

        self._pool = []
        self._state = _mp_pool.INIT
        self._ctx = context
        self._taskqueue = queue.SimpleQueue()
        self._change_notifier = queue.SimpleQueue()
        self._cache = _mp_pool._PoolCache(notifier=self._change_notifier)
        self._maxtasksperchild = maxtasksperchild
        self._initializer = initializer
        self._initargs = initargs
        if processes is None:
            processes = cpu_count() or 1
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None and (not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._processes = processes
        self._joined = False
        self._closing = False
        self._results = Queue()
        self._lock = threading.Condition()
        self._workers: dict[int, _Worker] = {}
        self._ready = []  # ranks with credit
        self._group = ProcessGroup(restart=True, name="Pool")
        from multiprocessing import spawn

        prep = spawn.get_preparation_data("PoolWorker")
        prep["authkey"] = bytes(prep["authkey"])  # (an AuthenticationString pickles only into spawn children)
        self._group.add_process(processes, ProcessTemplate(
            _worker, args=(prep, self._results, initializer, initargs, maxtasksperchild)))
        self._group.start()
        self._pool = [None] * processes  # len() is what the standard library's chunking reads
        self._task_thread = threading.Thread(target=self._dispatch, name="dragon-pool-tasks", daemon=True)
        self._result_thread = threading.Thread(target=self._collect, name="dragon-pool-results", daemon=True)
        self._task_thread.start()
        self._result_thread.start()
        self._state = _mp_pool.RUN

    # ---- dispatching ---------------------------------------------------------------

    def _take_worker(self) -> _Worker | None:
        with self._lock:
            while True:
                for w in self._workers.values():
                    if w.credit > 0 and not w.retiring:
                        w.credit -= 1
                        return w
                if self._state == _mp_pool.TERMINATE:
                    return None
                self._lock.wait(HEALTH_PERIOD)

    def _dispatch(self) -> None:
        for taskseq, set_length in iter(self._taskqueue.get, None):
            i = -1
            for i, task in enumerate(taskseq):
                w = self._take_worker()
                if w is None:
                    return
                key = (task[0], task[1])
                with self._lock:
                    w.inflight[key] = task
                try:
                    w.inbox.put(task)
                except Exception as e:
                    with self._lock:
                        w.inflight.pop(key, None)
                        w.credit += 1
                        self._lock.notify_all()
                    job = self._cache.get(task[0])
                    if job is not None:
                        job._set(task[1], (False, e))
            if set_length:
                set_length(i + 1)
        # close() or terminate(): the result thread ends the workers.

    # ---- results and workers ---------------------------------------------------------

    def _collect(self) -> None:
        """Results, hellos and goodbyes until the pool ends: after close(),
        once every result is in, each worker (and each replacement that says
        hello later) gets the end of its inbox, and the thread ends when no
        member of the group runs any more."""
        period = HEALTH_PERIOD
        while self._state != _mp_pool.TERMINATE:
            if self._state == _mp_pool.CLOSE and not self._closing and not self._cache:
                with self._lock:
                    self._closing = True
                    workers = list(self._workers.values())
                for w in workers:
                    self._end(w)
                period = 0.1
            try:
                kind, rank, puid, body = self._results.get(timeout=period)
            except queue.Empty:
                if self._closing:
                    try:
                        if not self._group.puids:
                            return
                    except Exception:
                        return
                else:
                    self._check_health()
                continue
            if kind == _HELLO:
                self._hello(rank, puid, body)
            elif kind == _RESULT:
                job, i, obj = body
                with self._lock:
                    w = self._workers.get(rank)
                    if w is not None and w.puid == puid and w.inflight.pop((job, i), None) is not None:
                        w.credit += 1
                        self._lock.notify_all()
                res = self._cache.get(job)
                if res is not None:
                    res._set(i, obj)
            elif kind == _BYE:
                with self._lock:
                    w = self._workers.get(rank)
                    if w is not None and w.puid == puid:
                        w.retiring = True

    @staticmethod
    def _end(w: _Worker) -> None:
        try:
            w.inbox.put(None)
        except Exception:
            pass  # gone already

    def _hello(self, rank, puid, inbox) -> None:
        with self._lock:
            old = self._workers.get(rank)
            w = self._workers[rank] = _Worker(rank, puid, inbox)
            closing = self._closing
            self._lock.notify_all()
        if old is not None and old.inflight:
            self._lost(old, "was replaced")
        if closing:
            self._end(w)

    def _lost(self, w: _Worker, how: str) -> None:
        for (job, i), _task in list(w.inflight.items()):
            res = self._cache.get(job)
            if res is not None:
                res._set(i, (False, WorkerLost(f"the pool's worker rank {w.rank} (puid {w.puid}) ended while running "
                                               f"task {i} of job {job} ({how}); the pool replaced it")))
        w.inflight.clear()

    def _check_health(self) -> None:
        try:
            ended = dict(self._group.inactive_puids)
        except Exception:
            return
        with self._lock:
            dead = [w for w in self._workers.values() if w.puid in ended and w.inflight]
        for w in dead:
            self._lost(w, f"exit code {ended[w.puid]}")

    # ---- the end -----------------------------------------------------------------------

    def close(self) -> None:
        if self._state == _mp_pool.RUN:
            self._state = _mp_pool.CLOSE
            self._taskqueue.put(None)  # workers end (exit 0, never restarted) after their tasks

    def terminate(self) -> None:
        """Stops the workers now; unfinished results never complete (as the
        standard library's)."""
        first = self._state != _mp_pool.TERMINATE
        self._state = _mp_pool.TERMINATE
        if first:
            self._taskqueue.put(None)
            with self._lock:
                self._lock.notify_all()
            try:
                self._group.stop(patience=0.5)
            except Exception:
                pass

    def join(self) -> None:
        if self._state == _mp_pool.RUN:
            raise ValueError("Pool is still running")
        if self._state not in (_mp_pool.CLOSE, _mp_pool.TERMINATE):
            raise ValueError("In unknown state")
        self._task_thread.join()
        self._result_thread.join()
        if not self._joined:
            self._joined = True
            try:
                self._group.join()
            except Exception:
                pass
            self._group.close()
            self._results.destroy()

    def __reduce__(self):
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __del__(self, _warn=None, RUN=_mp_pool.RUN):
        pass

    def __repr__(self):
        return f"<dragon Pool state={self._state} pool_size={self._processes}>"


