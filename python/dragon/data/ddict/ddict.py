"""DDict: a dictionary sharded over manager processes on the runtime's
nodes (DragonHPC's ``dragon.data.ddict.DDict``; design, wire and checkpoints
in docs/ddict.md).

    d = DDict(managers_per_node=1, n_nodes=2, total_mem=1 << 30)
    d["k"] = obj; d["k"]; "k" in d; len(d); d.pop("k")
    s = d.serialize(); e = DDict.attach(s)     # any process, any node
    d.destroy()

A DDict pickles as its serialized form, so it can be passed to
multiprocessing children and ProcessGroup members, which attach.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import weakref

from dragon import _core
from dragon.data.ddict import wire
from dragon.exceptions import DragonError
from dragon.infrastructure import host, large

REPLY_CAPACITY = 64
REPLY_BLOCK = 1536
SLICE = 1.0          # a waiting client checks its manager this often
START_TIMEOUT = 120.0
DEFAULT_MEM = 1 << 30

_Timeout = _core.DragonTimeoutError
_poll = _core.poll
_WAIT = os.environ.get("DRAGON_DDICT_WAIT", "poll")   # "recv": wait in a blocking recv instead
_MIRROR = os.environ.get("DRAGON_DDICT_MIRROR", "1") != "0"   # "0": every read asks its manager
_getpid = os.getpid


class DDictError(DragonError):
    """An error of the distributed dictionary."""


class DDictFull(DDictError):
    """A manager has no room for a key and value (nothing stored was lost)."""


class DDictManagerDied(DDictError):
    """A manager of the dictionary is no longer running."""


class DDictTimeout(DDictError, TimeoutError):
    """A manager did not answer within the dictionary's timeout."""


class DDictCheckpointSync(DDictError):
    """The client's checkpoint is older than the managers' working set."""


class DDictKeyError(DDictError, KeyError):
    """A key is not in the dictionary."""

    def __str__(self) -> str:
        return Exception.__str__(self)


_MISSING = object()

# Managers' groups this process created and has not destroyed: kept alive
# until destroy() or the interpreter's exit (ProcessGroup's own exit hook
# stops them then), not until the creating DDict object is collected, as
# other processes may be using the dictionary through serialize().
_owned: set = set()


def _finalize_owner(pg, managers) -> None:
    """After destroy: the managers' group is closed (those still running are stopped)."""
    _owned.discard(pg)
    try:
        if pg is not None:
            pg.close(patience=2.0)
    except Exception:
        pass


class DDict:
    """A distributed dictionary (see the module's doc).

    :param managers_per_node: manager processes on each node
    :param n_nodes: nodes it spans (the first n_nodes of the runtime)
    :param total_mem: bytes of keys and values it holds, split evenly over the managers
    :param working_set_size: checkpoints each manager keeps
    :param wait_for_keys: a get of a missing key waits until it is written at its checkpoint
    :param wait_for_writers: accepted for DragonHPC compatibility; no effect
    :param policy: accepted; managers go on the first n_nodes nodes
    :param timeout: seconds an operation may wait for its manager (None: while it lives)
    :param name: a name for messages
    :param read_only: this client only reads (writes raise)
    """

    def __init__(self, managers_per_node: int = 1, n_nodes: int = 1, total_mem: int = DEFAULT_MEM, *,
                 working_set_size: int = 1, wait_for_keys: bool = False, wait_for_writers: bool = False,
                 policy=None, timeout: float | None = None, name: str | None = None, read_only: bool = False,
                 _meta: dict | None = None):
        self._pg = None
        self._chkpt = 0
        self._only: int | None = None
        self._read_only = bool(read_only)
        if _meta is not None:
            self._meta = _meta
        else:
            self._meta = self._create(int(managers_per_node), int(n_nodes), int(total_mem), int(working_set_size),
                                      bool(wait_for_keys), timeout, name)
        self._timeout = self._meta["timeout"] if _meta is not None else timeout
        self._reset_client()

    # ---- creation -------------------------------------------------------------------

    def _create(self, mpn, n_nodes, total_mem, wss, wait_for_keys, timeout, name) -> dict:
        from dragon._runtime import current_runtime
        from dragon.data.ddict import manager
        from dragon.infrastructure.policy import Policy
        from dragon.native.process import ProcessTemplate
        from dragon.native.process_group import ProcessGroup

        if mpn < 1:
            raise ValueError(f"DDict: managers_per_node must be >= 1, got {mpn}")
        if n_nodes < 1:
            raise ValueError(f"DDict: n_nodes must be >= 1, got {n_nodes}")
        if wss < 1:
            raise ValueError(f"DDict: working_set_size must be >= 1, got {wss}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"DDict: timeout must be > 0 seconds or None, got {timeout!r}")
        rt = current_runtime()
        nodes = sorted(n["node"] for n in rt.machine())
        if n_nodes > len(nodes):
            raise ValueError(f"DDict: n_nodes={n_nodes} but the runtime has {len(nodes)} node(s)")
        n = mpn * n_nodes
        cap = total_mem // n
        if cap < 1024:
            raise ValueError(f"DDict: total_mem={total_mem} gives each of {n} managers {cap} bytes; "
                             "at least 1 KiB each is needed")
        name = name or f"ddict-{os.getpid()}-{id(self):x}"
        boot = _core.Channel.create(rt, capacity=max(16, n + 4), block_size=512)
        # A manager that dies takes its shard with it, not the others': the
        # group goes on (clients of its keys get DDictManagerDied).
        pg = ProcessGroup(name=f"DDict {name} managers", ignore_error_on_exit=True)
        try:
            for k in range(n_nodes):
                pol = Policy(placement=Policy.Placement.HOST_ID, host_id=nodes[k])
                for j in range(mpn):
                    i = k * mpn + j
                    pg.add_process(1, ProcessTemplate(manager.serve, args=(
                        i, n, nodes[k], cap, wss, wait_for_keys, name, boot.descriptor), policy=pol))
            pg.start()
            recs: dict[int, dict] = {}
            deadline = time.monotonic() + START_TIMEOUT
            import pickle

            while len(recs) < n:
                try:
                    r = pickle.loads(boot.recv(0.5))
                    recs[r["index"]] = r
                except _Timeout:
                    if pg.inactive_puids:
                        pg.join(5.0)  # raises DragonUserCodeError with the member's traceback
                        raise DDictError(f"DDict {name}: a manager ended before it started: {pg.inactive_puids}")
                    if time.monotonic() > deadline:
                        raise DDictError(f"DDict {name}: {n - len(recs)} of {n} managers did not start "
                                         f"within {START_TIMEOUT:.0f} s")
        except BaseException:
            try:
                pg.close(patience=1.0)
            except Exception:
                pass
            boot.destroy()
            raise
        boot.destroy()
        self._pg = pg
        _owned.add(pg)
        return {"v": 1, "name": name, "managers_per_node": mpn, "nodes": nodes[:n_nodes],
                "managers": [recs[i] for i in range(n)], "capacity": cap, "total_mem": total_mem,
                "working_set_size": wss, "wait_for_keys": wait_for_keys, "timeout": timeout}

    # ---- joining: serialize / attach --------------------------------------------------

    def serialize(self) -> str:
        """Text another process (any node, the C++ client too) attaches with
        ``DDict.attach``."""
        return base64.b64encode(json.dumps(self._meta).encode()).decode()

    @classmethod
    def attach(cls, serialized: str, *, timeout: float | None = _MISSING, read_only: bool = False) -> "DDict":
        """The dictionary ``serialized`` (``serialize()``) names, as a new
        client (with its own ``timeout`` if given; ``read_only``: its writes raise)."""
        try:
            meta = json.loads(base64.b64decode(serialized))
            if meta.get("v") != 1 or not meta["managers"]:
                raise ValueError("not a version-1 dictionary")
        except Exception as e:
            raise ValueError(f"DDict.attach: not a serialized DDict ({e})") from None
        if timeout is not _MISSING:
            meta = dict(meta, timeout=timeout)
        return cls(_meta=meta, read_only=read_only)

    def __reduce__(self):
        return (_attach_view, (self.serialize(), self._chkpt, self._only, self._read_only))

    # ---- the connection to the managers --------------------------------------------

    def _reset_client(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._reply = None
        self._reply_fin = None
        self._mch: dict[int, _core.Channel] = {}
        self._cid: dict[int, int] = {}
        self._seq = 0
        self._boot = host.boot_id()
        self._my_node = None
        self._poll_item = None
        self._mirrors: dict = {}   # manager index -> its read mirror (_core.Mirror), or None: ask it

    def _ensure(self) -> None:
        if self._pid != os.getpid():
            # a forked child: the parent's reply channel and ids are the parent's
            self._reset_client()
        if self._reply is None:
            from dragon._runtime import current_runtime

            rt = current_runtime()
            self._rt = rt
            self._my_node = rt.node_id
            self._reply = _core.Channel.create(rt, capacity=REPLY_CAPACITY, block_size=REPLY_BLOCK)
            self._poll_item = [(self._reply, _core.READABLE)] if _WAIT == "poll" else None
            self._reply_fin = weakref.finalize(self, _release_client, self._reply, self._mch, self._cid)

    def _manager_name(self, i: int) -> str:
        m = self._meta["managers"][i]
        return f"manager {i} of DDict {self._meta['name']} (node {m['node']}, pid {m['pid']}, puid {m['puid']})"

    def _mirror(self, i: int):
        """Manager i's read mirror when it is on this node (of this host), else None."""
        try:
            return self._mirrors[i]
        except KeyError:
            pass
        with self._lock:
            self._ensure()
        mr = None
        m = self._meta["managers"][i]
        if _MIRROR and m.get("mirror") and m["node"] == self._my_node and m["boot"] == self._boot:
            try:
                mr = _core.Mirror.attach(m["mirror"][0], int(m["mirror"][1]))
            except _core.DragonError:
                mr = None   # (gone already: the manager answers, or says it ended)
        self._mirrors[i] = mr
        return mr

    def _from_mirror(self, i: int, kb: bytes):
        """Manager i's read mirror's answer for kb at this client's
        checkpoint: tagged value bytes, False (no such key) or None (ask it)."""
        if self._pid != _getpid():
            return None   # (a forked child: its first request resets the client)
        mr = self._mirror(i)
        return None if mr is None else mr.lookup(kb, self._chkpt)

    def _alive(self, i: int) -> bool:
        m = self._meta["managers"][i]
        if not m["boot"] or m["boot"] != self._boot:
            return True  # another host: cannot tell; the timeout bounds the wait
        return host.is_process(m["pid"], m["puid"])

    def _channel(self, i: int) -> _core.Channel:
        ch = self._mch.get(i)
        if ch is None:
            try:
                ch = _core.Channel.attach(self._rt, self._meta["managers"][i]["desc"])
            except (_core.DragonValueError, _core.DragonNotFoundError) as e:
                # (its request channel is gone: the manager ended, or the dictionary was destroyed)
                raise DDictManagerDied(f"{self._manager_name(i)} is not running (its channel: {e})") from None
            self._mch[i] = ch
            cid = 0
            self._cid[i] = 0
            st, payload = self._exchange(i, ch, wire.CONNECT, 0, b"", b"b", self._reply.descriptor.encode(), raw=True)
            if st != wire.OK:
                raise DDictError(f"{self._manager_name(i)} refused the connection: {bytes(payload).decode()}")
            self._cid[i] = int.from_bytes(payload[:4], "little")
        return ch

    def _exchange(self, i, ch, op, flags, kb, vtag, vbody, raw=False, timeout=_MISSING):
        """One request and its reply (the lock held)."""
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        tmo = self._timeout if timeout is _MISSING else timeout
        deadline = None if tmo is None else time.monotonic() + tmo
        side = None
        if raw:   # connect: the value is the descriptor, untagged
            msg = wire.REQ.pack(op, flags, wire.VERSION, self._cid.get(i, 0), seq, self._chkpt, 0) + vbody
        elif vtag and memoryview(vbody).nbytes > wire.CHUNK_AT:
            body = memoryview(vbody)
            if body.ndim != 1 or body.itemsize != 1:
                body = body.cast("B") if body.c_contiguous else memoryview(body.tobytes())
            side = _core.Channel.create(self._rt, capacity=wire.WINDOW, block_size=0)
            n = wire.chunk_count(body.nbytes)
            head = wire.CHUNK_HEAD.pack(body.nbytes, n) + side.descriptor.encode()
            msg = wire.request(op, flags | wire.CHUNKED, self._cid[i], seq, self._chkpt, kb, vtag, head)
        else:
            msg = wire.request(op, flags, self._cid[i], seq, self._chkpt, kb, vtag, vbody)
        if side is not None:
            try:
                self._send_msg(i, ch, msg, deadline)
                for j in range(n):
                    piece = body[j * wire.CHUNK:(j + 1) * wire.CHUNK]
                    while True:
                        try:
                            side.send(piece, SLICE)
                            break
                        except _Timeout:
                            self._check(i, deadline, "it does not take the pieces of a large value")
                return self._wait_reply(i, seq, deadline)
            finally:
                side.destroy()
        self._send_msg(i, ch, msg, deadline)
        return self._wait_reply(i, seq, deadline)

    def _send_msg(self, i, ch, msg, deadline) -> None:
        try:
            self._send_on(i, ch, msg, deadline)
        except _core.DragonConnectionError as e:
            # (a manager that ended destroyed its request channel)
            raise DDictManagerDied(f"{self._manager_name(i)} is not running (its channel: {e})") from None

    def _send_on(self, i, ch, msg, deadline) -> None:
        if len(msg) > large.LARGE:
            large.send(ch, msg, None)
        elif ch.is_local:
            while True:
                try:
                    ch.send(msg, SLICE)
                    break
                except _Timeout:
                    self._check(i, deadline, "its request channel stays full")
        else:
            ch.send(msg, None)

    def _wait_reply(self, i, seq, deadline):
        recv = self._reply.recv
        item = self._poll_item
        while True:
            try:
                if item is not None:
                    # Wait in poll (a short spin, then the futex) and take the
                    # reply with a try-once: a blocked recv spins with
                    # sched_yield first, and many clients yielding starve the
                    # managers they wait for on a machine with few cpus.
                    if not _poll(item, SLICE)[0]:
                        raise _Timeout("no reply yet")
                    rep = recv(0)
                else:
                    rep = recv(SLICE)
            except _Timeout:
                self._check(i, deadline, "no reply")
                continue
            if large.is_record(rep):
                rep = large.fetch(rep)
                if rep is None:
                    raise DDictManagerDied(f"{self._manager_name(i)} died while sending a reply")
            if len(rep) < wire.REP.size:
                continue
            status, _f, _v, rseq = wire.REP.unpack_from(rep, 0)
            if rseq != seq:
                if _f & wire.CHUNKED:
                    self._recv_parts(i, memoryview(rep)[wire.REP.size:], deadline, drop=True)
                continue  # the late reply of a request that timed out
            payload = memoryview(rep)[wire.REP.size:]
            if _f & wire.CHUNKED:
                payload = self._recv_parts(i, payload, deadline)
            return status, payload

    def _recv_parts(self, i, head, deadline, drop=False):
        """A value sent in pieces: tag and pieces joined (one copy)."""
        tag = bytes(head[:1])
        size, n = wire.CHUNK_HEAD.unpack_from(head, 1)
        side = _core.Channel.attach(self._rt, bytes(head[1 + wire.CHUNK_HEAD.size:]).decode())
        parts = []
        for _ in range(n):
            while True:
                try:
                    parts.append(side.recv(SLICE))
                    break
                except _Timeout:
                    self._check(i, deadline, "the pieces of a large value stopped coming")
        return None if drop else wire.Joined(tag, b"".join(parts))

    def _check(self, i, deadline, what) -> None:
        if not self._alive(i):
            raise DDictManagerDied(f"{self._manager_name(i)} is not running ({what})")
        if deadline is not None and time.monotonic() > deadline:
            raise DDictTimeout(f"{self._manager_name(i)}: {what} within {self._timeout} s")

    def _call(self, i, op, flags=0, kb=b"", vtag=b"", vbody=b"", timeout=_MISSING):
        with self._lock:
            self._ensure()
            ch = self._channel(i)
            status, payload = self._exchange(i, ch, op, flags, kb, vtag, vbody, timeout=timeout)
        if status in (wire.OK, wire.NOT_FOUND):
            return status, payload
        text = bytes(payload).decode(errors="replace")
        if status == wire.FULL:
            raise DDictFull(f"DDict {self._meta['name']}: {text}")
        if status == wire.RETIRED:
            raise DDictCheckpointSync(f"DDict {self._meta['name']}: {text}")
        raise DDictError(f"DDict {self._meta['name']}: {self._manager_name(i)}: {text}")

    def _all(self) -> list[int]:
        return [self._only] if self._only is not None else list(range(len(self._meta["managers"])))

    def _of(self, kb: bytes) -> int:
        if self._only is not None:
            return self._only
        return wire.hash_key(kb, len(self._meta["managers"]))

    def _writable(self) -> None:
        if self._read_only:
            raise DDictError(f"DDict {self._meta['name']}: this client is read-only")

    # ---- the mapping --------------------------------------------------------------

    def _put(self, key, value, flags) -> None:
        self._writable()
        kb = wire.key_bytes(key)
        vtag, vbody = wire.value_parts(value)   # pickling raises here, in the caller
        self._call(self._of(kb), wire.PUT, flags, kb, vtag, vbody)

    def __setitem__(self, key, value) -> None:
        self._put(key, value, 0)

    def pput(self, key, value) -> None:
        """A put that persists: the key is carried into later checkpoints."""
        self._put(key, value, wire.PERSIST)

    def __getitem__(self, key):
        kb = wire.key_bytes(key)
        i = self._of(kb)
        v = self._from_mirror(i, kb)
        if v is not None:
            if v is False:
                raise DDictKeyError(key)
            return wire.value_object(v)
        status, payload = self._call(i, wire.GET, 0, kb)
        if status == wire.NOT_FOUND:
            raise DDictKeyError(key)
        return wire.value_object(payload)

    def get(self, key, default=None):
        kb = wire.key_bytes(key)
        i = self._of(kb)
        v = self._from_mirror(i, kb)
        if v is not None:
            return default if v is False else wire.value_object(v)
        # a get with a default never waits for the key (flag PERSIST on a get: "do not wait")
        status, payload = self._call(i, wire.GET, wire.PERSIST, kb)
        if status == wire.NOT_FOUND:
            return default
        return wire.value_object(payload)

    def pop(self, key, default=_MISSING):
        self._writable()
        kb = wire.key_bytes(key)
        status, payload = self._call(self._of(kb), wire.POP, 0, kb)
        if status == wire.NOT_FOUND:
            if default is _MISSING:
                raise DDictKeyError(key)
            return default
        return wire.value_object(payload)

    def __delitem__(self, key) -> None:
        self._writable()
        kb = wire.key_bytes(key)
        status, _ = self._call(self._of(kb), wire.DEL, 0, kb)
        if status == wire.NOT_FOUND:
            raise DDictKeyError(key)

    def __contains__(self, key) -> bool:
        kb = wire.key_bytes(key)
        i = self._of(kb)
        v = self._from_mirror(i, kb)
        if v is not None:
            return v is not False
        status, _ = self._call(i, wire.CONTAINS, 0, kb)
        return status == wire.OK

    def __len__(self) -> int:
        return sum(int.from_bytes(self._call(i, wire.LEN)[1][:8], "little") for i in self._all())

    def _keys_of(self, managers) -> list:
        flags = wire.BROADCAST if self._only is not None else 0
        out = []
        for i in managers:
            out += [wire.key_object(k) for k in wire.unpack_list(self._call(i, wire.KEYS, flags)[1])]
        return out

    def keys(self) -> list:
        """Every key (a list, as DragonHPC's)."""
        return self._keys_of(self._all())

    def __iter__(self):
        return iter(self.keys())

    def items(self) -> list:
        flags = wire.BROADCAST if self._only is not None else 0
        out = []
        for i in self._all():
            flat = wire.unpack_list(self._call(i, wire.ITEMS, flags)[1])
            out += [(wire.key_object(flat[j]), wire.value_object(flat[j + 1])) for j in range(0, len(flat), 2)]
        return out

    def values(self) -> list:
        return [v for _, v in self.items()]

    def clear(self) -> None:
        self._writable()
        for i in self._all():
            self._call(i, wire.CLEAR)

    def update(self, other=(), **kw) -> None:
        items = other.items() if hasattr(other, "items") else other
        for k, v in items:
            self[k] = v
        for k, v in kw.items():
            self[k] = v

    def copy(self) -> dict:
        """The contents as a plain dict."""
        return dict(self.items())

    def setdefault(self, key, default=None):
        v = self.get(key, _MISSING)
        if v is _MISSING:
            self[key] = default
            return default
        return v

    # ---- beyond a dict ------------------------------------------------------------

    def bput(self, key, value) -> None:
        """Writes the value to every manager (read back with bget from the nearest)."""
        self._writable()
        kb = wire.key_bytes(key)
        vtag, vbody = wire.value_parts(value)
        for i in range(len(self._meta["managers"])):
            self._call(i, wire.PUT, wire.BROADCAST, kb, vtag, vbody)

    def bget(self, key):
        """A value written with bput, from a manager on this node when there is one."""
        kb = wire.key_bytes(key)
        with self._lock:
            self._ensure()
        local = [i for i, m in enumerate(self._meta["managers"]) if m["node"] == self._my_node]
        i = local[wire.hash_key(kb, len(local))] if local else self._of(kb)
        status, payload = self._call(i, wire.GET, 0, kb)
        if status == wire.NOT_FOUND:
            raise DDictKeyError(key)
        return wire.value_object(payload)

    def checkpoint(self) -> None:
        """Moves this client to the next checkpoint."""
        self._chkpt += 1

    def advance(self) -> None:
        self._chkpt += 1

    def rollback(self) -> None:
        """Moves this client back one checkpoint (not below 0)."""
        if self._chkpt > 0:
            self._chkpt -= 1

    @property
    def current_checkpoint_id(self) -> int:
        return self._chkpt

    @property
    def checkpoint_id(self) -> int:
        return self._chkpt

    def freeze(self) -> None:
        """Makes the dictionary read-only (every client) until unfreeze()."""
        for i in self._all():
            self._call(i, wire.FREEZE, 0, b"", b"b", b"\x01")

    def unfreeze(self) -> None:
        for i in self._all():
            self._call(i, wire.FREEZE, 0, b"", b"b", b"\x00")

    @property
    def is_frozen(self) -> bool:
        return all(s["frozen"] for s in self.stats)

    def manager(self, i: int) -> "DDict":
        """A view of manager i's shard alone: reads and writes go there,
        whatever the key's hash."""
        n = len(self._meta["managers"])
        if not 0 <= int(i) < n:
            raise IndexError(f"DDict {self._meta['name']}: manager {i} of {n}")
        v = DDict(_meta=self._meta, read_only=self._read_only)
        v._only = int(i)
        v._chkpt = self._chkpt
        v._timeout = self._timeout
        return v

    @property
    def local_managers(self) -> list[int]:
        with self._lock:
            self._ensure()
        return [i for i, m in enumerate(self._meta["managers"]) if m["node"] == self._my_node]

    def local_keys(self) -> list:
        """The keys held by the managers on this process's node."""
        return self._keys_of(self.local_managers)

    def local_len(self) -> int:
        return sum(int.from_bytes(self._call(i, wire.LEN)[1][:8], "little") for i in self.local_managers)

    @property
    def stats(self) -> list[dict]:
        """Each manager's numbers (keys, bytes used and capacity, checkpoints kept, ...)."""
        return [json.loads(bytes(self._call(i, wire.STATS)[1])) for i in self._all()]

    @property
    def num_managers(self) -> int:
        return len(self._meta["managers"])

    @property
    def name(self) -> str:
        return self._meta["name"]

    # ---- ending ---------------------------------------------------------------------

    def detach(self) -> None:
        """This client lets go of the managers (the dictionary lives on)."""
        with self._lock:
            if self._pid != os.getpid():
                self._reset_client()
                return
            if self._reply_fin is not None:
                self._reply_fin()
            self._reset_client()

    def destroy(self) -> None:
        """Stops every manager and frees the dictionary's memory. Other
        clients' operations then raise."""
        errors = []
        for i in range(len(self._meta["managers"])):
            try:
                self._call(i, wire.DESTROY, timeout=10.0)
            except DDictManagerDied:
                pass
            except DDictError as e:
                errors.append(str(e))
        self.detach()
        if self._pg is not None:
            try:
                self._pg.join(10.0)
            except Exception:
                pass
            _finalize_owner(self._pg, None)
            self._pg = None
        if errors:
            raise DDictError("; ".join(errors))

    def __enter__(self) -> "DDict":
        return self

    def __exit__(self, *exc) -> None:
        if self._pg is not None:
            self.destroy()
        else:
            self.detach()

    def __repr__(self) -> str:
        m = self._meta
        return (f"DDict({m['name']!r}, managers={len(m['managers'])}, nodes={m['nodes']}, "
                f"checkpoint={self._chkpt})")


def _release_client(reply, mch, cid) -> None:
    """Says goodbye to the managers and frees the reply channel."""
    for i, ch in list(mch.items()):
        c = cid.get(i, 0)
        if not c:
            continue
        try:
            ch.send(wire.REQ.pack(wire.DISCONNECT, 0, wire.VERSION, c, 0, 0, 0), 0 if ch.is_local else None)
        except Exception:
            pass
    try:
        reply.destroy()
    except Exception:
        pass


def _attach_view(serialized, chkpt, only, read_only):
    d = DDict.attach(serialized)
    d._chkpt = chkpt
    d._only = only
    d._read_only = read_only
    return d
