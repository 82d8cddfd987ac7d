"""``Pool`` of the ``dragon`` start method: the standard library's front
(apply_async, map, imap, starmap... and their result objects, from
multiprocessing.pool) over Dragon's machinery (docs/multiprocessing.md,
"Pool"):

- the workers are one ProcessGroup (one start request for all of them,
  forked by each node's zygote, placed over every node as the current
  Policy says, ``restart=True`` so a worker that ends is replaced with the
  same rank);
- each worker makes its inbox, a queue on its own node, and says hello with
  it on the pool's result queue (on the parent's node);
- a dispatcher thread of the parent sends tasks to workers with credit (at
  most ``CREDIT`` messages in flight per worker). A message is a batch: the
  tasks waiting are shared out over the workers, up to ``MAX_BATCH`` per
  message, so a burst of small tasks costs one pickle, one channel message
  and one result message per batch, not per task; a worker sends its
  results back at the end of the batch, or as each one is done once the
  batch has run for ``FLUSH_AFTER`` seconds, so a long task's result is
  never held back by the ones after it;
- the parent knows which worker holds which task: when a worker dies (its
  rank says hello again with a new puid, or the group reports the puid
  ended) its tasks fail with ``WorkerLost`` instead of hanging, as the
  standard library's do;
- a result thread sets the results (the standard library's ApplyResult,
  MapResult, IMapIterator objects) and gives the worker its credit back.

``maxtasksperchild``: the dispatcher gives a worker no more than that many
tasks; after them the worker says goodbye and waits for the end of its
inbox, then destroys it and exits with ``RETIRE``, which the group replaces
(exit 0, the end after ``close``, is never restarted).

A worker's inbox is destroyed by the worker (its creator) only after the
parent sent its end (``None``), and the parent touches an inbox only under
that worker's mutex and before it sent the end: no thread of the parent
ever reads or writes a channel that is gone (a destroyed channel's memory
is the pool's again, docs/channels.md).
"""

from __future__ import annotations

import atexit
import os
import pickle
import queue
import threading
import time
import warnings
import weakref
from collections import deque
from multiprocessing import pool as _mp_pool

from dragon.infrastructure.connection import _dumps
from dragon.native.queue import Queue

CREDIT = 2          # messages (batches) in flight per worker
INBOX = CREDIT + 2  # a worker's inbox holds that many (its batches and the end)
MAX_BATCH = 64      # tasks per message at most
FLUSH_AFTER = 0.002  # seconds into a batch after which each result is sent as it is done
RETIRE = 75         # a worker's exit after maxtasksperchild tasks: replaced by the group
HEALTH_PERIOD = 1.0  # seconds without results after which the group is asked who ended

_HELLO, _RESULTS, _RETRY, _BROKEN, _BYE = 0, 1, 3, 4, 5
_NOTHING = object()  # what _take answers for an empty (or ended) inbox

_live: "weakref.WeakSet[Pool]" = weakref.WeakSet()
_WAKE = ("wake",)  # on the task queue: tasks to send again are waiting


class WorkerLost(RuntimeError):
    """The worker running a task ended before it answered."""


def _pack(objs: list):
    """One pickle of a batch's objects, carried inside the message as bytes:
    the keys beside it stay readable when the batch does not unpickle."""
    return pickle.PickleBuffer(_dumps(objs))


def _send_results(results: Queue, rank: int, puid: int, keys: list, outs: list, last: bool) -> None:
    """Results of a batch; ``last``: the batch's final message, which gives
    the worker its credit back."""
    try:
        blob = _pack(outs)
    except Exception:
        # One of them does not pickle: that one becomes the standard
        # library's MaybeEncodingError, the others go as they are.
        fixed = []
        for out in outs:
            try:
                _dumps(out)
            except Exception as e:
                out = (False, _mp_pool.MaybeEncodingError(e, out[1]))
            fixed.append(out)
        blob = _pack(fixed)
    results.put((_RESULTS, rank, puid, (last, keys, blob)))


def _worker(prep, results: Queue, init: bytes, maxtasks, wrap_exception=True) -> None:
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
    # The initializer and its arguments unpickle now that the process has
    # the parent's authkey (a manager's proxy among them connects at once).
    try:
        initializer, initargs = pickle.loads(init)
        if initializer is not None:
            initializer(*initargs)
    except Exception as e:
        import traceback

        traceback.print_exc()
        results.put((_BROKEN, rank, puid, _mp_pool.ExceptionWithTraceback(e, e.__traceback__)))
        results.close()
        results.join_thread()
        os._exit(1)
    inbox = Queue(INBOX)
    results.put((_HELLO, rank, puid, inbox))
    completed = 0
    monotonic = time.monotonic
    reraise = _mp_pool._helper_reraises_exception
    retiring = False
    while True:
        msg = inbox.get()
        if msg is None:
            break
        keys, blob = msg
        try:
            calls = pickle.loads(blob)
        except Exception as e:
            if len(keys) > 1:
                # Which task does not unpickle here? The parent sends them
                # again one by one.
                results.put((_RETRY, rank, puid, keys))
            else:
                _send_results(results, rank, puid, keys, [(False, e)], True)
                completed += 1
            continue
        blob = msg = None
        done_keys, outs = [], []
        start = monotonic()
        final = len(calls) - 1
        for n, (func, args, kwds) in enumerate(calls):
            try:
                out = (True, func(*args, **kwds))
            except Exception as e:
                if wrap_exception and func is not reraise:
                    e = _mp_pool.ExceptionWithTraceback(e, e.__traceback__)
                out = (False, e)
            done_keys.append(keys[n])
            outs.append(out)
            out = func = args = kwds = None
            if n < final and monotonic() - start > FLUSH_AFTER:
                _send_results(results, rank, puid, done_keys, outs, False)
                done_keys, outs = [], []
        _send_results(results, rank, puid, done_keys, outs, True)
        completed += len(calls)
        calls = outs = None
        if not retiring and maxtasks is not None and completed >= maxtasks:
            # (the dispatcher gave it no more than that) Goodbye; the
            # parent answers with the end of the inbox once it will never
            # touch the inbox again, and only then is it destroyed.
            results.put((_BYE, rank, puid, None))
            retiring = True
    inbox.destroy()
    if retiring:
        results.close()
        results.join_thread()
        os._exit(RETIRE)


def _how_ended(code: int | None) -> str:
    if code is None:
        return "how is not known yet"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Worker:
    __slots__ = ("rank", "puid", "inbox", "credit", "inflight", "left", "mutex", "ended")

    def __init__(self, rank, puid, inbox, maxtasks):
        self.rank, self.puid, self.inbox = rank, puid, inbox
        self.mutex = threading.Lock()  # held around every use of the inbox
        self.ended = False  # its end (None) was sent: the worker may destroy the inbox now
        self.credit = CREDIT
        self.inflight: dict[tuple[int, int], tuple] = {}
        self.left = maxtasks  # tasks it may still be given (None: no limit)


class _WorkerView:
    """What ``pool._pool[i]`` is: rank i of the group, whichever process runs
    it now (pid, is_alive(), exitcode, as a Process answers)."""

    __slots__ = ("_pool", "rank")

    def __init__(self, pool, rank):
        self._pool, self.rank = pool, rank

    def _member(self) -> dict | None:
        try:
            procs = self._pool._group._info()["processes"]
        except Exception:
            return None
        for p in procs:
            if p["rank"] == self.rank:
                return p
        return None

    def _field(self, key):
        m = self._member()
        return None if m is None else m.get(key)

    pid = property(lambda self: self._field("pid"))
    puid = property(lambda self: self._field("puid"))
    node = property(lambda self: self._field("node"), doc="The node it runs on.")

    @property
    def name(self):
        return f"PoolWorker-{self.rank}"

    def is_alive(self) -> bool:
        m = self._member()
        return m is not None and m["state"] == "running"

    @property
    def exitcode(self):
        m = self._member()
        if m is None or m["state"] == "running":
            return None
        from dragon.native.process_group import _exit_code

        return _exit_code(m["exit_code"], m["signal"])

    def __repr__(self):
        return f"<dragon PoolWorker rank={self.rank} pid={self.pid}>"


class Pool(_mp_pool.Pool):
    """multiprocessing.Pool over a ProcessGroup (see the module's doc)."""

    def __init__(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None, context=None, *,
                 policy=None):
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
        self._again: deque = deque()  # tasks of dead workers they never took
        self._npending = 0  # tasks the dispatcher holds (its own count, read without the lock)
        self._broken = None  # the exception of a worker's initializer: every task fails with it
        self._group = ProcessGroup(restart=True, name="Pool", policy=policy)
        from multiprocessing import spawn

        prep = spawn.get_preparation_data("PoolWorker")
        prep["authkey"] = bytes(prep["authkey"])  # (an AuthenticationString pickles only into spawn children)
        # The workers' zygote imports the main script once, as each worker
        # would (docs/runtime.md, "Fast start"): a zygote of this program's.
        main_path = prep.get("init_main_from_path")
        env = {"DRAGON_ZYGOTE_MAIN": main_path} if main_path and os.path.isabs(main_path) else None
        self._group.add_process(processes, ProcessTemplate(
            _worker, args=(prep, self._results, bytes(_dumps((initializer, initargs))), maxtasksperchild), env=env))
        # The workers start on the group's thread: the first ones take tasks
        # while later ones are still starting (a pool of hundreds serves in
        # the time of its first worker's start, not of its last's).
        self._group.on_started = self._on_group_started
        try:
            self._group.start(wait=False)
        except BaseException:
            self._group.close()
            self._results.destroy()
            raise
        # len() is what the standard library's chunking reads; each entry
        # answers pid and is_alive() as a Process would.
        self._pool = [_WorkerView(self, r) for r in range(processes)]
        self._task_thread = threading.Thread(target=self._dispatch, name="dragon-pool-tasks", daemon=True)
        self._result_thread = threading.Thread(target=self._collect, name="dragon-pool-results", daemon=True)
        self._task_thread.start()
        self._result_thread.start()
        self._state = _mp_pool.RUN
        _live.add(self)

    # ---- dispatching ---------------------------------------------------------------

    def _workers_with_credit(self) -> list[_Worker]:
        """Waits until a worker has credit; [] once the pool is terminated."""
        with self._lock:
            while True:
                ws = [w for w in self._workers.values() if w.credit > 0 and w.left != 0]
                if ws:
                    return ws
                if self._state == _mp_pool.TERMINATE or self._broken is not None:
                    return []
                self._lock.wait(HEALTH_PERIOD)

    def _dispatch(self) -> None:
        """Takes the task sequences of apply_async, map, imap... in order and
        sends them out in batches. At most MAX_BATCH tasks per worker are
        pulled ahead from a (lazy) sequence."""
        pending: deque = deque()
        again = self._again
        sources = self._taskqueue
        current = None  # [iterator, set_length, count]
        ended = False
        while True:
            # Tasks a dead worker never took go first.
            while again:
                pending.appendleft(again.pop())
            # Pull what is there without waiting, up to a batch per worker.
            room = MAX_BATCH * max(1, len(self._workers) or self._processes)
            while len(pending) < room:
                if current is None:
                    if ended:
                        break
                    try:
                        item = sources.get(block=not pending)
                    except queue.Empty:
                        break
                    if item is None:
                        ended = True
                        break
                    if item is _WAKE:
                        break
                    current = [iter(item[0]), item[1], 0]
                task = next(current[0], None)
                if task is None:
                    if current[1]:
                        current[1](current[2])
                    current = None
                    continue
                current[2] += 1
                pending.append(task)
                task = None  # (no reference outlives the task: CPython's test_release_task_refs)
            if not pending:
                if ended and not again:
                    if not self._cache or self._state == _mp_pool.TERMINATE:
                        return  # close() or terminate(): the result thread ends the workers
                    time.sleep(0.05)  # a worker that dies now may leave tasks to send again
                continue
            self._npending = len(pending)
            ws = self._workers_with_credit()
            if not ws:
                if self._broken is None:
                    return
                while pending:
                    task = pending.popleft()
                    res = self._cache.get(task[0])
                    if res is not None:
                        res._set(task[1], (False, self._broken))
                task = res = None
                continue
            # Shared out over every worker, started or not yet, idle ones
            # first: a few long tasks go one per worker.
            share = max(1, min(MAX_BATCH, -(-len(pending) // max(len(self._workers), self._processes))))
            ws.sort(key=lambda w: -w.credit)
            for w in ws:
                if not pending:
                    break
                n = min(share, len(pending))
                if w.left is not None:
                    n = min(n, w.left)
                batch = [pending.popleft() for _ in range(n)]
                self._send(w, batch)
                batch = None
            self._npending = len(pending)
            if not pending:
                # A worker that said hello while this round was being shared
                # out found tasks pending and left them to it; the round may
                # then have queued a second batch behind a long task of
                # another worker: such a worker, idle, takes it now.
                with self._lock:
                    idle = [w for w in self._workers.values()
                            if w.credit == CREDIT and not w.ended and w.left != 0]
                for w in idle:
                    self._steal_for(w)

    def _send(self, w: _Worker, batch: list) -> None:
        try:
            blob = _pack([t[2:] for t in batch])
        except Exception:
            # Something in the batch does not pickle: that task fails in the
            # caller (as the standard library's), the rest goes.
            good = []
            for task in batch:
                try:
                    _dumps(task[2:])
                    good.append(task)
                except Exception as e:
                    job = self._cache.get(task[0])
                    if job is not None:
                        job._set(task[1], (False, e))
            if not good:
                return
            batch = good
            blob = _pack([t[2:] for t in batch])
        keys = [(t[0], t[1]) for t in batch]
        with self._lock:
            w.credit -= 1
            if w.left is not None:
                w.left -= len(batch)
            for k, task in zip(keys, batch):
                w.inflight[k] = task
        if not self._put(w, (keys, blob)):
            # Its inbox is gone (the worker died: its tasks fail as lost when
            # the group reports it or the replacement says hello) or ended.
            if w.ended:
                self._unsend(w, keys)

    # ---- a worker's inbox: only under its mutex, never after its end ------------------

    @staticmethod
    def _put(w: _Worker, msg) -> bool:
        with w.mutex:
            if w.ended:
                return False
            try:
                w.inbox.put(msg)
                return True
            except Exception:
                return False

    @staticmethod
    def _take(w: _Worker):
        """A message still in w's inbox (the worker has not taken it), or _NOTHING."""
        with w.mutex:
            if w.ended:
                return _NOTHING
            try:
                return w.inbox.get(block=False)
            except Exception:
                return _NOTHING  # empty, or the channel is unreachable

    @staticmethod
    def _end(w: _Worker) -> None:
        """Sends w its end; the parent does not touch w's inbox after this."""
        with w.mutex:
            if w.ended:
                return
            w.ended = True
            try:
                w.inbox.put(None)
            except Exception:
                pass  # gone already (the worker died)

    def _unsend(self, w: _Worker, keys) -> None:
        """Tasks given to w (a message of them, taken back or never
        delivered) go to the dispatcher again."""
        with self._lock:
            tasks = [w.inflight.pop(k) for k in keys if k in w.inflight]
            w.credit += 1
            if w.left is not None:
                w.left += len(tasks)
            self._lock.notify_all()
        if tasks:
            self._again.extendleft(reversed(tasks))
            self._taskqueue.put(_WAKE)

    # ---- results and workers ---------------------------------------------------------

    def _collect(self) -> None:
        """Results and hellos until the pool ends: after close(),
        once every result is in, each worker (and each replacement that says
        hello later) gets the end of its inbox, and the thread ends when no
        member of the group runs any more."""
        period = HEALTH_PERIOD
        checked = time.monotonic()
        while self._state != _mp_pool.TERMINATE:
            if not self._closing and time.monotonic() - checked > HEALTH_PERIOD:
                self._check_health()
                checked = time.monotonic()
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
                    checked = time.monotonic()
                continue
            except Exception:
                if self._state == _mp_pool.TERMINATE:
                    return
                raise
            if kind == _RESULTS:
                last, keys, blob = body
                with self._lock:
                    w = self._workers.get(rank)
                    if w is not None and w.puid == puid:
                        for k in keys:
                            w.inflight.pop(k, None)
                        if last:
                            w.credit += 1
                            self._lock.notify_all()
                            idle = w.credit == CREDIT
                        else:
                            idle = False
                    else:
                        idle = False
                try:
                    outs = pickle.loads(blob)
                except Exception as e:
                    outs = [(False, _mp_pool.MaybeEncodingError(e, "(a result this process cannot unpickle)"))] * len(keys)
                cache = self._cache
                for (job, i), out in zip(keys, outs):
                    res = cache.get(job)
                    if res is not None:
                        res._set(i, out)
                res = body = blob = outs = out = None
                if idle:
                    self._steal_for(w)
            elif kind == _RETRY:
                self._retry(rank, puid, body)
            elif kind == _BROKEN:
                self._break(body)
            elif kind == _HELLO:
                self._hello(rank, puid, body)
            elif kind == _BYE:
                self._bye(rank, puid)

    def _on_group_started(self, error) -> None:
        """The group's start ended (on its thread): one that failed breaks
        the pool, as a raising initializer does."""
        if error is not None:
            self._break(error, stop=False)

    def _break(self, exc, stop: bool = True) -> None:
        """A worker's initializer raised: the pool is broken (the standard
        library's would start workers forever), as concurrent.futures'
        BrokenProcessPool. Its workers are stopped, and every task, sent or
        to come, fails with that exception."""
        if self._broken is not None:
            return
        with self._lock:
            self._broken = exc
            lost = [k for w in self._workers.values() for k in w.inflight]
            for w in self._workers.values():
                w.inflight.clear()
            self._lock.notify_all()
        for job, i in lost:
            res = self._cache.get(job)
            if res is not None:
                res._set(i, (False, exc))
        if not stop:
            return
        try:
            self._group.stop(patience=0.5)
        except Exception:
            pass

    def _retry(self, rank, puid, keys) -> None:
        """A batch the worker could not unpickle: its tasks go again one by
        one, so that only the one at fault fails."""
        with self._lock:
            w = self._workers.get(rank)
            if w is None or w.puid != puid:
                return
            tasks = [w.inflight.pop(k) for k in keys if k in w.inflight]
            w.credit += 1
            if w.left is not None:
                w.left += len(tasks)
        for task in tasks:
            self._send(w, [task])

    def _bye(self, rank, puid) -> None:
        """Worker ``rank`` ran its maxtasksperchild tasks (their results came
        before this, in its order): it gets its end and leaves; the group
        replaces it."""
        with self._lock:
            w = self._workers.get(rank)
            if w is None or w.puid != puid:
                return
            del self._workers[rank]
            stray = bool(w.inflight)
        if stray:
            self._gone(w, "it retired")  # (not expected: tasks it never saw go again)
        self._end(w)

    def _hello(self, rank, puid, inbox) -> None:
        with self._lock:
            old = self._workers.get(rank)
            w = self._workers[rank] = _Worker(rank, puid, inbox, self._maxtasksperchild)
            closing = self._closing
            self._lock.notify_all()
        if old is not None and old.puid != puid:
            self._gone(old, None)
        if closing:
            self._end(w)
        else:
            self._steal_for(w)

    def _steal_for(self, w: _Worker) -> None:
        """Worker ``w`` is idle and nothing waits to be sent: a batch another
        worker has not taken yet (the one queued behind a long task) moves
        to ``w``."""
        if self._npending or not self._taskqueue.empty() or self._again:
            return
        with self._lock:
            busy = [v for v in self._workers.values() if v.credit <= 0 and v is not w]
        for v in busy:
            msg = self._take(v)
            if msg is _NOTHING:
                continue  # it took it already (or it ended)
            if msg is None:
                continue
            keys = msg[0]
            with self._lock:
                if self._workers.get(w.rank) is not w or (w.left is not None and w.left < len(keys)):
                    w = None
                else:
                    for k in keys:
                        task = v.inflight.pop(k, None)
                        if task is not None:
                            w.inflight[k] = task
                    v.credit += 1
                    w.credit -= 1
                    if v.left is not None:
                        v.left += len(keys)
                    if w.left is not None:
                        w.left -= len(keys)
            if w is None:
                self._unsend(v, keys)  # (w ended or may not take them: they go through the dispatcher)
                return
            if not self._put(w, msg) and w.ended:
                self._unsend(w, keys)
            # (a w that died: its tasks fail or go again as any dead worker's)
            return

    def _gone(self, w: _Worker, how: str | None) -> None:
        """Worker ``w`` ended: the batches still in its inbox go to the other
        workers; the tasks it had taken fail with WorkerLost."""
        with self._lock:
            if self._workers.get(w.rank) is w:
                del self._workers[w.rank]
            if not w.inflight:
                return
        untaken = []
        while True:
            msg = self._take(w)
            if msg is _NOTHING:
                break  # empty, or its channel is gone
            if msg is not None:
                untaken.extend(msg[0])
        with self._lock:
            tasks = [w.inflight.pop(k) for k in untaken if k in w.inflight]
            lost = list(w.inflight)
            w.inflight.clear()
        if tasks:
            self._again.extendleft(reversed(tasks))
            self._taskqueue.put(_WAKE)
        if lost and how is None:
            how = _how_ended(dict(self._group.inactive_puids).get(w.puid))
        for job, i in lost:
            res = self._cache.get(job)
            if res is not None:
                res._set(i, (False, WorkerLost(f"the pool's worker rank {w.rank} (puid {w.puid}) ended ({how}) while "
                                               f"running task {i} of job {job}; a new worker took its place")))

    def _check_health(self) -> None:
        if self._group.starting:
            return  # (the group answers once its start has ended)
        try:
            ended = dict(self._group.inactive_puids)
        except Exception:
            return
        with self._lock:
            dead = [w for w in self._workers.values() if w.puid in ended]
        for w in dead:
            self._gone(w, _how_ended(ended[w.puid]))

    # ---- the end -----------------------------------------------------------------------

    def close(self) -> None:
        if self._state == _mp_pool.RUN:
            self._state = _mp_pool.CLOSE
            self._taskqueue.put(None)  # workers end (exit 0, never restarted) after their tasks

    def terminate(self) -> None:
        """Stops the workers now; unfinished results never complete (as the
        standard library's). The pool's threads have ended when it returns."""
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
        me = threading.current_thread()
        for t in (self._task_thread, self._result_thread):
            if t is not me:
                t.join()

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
            _live.discard(self)

    def _repopulate_pool(self) -> None:
        """The group replaces a worker that ends by itself (restart=True):
        nothing to do, kept for code that calls the standard library's."""

    def __reduce__(self):
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __del__(self, _warn=warnings.warn, RUN=_mp_pool.RUN):
        if getattr(self, "_state", None) == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self)

    def __repr__(self):
        return f"<dragon Pool state={self._state} pool_size={self._processes}>"


@atexit.register
def _terminate_live_pools() -> None:
    """At exit, as the standard library's finalizer: pools still running are
    terminated, so that no thread of theirs is inside the runtime's code when
    the interpreter ends."""
    for p in list(_live):
        try:
            p.terminate()
            p.join()
        except Exception:
            pass
